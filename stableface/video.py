"""Frame sources: video files, images, image folders (``--sequence``), camera indices, URLs.

Every source yields ``Frame`` objects (BGR uint8) with increasing timestamps.

* A video file, or a URL to one (``http://host/clip.mp4``: a resource of known length), is read
  like a file: every frame the decoder can produce, numbered by its position in the container and
  timed by its presentation time (so variable frame rate is right). Frames that cannot be decoded
  (corrupt packets, a truncated file) are skipped and their numbers listed in
  ``Source.unreadable``; the numbers of the others do not move. PyAV decodes when it is installed
  (it gets past corrupt packets); OpenCV otherwise.
* Live sources (cameras, and streams with no known length: MJPEG over HTTP, RTSP) are read by a
  background thread that keeps only the newest frame, so a slow consumer never works through a
  growing backlog: stale frames are dropped and counted (``Source.dropped``). Frames keep the
  number they had in the stream and the wall-clock time they arrived.

Network sources are opened and read in a thread that the caller waits for in short steps, so
Ctrl-C and SIGTERM are honoured at once, however long the network takes.
"""

from __future__ import annotations

import errno
import heapq
import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple, TypeVar

# FFmpeg inside OpenCV prints to stderr on its own (e.g. when a stream ends); our errors say
# what went wrong in one line instead. Users can still ask for FFmpeg's logs by setting this.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

MAX_PIXELS = 100_000_000  # larger images and videos are refused before decoding (a 40000x40000 PNG is 1.5 MB)
# OpenCV's own cap, for image formats whose header we do not read
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from stableface.types import Frame  # noqa: E402

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif"}

NET_OPEN_TIMEOUT_S = 10.0  # a network source that does not answer within this is 'cannot open'
NET_READ_TIMEOUT_S = 10.0  # ... or, once open, that sends nothing for this long has stalled

T = TypeVar("T")


class SourceError(Exception):
    """A source cannot be opened or read."""


@dataclass(frozen=True)
class SourceInfo:
    name: str  # as given by the user
    stem: str  # for output file names
    width: int
    height: int
    fps: float
    frame_count: int | None  # frames the container announces; None when unknown (live, streams, some containers)
    live: bool


def _av():
    """PyAV, or None when it is not installed (OpenCV decodes then)."""
    try:
        import av
    except ImportError:
        return None
    return av


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


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, GIF, BMP, WebP or PNM image; None for others."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:2] == b"BM":
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind = data[12:16]
            if kind == b"VP8X":
                return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
            if kind == b"VP8L":
                b = int.from_bytes(data[21:25], "little")
                return 1 + (b & 0x3FFF), 1 + ((b >> 14) & 0x3FFF)
            if kind == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
        if data[:1] == b"P" and data[1:2] in b"123456":
            fields = data[2:200].split(b"#")[0].split()
            return int(fields[0]), int(fields[1])
        if data[:2] == b"\xff\xd8":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    return None
                marker = data[i + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                    i += 2
                    continue
                length = struct.unpack(">H", data[i + 2:i + 4])[0]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">HH", data[i + 5:i + 9])
                    return w, h
                i += 2 + length
    except (struct.error, ValueError, IndexError):
        return None
    return None


def _check_pixels(name: str, w: int, h: int, what: str = "image") -> None:
    if w * h > MAX_PIXELS:
        raise SourceError(f"{name}: {what} too large ({w}x{h} pixels; stableface reads at most "
                          f"{MAX_PIXELS // 1_000_000} megapixels)")


