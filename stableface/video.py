"""Frame sources: video files, images, image folders (``--sequence``), camera indices, URLs.

Every source yields ``Frame`` objects (BGR uint8) with increasing timestamps. Live sources
(cameras, streams) are read by a background thread that keeps only the newest frame, so a
slow consumer never works through a growing backlog: stale frames are dropped and counted.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# FFmpeg inside OpenCV prints to stderr on its own (e.g. when a stream ends); our errors say
# what went wrong in one line instead. Users can still ask for FFmpeg's logs by setting this.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np

from stableface.types import Frame

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif"}


class SourceError(Exception):
    """A source cannot be opened or read."""


@dataclass(frozen=True)
class SourceInfo:
    name: str  # as given by the user
    stem: str  # for output file names
    width: int
    height: int
    fps: float
    frame_count: int | None  # None when unknown (live, streams)
    live: bool


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any OpenCV image (grey, 16-bit, float, BGRA) -> (H, W, 3) uint8 BGR."""
    img = image
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        scale = 255.0 if img.size and float(np.nanmax(img)) <= 1.0 else 1.0
        img = np.clip(np.nan_to_num(img) * scale, 0, 255).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 1:
        img = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(img)


def read_image(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise SourceError(f"{path}: not a readable image")
    return to_bgr8(img)


class Source:
    info: SourceInfo
    dropped: int = 0

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageSource(Source):
    def __init__(self, path: Path) -> None:
        self.image = read_image(path)
        h, w = self.image.shape[:2]
        self.info = SourceInfo(str(path), path.stem, w, h, 0.0, 1, False)

    def __iter__(self) -> Iterator[Frame]:
        yield Frame(self.image, 0, 0.0)


class SequenceSource(Source):
    """The images of a folder, in name order, as the frames of one video."""

    def __init__(self, folder: Path, fps: float = 25.0) -> None:
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not self.files:
            raise SourceError(f"{folder}: no images in this folder")
        first = read_image(self.files[0])
        h, w = first.shape[:2]
        self.info = SourceInfo(str(folder), folder.name or "sequence", w, h, fps, len(self.files), False)

    def __iter__(self) -> Iterator[Frame]:
        for i, f in enumerate(self.files):
            yield Frame(read_image(f), i, i * 1000.0 / self.info.fps)


class VideoSource(Source):
    """A video file read frame by frame; timestamps from the frame index and the file's fps."""

    def __init__(self, path: Path) -> None:
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise SourceError(f"{path}: not a readable video")
        ok, first = self.cap.read()
        if not ok or first is None:
            self.cap.release()
            raise SourceError(f"{path}: video has no readable frames")
        self.first = first
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and np.isfinite(fps) and 0 < fps < 1000 else 25.0
        n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        h, w = first.shape[:2]
        self.info = SourceInfo(str(path), path.stem, w, h, float(fps), n if n > 0 else None, False)

    def __iter__(self) -> Iterator[Frame]:
        img, i = self.first, 0
        while img is not None:
            yield Frame(to_bgr8(img), i, i * 1000.0 / self.info.fps)
            ok, img = self.cap.read()
            img = img if ok else None
            i += 1

    def close(self) -> None:
        self.cap.release()


class LiveSource(Source):
    """A camera or stream: a reader thread keeps the newest frame only (no backlog)."""

    def __init__(self, spec: str | int, name: str, stall_timeout_s: float = 5.0, reconnect: int = 0,
                 reconnect_delay_s: float = 1.0) -> None:
        self.spec, self.stall_timeout_s = spec, stall_timeout_s
        self.reconnects_left, self.reconnect_delay_s, self.reconnected = reconnect, reconnect_delay_s, 0
        self.cap = cv2.VideoCapture(spec)
        if not self.cap.isOpened():
            self.cap.release()
            if isinstance(spec, int):
                raise SourceError(f"camera {spec}: cannot open (no such camera, or the stream refused the connection)")
            raise SourceError(f"{spec}: {why_stream_failed(spec)}")
        ok, first = self.cap.read()
        if not ok or first is None:
            self.cap.release()
            raise SourceError(f"{name}: opened, but no frame arrived")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else 30.0
        h, w = first.shape[:2]
        stem = f"camera{spec}" if isinstance(spec, int) else (Path(str(spec).split("?")[0]).stem or "stream")
        self.info = SourceInfo(name, stem, w, h, fps, None, True)
        self._lock = threading.Condition()
        self._latest: np.ndarray | None = first
        self._seq, self._ended, self._stop = 1, False, False
        self._t0 = time.monotonic()
        self._stamp = 0.0
        self.dropped = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _reopen(self) -> bool:
        """After the stream ended or broke: try again, ``reconnect`` times at most."""
        while self.reconnects_left > 0 and not self._stop:
            self.reconnects_left -= 1
            time.sleep(self.reconnect_delay_s)
            self.cap.release()
            self.cap = cv2.VideoCapture(self.spec)
            if self.cap.isOpened():
                self.reconnected += 1
                return True
        return False

    def _read(self) -> None:
        while not self._stop:
            ok, img = self.cap.read()
            if (not ok or img is None) and self._reopen():
                continue
            with self._lock:
                if not ok or img is None:
                    self._ended = True
                    self._lock.notify_all()
                    return
                if self._latest is not None:
                    self.dropped += 1  # the consumer never saw the previous frame
                self._latest, self._stamp = img, (time.monotonic() - self._t0) * 1000.0
                self._seq += 1
                self._lock.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            with self._lock:
                if self._latest is None and not self._ended:
                    # a stall longer than the timeout ends the run, unless a reconnect may still come
                    timeout = self.stall_timeout_s + (self.reconnect_delay_s + self.stall_timeout_s) * self.reconnects_left
                    self._lock.wait(timeout=timeout)
                if self._latest is None:
                    return  # ended, or stalled longer than the timeout
                img, stamp = self._latest, self._stamp
                self._latest = None
            yield Frame(to_bgr8(img), index, stamp)
            index += 1

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=1.0)
        self.cap.release()