def read_image(path: Path) -> np.ndarray:
    """An image file as BGR uint8; SourceError for what is not a readable image, or too large a one
    (its header is read first: nothing over ``MAX_PIXELS`` is decoded)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    size = image_size(data[:65536].tobytes())
    if size is not None:
        _check_pixels(str(path), *size)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as exc:  # OpenCV's own pixel cap, or a decoder that gave up
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else "OpenCV error"
        raise SourceError(f"{path}: not a readable image ({detail})") from None
    if img is None:
        raise SourceError(f"{path}: not a readable image")
    return to_bgr8(img)


def interruptible(fn: Callable[[], T], poll_s: float = 0.05) -> T:
    """``fn()`` in a daemon thread, the caller waiting in short steps: a network open or read can
    block inside FFmpeg for its whole timeout, and a signal must not wait for it. If the wait is
    interrupted the thread is left behind (it ends with its timeout, or with the process)."""
    box: dict = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name="stableface-open").start()
    while not done.wait(poll_s):
        pass
    if "error" in box:
        raise box["error"]
    return box["value"]


class _Decoded(NamedTuple):
    image: np.ndarray  # as decoded (BGR, but maybe grey or 16-bit from OpenCV)
    index: int  # position in the container (or in the stream, for live sources)
    timestamp_ms: float  # presentation time, from the start of the stream


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def cv_name(path: str) -> tuple[str, str | None]:
    """A name OpenCV can be given for ``path``, and a folder to remove afterwards (or None).

    OpenCV's VideoCapture and VideoWriter crash (SIGSEGV) on a name that is not valid UTF-8
    (``v\\xff.mp4``): such a path gets a symbolic link with a plain name in a new temporary folder.
    The link may point to a file that does not exist yet (a writer creates it through the link)."""
    if _utf8(path):
        return path, None
    folder = tempfile.mkdtemp(prefix="stableface-")
    ext = os.path.splitext(path)[1].encode("ascii", "replace").decode().replace("?", "_")
    alias = os.path.join(folder, "media" + ext)
    os.symlink(os.path.abspath(path), alias)
    return alias, folder


class _AvDecoder:
    """One video stream decoded by PyAV: every frame the decoder can produce, corrupt packets skipped.

    Frame numbers come from the packets' presentation times: a frame's number is how many packets
    present before it, so a frame lost to corruption leaves its number out (``unreadable``), and
    so do the frames a truncated file announces but no longer holds.
    """

    REORDER = 2  # decoded frames held back, so that a decoder's slightly out-of-order output after errors is sorted
    MAX_DEMUX_ERRORS = 3  # consecutive read errors before the rest of the file counts as unreadable

    def __init__(self, target: str, name: str, url: bool = False) -> None:
        av = _av()
        assert av is not None
        self.av, self.name, self.url = av, name, url
        try:
            self.container = av.open(target if url else "file:" + target, "r",
                                     timeout=(NET_OPEN_TIMEOUT_S, NET_READ_TIMEOUT_S) if url else None)
        except (av.FFmpegError, OSError, UnicodeError) as exc:
            if url and isinstance(exc, (av.error.ExitError, av.error.TimeoutError)):
                raise SourceError(f"{name}: cannot open (no answer within {NET_OPEN_TIMEOUT_S:g} s)") from None
            raise SourceError(f"{name}: {why_stream_failed(name) if url else 'not a readable video'}") from None
        try:
            if not self.container.streams.video:
                raise SourceError(f"{name}: not a readable video (no video stream)")
            s = self.stream = self.container.streams.video[0]
            _check_pixels(name, s.codec_context.width, s.codec_context.height, "video")
            rate = s.average_rate or s.guessed_rate or s.base_rate
            self.fps = float(rate) if rate and 0 < float(rate) < 1000 else 25.0
            self.frame_count = int(s.frames) if s.frames and s.frames > 0 else None
            # a URL is a file when it has a length (http://host/clip.mp4); else a live stream (MJPEG, RTSP)
            self.finite = not url or bool(self.frame_count or s.duration or self.container.duration)
            self.reorder = self.REORDER if self.finite else 0  # no latency added to a live stream
            if self.finite:
                s.thread_type = "AUTO"  # frame threads: faster, and the frames come out in the same order
        except BaseException:
            self.container.close()
            raise
        self.unreadable: list[int] = []
        self.stop_reason: str | None = None

    def _packets(self) -> Iterator:
        """The stream's packets; a read error is retried (FFmpeg resyncs), several in a row end it."""
        av, errors = self.av, 0
        demux = self.container.demux(self.stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.error.EOFError:
                return
            except (av.FFmpegError, OSError) as exc:
                errors += 1
                if errors >= self.MAX_DEMUX_ERRORS or isinstance(exc, (av.error.ExitError, av.error.TimeoutError)):
                    self.stop_reason = f"reading stopped: {getattr(exc, 'strerror', None) or exc}"
                    return
                demux = self.container.demux(self.stream)
                continue
            errors = 0
            yield packet

    def frames(self) -> Iterator[_Decoded]:
        av, s = self.av, self.stream
        tb = s.time_base or 0  # a Fraction: exact times (1/25 s is 40.0 ms, not 40.000000000000001)
        start = s.start_time
        pending: list[int] = []  # pts of packets demuxed, not yet matched by a decoded frame
        held: list = []  # (pts, seq, frame): the reorder window
        seq = demuxed = 0
        by_pts = tb > 0
        state = {"next": 0, "pts": None, "ms": None}

        def place(f) -> _Decoded | None:
            pts = f.pts if by_pts else None
            if pts is not None:
                if state["pts"] is not None and pts <= state["pts"]:
                    return None  # later than the window allows, or a duplicate: its number was given already
                while pending and pending[0] < pts:  # packets presented before this frame never came out
                    heapq.heappop(pending)
                    self.unreadable.append(state["next"])
                    state["next"] += 1
                if pending and pending[0] == pts:
                    heapq.heappop(pending)
                ms = float((pts - (start if start is not None else 0)) * tb * 1000)
            else:
                ms = state["ms"] + 1000.0 / self.fps if state["ms"] is not None else 0.0
            if state["ms"] is not None and ms <= state["ms"]:
                ms = state["ms"] + 1e-3  # timestamps must increase (a broken container can repeat one)
            index = state["next"]
            state.update(next=index + 1, pts=pts if pts is not None else state["pts"], ms=ms)
            return _Decoded(f.to_ndarray(format="bgr24"), index, ms)

        for packet in self._packets():
            if packet.size:
                demuxed += 1
                if packet.pts is None:
                    by_pts = False  # numbers by decoding order from here (no presentation times to place frames)
                elif by_pts and not packet.is_discard:
                    if start is None:
                        start = packet.pts
                    heapq.heappush(pending, packet.pts)
            try:
                decoded = packet.decode()
            except (av.FFmpegError, ValueError):
                if not by_pts:  # without presentation times, a packet that does not decode is a frame lost
                    self.unreadable.append(state["next"])
                    state["next"] += 1
                continue
            for f in decoded:
                if f.pts is None or not by_pts:
                    while held:
                        if (out := place(heapq.heappop(held)[2])) is not None:
                            yield out
                    if (out := place(f)) is not None:
                        yield out
                    continue
                heapq.heappush(held, (f.pts, seq, f))
                seq += 1
                while len(held) > self.reorder:
                    if (out := place(heapq.heappop(held)[2])) is not None:
                        yield out
        while held:
            if (out := place(heapq.heappop(held)[2])) is not None:
                yield out
        lost = len(pending) + max(0, (self.frame_count or 0) - demuxed)  # never decoded; announced, never read
        self.unreadable.extend(range(state["next"], state["next"] + lost))

    def close(self) -> None:
        self.container.close()


class _CvDecoder:
    """A video read by OpenCV (without PyAV, and for cameras): presentation times from
    ``CAP_PROP_POS_MSEC``; frames the container announces but that do not decode are ``unreadable``
    (OpenCV stops at the first frame it cannot decode, and cannot tell which frames those are)."""

    def __init__(self, spec: str | int, name: str, url: bool = False) -> None:
        self.name, self.url, self.camera = name, url, isinstance(spec, int)
        self._tmp: str | None = None
        target: str | int = spec
        if isinstance(spec, str) and not url:
            target, self._tmp = cv_name(spec)
        if url:
            ms = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(NET_OPEN_TIMEOUT_S * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(NET_READ_TIMEOUT_S * 1000)]
            self.cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, ms)
        else:
            self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            self.close()
            if self.camera:
                raise SourceError(f"camera {spec}: cannot open (no such camera, or the stream refused the connection)")
            raise SourceError(f"{name}: {why_stream_failed(name) if url else 'not a readable video'}")
        w, h = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        _check_pixels(name, w, h, "video")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else (30.0 if self.camera else 25.0)
        n = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(n) if np.isfinite(n) and 0 < n < 1e9 and not self.camera else None
        self.finite = not self.camera and (not url or self.frame_count is not None)
        self.unreadable: list[int] = []
        self.stop_reason: str | None = None

    def frames(self) -> Iterator[_Decoded]:
        index, last = 0, None
        while True:
            ok, img = self.cap.read()
            if not ok or img is None:
                break
            ms = round(self.cap.get(cv2.CAP_PROP_POS_MSEC), 6)  # (OpenCV's own float arithmetic: 1400.0000000000002)
            if not np.isfinite(ms) or (last is not None and ms <= last) or (last is None and ms < 0):
                ms = index * 1000.0 / self.fps if last is None or index * 1000.0 / self.fps > last else last + 1e-3
            yield _Decoded(img, index, float(ms))
            last, index = float(ms), index + 1
        if self.finite and self.frame_count and index < self.frame_count:
            self.unreadable.extend(range(index, self.frame_count))

    def close(self) -> None:
        self.cap.release()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _open_decoder(spec: str, name: str, url: bool):
    return _AvDecoder(spec, name, url) if _av() is not None else _CvDecoder(spec, name, url)


class _Pump:
    """An iterator run by a daemon thread; the consumer waits in short steps (signals reach it).

    ``newest``: keep only the newest item (live sources: what the consumer did not take in time is
    dropped and counted); else a bounded queue (nothing is dropped).
    """

    def __init__(self, items: Iterator, newest: bool, maxsize: int = 4) -> None:
        self.newest, self.maxsize = newest, maxsize
        self.dropped = 0
        self._cond = threading.Condition()
        self._items: deque = deque()
        self._done = self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(items,), daemon=True, name="stableface-reader")
        self._thread.start()

    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                with self._cond:
                    if self.newest:
                        self.dropped += len(self._items)  # the consumer never saw those
                        self._items.clear()
                    while len(self._items) >= self.maxsize and not self._stop:
                        self._cond.wait(0.1)
                    if self._stop:
                        return
                    self._items.append(item)
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the consumer
            self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def get(self, timeout_s: float | None = None):
        """The next item; ``StopIteration`` at the end, ``TimeoutError`` after ``timeout_s`` without one."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._items and not self._done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError
                self._cond.wait(0.1 if left is None else min(0.1, left))
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            if self._error is not None:
                raise self._error
            raise StopIteration

    def stop(self, wait_s: float = 1.0) -> bool:
        """Ask the thread to stop; True when it has (its decoder may be closed then)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=wait_s)
        return not self._thread.is_alive()