def is_url(spec: str) -> bool:
    return "://" in spec


DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935}


def why_stream_failed(url: str, timeout_s: float = 3.0) -> str:
    """Why OpenCV could not open ``url``: the server cannot be reached, or it answers with something
    that is not a video. (A TCP connection to the host says which.)"""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    try:
        port = u.port or DEFAULT_PORTS.get(u.scheme.lower())
    except ValueError:
        return "cannot open (not a valid URL: bad port)"
    if not u.hostname or port is None:
        return "cannot open (not a readable video stream)"
    try:
        socket.create_connection((u.hostname, port), timeout=timeout_s).close()
    except socket.gaierror:
        return f"cannot open (unknown host {u.hostname})"
    except OSError as exc:
        return f"cannot open (cannot connect to {u.hostname}:{port}: {exc.strerror or exc or 'timed out'})"
    return "not a readable video (the server answered, but not with a video stream)"


def expand(specs: list[str], sequence: bool = False) -> list[str]:
    """Folders become their media files (sorted) unless ``sequence``; other specs pass through."""
    out: list[str] = []
    for s in specs:
        p = Path(s)
        if not is_url(s) and not s.isdigit() and p.is_dir() and not sequence:
            media = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
            if not media:
                raise SourceError(f"{p}: no images or videos in this folder")
            out.extend(media)
        else:
            out.append(s)
    return out


def open_source(spec: str, sequence: bool = False, reconnect: int = 0) -> Source:
    """Open one source: a camera index, a URL, an image, a video, or a folder of frames.

    ``reconnect``: for cameras and streams, how many times to reopen after the stream drops.
    """
    if spec.isdigit():
        return LiveSource(int(spec), f"camera {spec}", reconnect=reconnect)
    if is_url(spec):
        return LiveSource(spec, spec, reconnect=reconnect)
    p = Path(spec)
    try:
        p.stat()
    except FileNotFoundError:
        raise SourceError(f"{spec}: " + ("broken symbolic link (its target does not exist)" if p.is_symlink()
                                         else "no such file or folder")) from None
    except OSError as exc:
        what = "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot open ({exc.strerror or exc})"
        raise SourceError(f"{spec}: {what}") from None
    if p.is_dir():
        return SequenceSource(p)
    if p.suffix.lower() in IMAGE_EXTS:
        return ImageSource(p)
    return VideoSource(p)