class Source:
    info: SourceInfo
    dropped: int = 0  # live: stale frames skipped (never shown to the consumer)
    unreadable: list[int] | tuple = ()  # files: numbers of the frames that could not be decoded (empty until the end)
    stop_reason: str | None = None  # why the source ended early (decoding stopped, a stream ended or stalled)
    media_path: str | None = None  # a local video file (whose audio an overlay video can keep)

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    @property
    def incomplete(self) -> bool:
        """A finite source that did not give all its frames."""
        return not self.info.live and (bool(self.unreadable) or self.stop_reason is not None)

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
    """The images of a folder, in name order, as the frames of one video; an image that cannot be
    read is skipped and its number listed in ``unreadable``."""

    def __init__(self, folder: Path, fps: float = 25.0) -> None:
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not self.files:
            raise SourceError(f"{folder}: no images in this folder")
        self.unreadable = []
        self.first, errors = None, []
        for i, f in enumerate(self.files):
            try:
                self.first = (i, read_image(f))
                break
            except SourceError as exc:
                errors.append(str(exc))
        if self.first is None:
            raise SourceError(f"{folder}: no readable image in this folder ({errors[0]})")
        h, w = self.first[1].shape[:2]
        self.unreadable = list(range(self.first[0]))
        self.info = SourceInfo(str(folder), folder.name or "sequence", w, h, fps, len(self.files), False)

    def __iter__(self) -> Iterator[Frame]:
        start, img = self.first
        yield Frame(img, start, start * 1000.0 / self.info.fps)
        for i in range(start + 1, len(self.files)):
            try:
                img = read_image(self.files[i])
            except SourceError:
                self.unreadable.append(i)
                continue
            yield Frame(img, i, i * 1000.0 / self.info.fps)


class VideoSource(Source):
    """A finite video, a file or a URL to one: every frame the decoder can produce, in order,
    numbered and timed by the container; the numbers of frames that cannot be decoded are in
    ``unreadable`` once the source has been read to its end."""

    def __init__(self, spec: str | Path, name: str | None = None, url: bool = False, decoder=None) -> None:
        spec = str(spec)
        self.name, self.url = name or spec, url
        self.media_path = None if url else spec
        self.decoder = decoder if decoder is not None else _open_decoder(spec, self.name, url)
        self._frames = self.decoder.frames()
        self._pump = _Pump(self._frames, newest=False) if url else None
        try:
            first = self._next()
        except BaseException:
            self.close()
            raise
        if first is None:
            self.close()
            raise SourceError(f"{self.name}: video has no readable frames")
        self._first = first
        h, w = first.image.shape[:2]
        stem = Path(spec.split("?")[0]).stem if url else Path(spec).stem
        self.info = SourceInfo(self.name, stem or "stream", w, h, self.decoder.fps, self.decoder.frame_count, False)

    def _next(self) -> _Decoded | None:
        if self._pump is None:
            return next(self._frames, None)
        try:
            return self._pump.get()
        except StopIteration:
            return None

    @property
    def unreadable(self) -> list[int]:  # type: ignore[override]
        return self.decoder.unreadable

    @property
    def stop_reason(self) -> str | None:  # type: ignore[override]
        return self.decoder.stop_reason

    def __iter__(self) -> Iterator[Frame]:
        d = self._first
        while d is not None:
            yield Frame(to_bgr8(d.image), d.index, d.timestamp_ms)
            d = self._next()

    def close(self) -> None:
        if self._pump is not None and not self._pump.stop():
            return  # the reader is blocked in the network: leave its decoder to it
        self.decoder.close()


class LiveSource(Source):
    """A camera or stream: a reader thread keeps the newest frame only (no backlog).

    Frames keep their number in the stream (a dropped frame leaves its number out) and the
    wall-clock time at which they arrived, in ms since the source was opened.
    """

    def __init__(self, spec: str | int, name: str, stall_timeout_s: float = 5.0, reconnect: int = 0,
                 reconnect_delay_s: float = 1.0, decoder=None) -> None:
        self.spec, self.name, self.stall_timeout_s = spec, name, stall_timeout_s
        self.reconnects_left, self.reconnect_delay_s, self.reconnected = reconnect, reconnect_delay_s, 0
        self.decoder = decoder if decoder is not None else interruptible(self._open)
        self._t0 = time.monotonic()
        self._frames = self._read()
        try:
            first = interruptible(lambda: next(self._frames, None))
        except BaseException:
            self.decoder.close()
            raise
        if first is None:
            self.decoder.close()
            raise SourceError(f"{name}: opened, but no frame arrived")
        h, w = first[0].shape[:2]
        stem = f"camera{spec}" if isinstance(spec, int) else (Path(str(spec).split("?")[0]).stem or "stream")
        self.info = SourceInfo(name, stem, w, h, self.decoder.fps, None, True)
        self._first = first
        self._pump = _Pump(self._frames, newest=True, maxsize=1)
        self.stop_reason = None

    def _open(self):
        if isinstance(self.spec, int) or not is_url(self.spec):  # a camera index or device
            return _CvDecoder(self.spec, self.name)
        return _open_decoder(self.spec, self.name, url=True)

    def _read(self) -> Iterator[tuple[np.ndarray, int, float]]:
        """(image, number in the stream, arrival time in ms), across reconnects."""
        n = 0
        while True:
            for d in self.decoder.frames():
                yield d.image, n, (time.monotonic() - self._t0) * 1000.0
                n += 1
            if not self._reopen():
                return

    def _reopen(self) -> bool:
        """After the stream ended or broke: try again, ``reconnect`` times at most."""
        while self.reconnects_left > 0:
            self.reconnects_left -= 1
            time.sleep(self.reconnect_delay_s)
            self.decoder.close()
            try:
                self.decoder = self._open()
            except SourceError:
                continue
            self.reconnected += 1
            return True
        return False

    @property
    def dropped(self) -> int:  # type: ignore[override]
        return self._pump.dropped

    def __iter__(self) -> Iterator[Frame]:
        item = self._first
        while item is not None:
            img, index, stamp = item
            yield Frame(to_bgr8(img), index, stamp)
            # a stall longer than the timeout ends the run, unless a reconnect may still come
            timeout = self.stall_timeout_s + (self.reconnect_delay_s + self.stall_timeout_s) * self.reconnects_left
            try:
                item = self._pump.get(timeout)
            except StopIteration:
                self.stop_reason = "the stream ended"
                return
            except TimeoutError:
                self.stop_reason = f"no frame for {timeout:g} s"
                return

    def close(self) -> None:
        if self._pump.stop():
            self.decoder.close()


def is_url(spec: str) -> bool:
    return "://" in spec


DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935}


def why_stream_failed(url: str, timeout_s: float = 3.0) -> str:
    """Why a URL could not be opened: the server cannot be reached, or it answers with something
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


def _open_url(url: str, reconnect: int) -> Source:
    """A URL of known length is read like a file; one without (a live stream) newest frame first.

    A finite http(s) resource that the decoder cannot read in place (a server without range
    requests, with the index at the end of the file) is copied to a temporary file first."""
    try:
        decoder = interruptible(lambda: _open_decoder(url, url, url=True))
    except SourceError:
        local = interruptible(lambda: _download(url))
        if local is None:
            raise
        return _DownloadedSource(local, url)
    if decoder.finite:
        try:
            return VideoSource(url, url, url=True, decoder=decoder)
        except SourceError:
            local = interruptible(lambda: _download(url))
            if local is None:
                raise
            return _DownloadedSource(local, url)
    return LiveSource(url, url, reconnect=reconnect, decoder=decoder)


def _download(url: str, limit: int = 8 << 30) -> Path | None:
    """A finite http(s) resource (Content-Length up to ``limit``) copied to a temporary file; None if it is not one."""
    import urllib.request
    from urllib.parse import urlparse

    if not url.lower().startswith(("http://", "https://")):
        return None
    try:
        resp = urllib.request.urlopen(url, timeout=10)
    except (OSError, ValueError):
        return None
    with resp:
        length = resp.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) > limit:
            return None
        fd, tmp = tempfile.mkstemp(prefix="stableface-", suffix=Path(urlparse(url).path).suffix or ".mp4")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return Path(tmp)


class _DownloadedSource(VideoSource):
    """A finite URL read from its temporary copy (removed on close), named by the URL."""

    def __init__(self, local: Path, url: str) -> None:
        self._local = local
        try:
            super().__init__(str(local), url)
        except BaseException:
            local.unlink(missing_ok=True)
            raise
        self.info = replace(self.info, name=url, stem=Path(url.split("?")[0]).stem or "stream")

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._local.unlink(missing_ok=True)


def open_source(spec: str, sequence: bool = False, reconnect: int = 0) -> Source:
    """Open one source: a camera index, a URL, an image, a video, or a folder of frames.

    ``reconnect``: for cameras and streams, how many times to reopen after the stream drops.
    Named pipes and sockets are refused (reading one can block for ever); a character device
    (``/dev/video0``) is a camera.
    """
    if spec.isdigit():
        return LiveSource(int(spec), f"camera {spec}", reconnect=reconnect)
    if is_url(spec):
        return _open_url(spec, reconnect)
    p = Path(spec)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise SourceError(f"{spec}: " + ("broken symbolic link (its target does not exist)" if p.is_symlink()
                                         else "no such file or folder")) from None
    except OSError as exc:
        what = "symbolic link loop" if exc.errno == errno.ELOOP else f"cannot open ({exc.strerror or exc})"
        raise SourceError(f"{spec}: {what}") from None
    if stat.S_ISDIR(st.st_mode):
        return SequenceSource(p)
    if stat.S_ISCHR(st.st_mode):
        return LiveSource(spec, spec, reconnect=reconnect, decoder=interruptible(lambda: _CvDecoder(spec, spec)))
    if not stat.S_ISREG(st.st_mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) \
            else "not a regular file"
        raise SourceError(f"{spec}: {kind}: stableface reads files, folders, cameras and URLs")
    if not os.access(p, os.R_OK):
        raise SourceError(f"{spec}: cannot open (permission denied)")
    if p.suffix.lower() in IMAGE_EXTS:
        return ImageSource(p)
    return VideoSource(p)
