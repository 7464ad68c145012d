"""Result writers, one class per format, chosen by extension; all are context managers.

Every file output is atomic: it is written under a per-process partial name beside the final
one (``NAME.<pid>.partial``; videos keep their extension last, ``NAME.<pid>.partial.mp4``) and
renamed to ``NAME`` only when it is complete and closed without error. A file under the final
name is therefore always complete and valid.

* Leaving the ``with`` block normally, or by an interrupt (``KeyboardInterrupt``, ``SystemExit``
  or any other ``BaseException`` that is not an ``Exception``), closes the output: valid up to
  the last frame written.
* Leaving it by an error (any ``Exception``) aborts it: the partial is removed, and nothing
  stands under the final name. The one exception is :class:`OutputClosed` from a live source
  (a camera or stream has no end: its recordings are closed, as after Ctrl-C).

While a sink writes ``NAME`` it holds an exclusive lock on ``NAME.lock`` (``flock``; the file
holds the writer's pid and is removed on close), so two runs never write the same output at
once: the second gets a :class:`SinkError` naming the first one's pid.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from stableface import __version__
from stableface.draw import draw_result
from stableface.types import FrameResult
from stableface.video import SourceInfo

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: O_EXCL lock files instead
    fcntl = None

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class SinkError(Exception):
    """An output cannot be written."""


class OutputClosed(BrokenPipeError):
    """The reader of standard output went away (``stableface track -o - | head``).

    ``frames``: lines written before it did; ``live``: whether the source is a camera or stream.
    """

    def __init__(self, frames: int, live: bool) -> None:
        super().__init__(f"output pipe closed after {frames} frames")
        self.frames, self.live = frames, live


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def header(info: SourceInfo, scheme: str, stabilizer: str, lookahead: int = 0) -> dict:
    return {"stableface_version": __version__, "source": info.name, "width": info.width, "height": info.height,
            "fps": round(float(info.fps), 3), "landmark_scheme": scheme, "stabilizer": stabilizer,
            "lookahead": int(lookahead)}


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def partial_path(path: Path, keep_suffix: bool = False) -> Path:
    """``NAME.<pid>.partial`` beside ``path`` (``keep_suffix``: ``NAME.<pid>.partial.EXT``, for writers
    that choose the container from the extension)."""
    return path.with_name(f"{path.name}.{os.getpid()}.partial" + (path.suffix if keep_suffix else ""))


class OutputLock:
    """An exclusive, per-output lock between processes: ``flock`` on ``NAME.lock``, which holds the
    writer's pid. The kernel drops it when its process dies, so a stale lock file is simply taken over."""

    def __init__(self, path: Path) -> None:
        self.path, self.file = Path(path), lock_path(Path(path))
        self.fd: int | None = None
        while self.fd is None:
            try:
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT | (os.O_EXCL if fcntl is None else 0), 0o644)
            except FileExistsError:  # pragma: no cover - no flock: the file itself is the lock
                raise SinkError(f"{self.path}: being written by another stableface run "
                                f"(or a stale {self.file.name}: remove it if none is)") from None
            except OSError as exc:
                raise SinkError(f"{self.path}: cannot write ({_why(exc)})") from None
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                    os.close(fd)
                    raise SinkError(f"{self.path}: being written by another stableface run (pid {holder})") from None
                try:  # the holder may have removed the file between our open and our lock: retry on the new one
                    same = os.stat(self.file).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.file.unlink(missing_ok=True)  # while still holding it: a waiting run re-checks the inode
        finally:
            os.close(self.fd)
            self.fd = None


def holder_of(path: str | Path) -> str | None:
    """The pid (as text) of the run writing ``path`` now, or None."""
    file = lock_path(Path(path))
    if fcntl is None:  # pragma: no cover
        return "unknown" if file.exists() else None
    try:
        fd = os.open(file, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except OSError:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
    finally:
        os.close(fd)  # closing drops the probe's own lock


class Sink:
    needs_image = False

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the output: complete and valid up to the last frame written."""

    def abort(self) -> None:
        """Drop the output: nothing stands under its final name."""
        self.close()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        failed = exc_type is not None and issubclass(exc_type, Exception)
        if failed and not (isinstance(exc, OutputClosed) and exc.live):
            self.abort()
        else:
            self.close()


class _AtomicText(Sink):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = OutputLock(self.path)
        self.tmp = partial_path(self.path)
        try:
            self.fh: IO[str] | None = open(self.tmp, "w", encoding="utf-8", newline="")
        except OSError as exc:
            self.lock.release()
            raise SinkError(f"{self.path}: cannot write ({_why(exc)})") from None

    def _finish(self) -> None:
        pass

    def close(self) -> None:
        if self.fh is None:
            return
        try:
            self._finish()
            self.fh.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self._drop()
            raise SinkError(f"{self.path}: cannot write ({_why(exc)}); partial output removed") from None
        finally:
            self.fh = None
            self.lock.release()

    def _drop(self) -> None:
        if self.fh is not None:
            try:
                self.fh.close()
            except OSError:
                pass  # the buffer cannot be flushed (disk full): the file goes anyway
            self.fh = None
        self.tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        self._drop()
        self.lock.release()

    def _put(self, text: str) -> None:
        assert self.fh is not None
        try:
            self.fh.write(text)
        except OSError as exc:
            self.abort()
            raise SinkError(f"{self.path}: cannot write ({_why(exc)}); partial output removed") from None


class JsonSink(_AtomicText):
    """The whole track as one JSON document (SPEC ``.json``), streamed frame by frame."""

    def __init__(self, path: Path, info: SourceInfo, scheme: str, stabilizer: str, lookahead: int = 0) -> None:
        super().__init__(path)
        head = json.dumps(header(info, scheme, stabilizer, lookahead))
        self._put(head[:-1] + ', "frames": [')
        self.count = 0

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        self._put(("," if self.count else "") + "\n" + json.dumps(result.to_dict(), separators=(",", ":")))
        self.count += 1

    def _finish(self) -> None:
        assert self.fh is not None
        self.fh.write("\n]}\n")


class CsvSink(_AtomicText):
    """OpenFace-style wide rows: ``frame,face_id,timestamp,confidence,success,x_0..,y_0..``, then the
    landmark scores ``s_0..`` and the ``shot`` (after the OpenFace columns, so readers of those keep working)."""

    def __init__(self, path: Path, k: int) -> None:
        super().__init__(path)
        self.k = k
        self._row(["frame", "face_id", "timestamp", "confidence", "success"]
                  + [f"x_{i}" for i in range(k)] + [f"y_{i}" for i in range(k)] + [f"s_{i}" for i in range(k)]
                  + ["shot"])

    def _row(self, values: list) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        self._put(buf.getvalue())

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        t = f"{result.timestamp_ms / 1000.0:.3f}"
        if not result.faces:
            self._row([result.frame, "", t, "0", "0"] + [""] * (3 * self.k) + [result.shot])
        for f in result.faces:
            xs = [f"{v:.2f}" for v in f.landmarks[:, 0]]
            ys = [f"{v:.2f}" for v in f.landmarks[:, 1]]
            ss = [f"{v:.4f}" for v in f.landmark_scores]
            self._row([result.frame, f.id, t, f"{f.score:.3f}", "1"] + xs + ys + ss + [result.shot])


class JsonlSink(_AtomicText):
    """One JSON object per frame and line, plus ``source``, to a file (atomic, like the others)."""

    def __init__(self, path: Path, info: SourceInfo) -> None:
        super().__init__(path)
        self.source = info.name

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        d = result.to_dict()
        d["source"] = self.source
        self._put(json.dumps(d, separators=(",", ":")) + "\n")


class StdoutSink(Sink):
    """JSONL on standard output (``-o -``), a line per frame, flushed as it goes.

    A reader that goes away raises :class:`OutputClosed`.
    """

    def __init__(self, info: SourceInfo) -> None:
        self.source, self.live, self.frames = info.name, info.live, 0
        if sys.stdout is None:
            raise SinkError("-o -: standard output is closed")

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        d = result.to_dict()
        d["source"] = self.source
        try:
            sys.stdout.write(json.dumps(d, separators=(",", ":")) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            raise OutputClosed(self.frames, self.live) from None
        except (OSError, ValueError) as exc:  # ValueError: stdout was closed under us
            raise SinkError(f"stdout: cannot write ({_why(exc) if isinstance(exc, OSError) else exc})") from None
        self.frames += 1


class VideoSink(Sink):
    """The source frames with landmarks, box, id and fps drawn on them.

    On close the written file is opened again and must hold every frame written (a full disk
    leaves a short or unreadable file, and OpenCV's writer does not report it).
    """

    needs_image = True

    def __init__(self, path: Path, info: SourceInfo) -> None:
        self.path = Path(path)
        self.lock = OutputLock(self.path)
        self.tmp = partial_path(self.path, keep_suffix=True)
        fourcc = VIDEO_FOURCC.get(self.path.suffix.lower(), "mp4v")
        fps = info.fps if info.fps > 0 else 25.0
        self.writer: cv2.VideoWriter | None = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*fourcc), fps,
                                                              (info.width, info.height))
        if not self.writer.isOpened():
            self.abort()
            raise SinkError(f"{self.path}: cannot open a video writer here")
        self.size = (info.width, info.height)
        self.fps_text: str | None = None
        self.count = 0

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        if image is None:
            raise ValueError("VideoSink needs the frame image")
        assert self.writer is not None
        canvas = draw_result(image, result, self.fps_text)
        if canvas.shape[1::-1] != self.size:
            canvas = cv2.resize(canvas, self.size)
        self.writer.write(canvas)
        self.count += 1

    def _written(self) -> int:
        """Frames a reader finds in the partial file (0 when it is missing, empty or unreadable)."""
        try:
            if self.tmp.stat().st_size == 0:
                return 0
        except OSError:
            return 0
        # FFmpeg, which wrote it (OpenCV's own AVI reader would print its complaints to stderr)
        cap = cv2.VideoCapture(str(self.tmp), getattr(cv2, "CAP_FFMPEG", cv2.CAP_ANY))
        try:
            if not cap.isOpened() or not cap.read()[0]:
                return 0
            n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            return round(n) if np.isfinite(n) and 0 < n < 1e9 else 0
        finally:
            cap.release()

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        try:
            if self.count == 0:  # nothing to show: no file, like a source that failed before any frame
                self.tmp.unlink(missing_ok=True)
                return
            found = self._written()
            if found != self.count:
                self.tmp.unlink(missing_ok=True)
                raise SinkError(f"{self.path}: cannot write (the video holds {found} of {self.count} frames: "
                                "is the disk full?); partial output removed")
            try:
                os.replace(self.tmp, self.path)
            except OSError as exc:
                self.tmp.unlink(missing_ok=True)
                raise SinkError(f"{self.path}: cannot write ({_why(exc)}); partial output removed") from None
        finally:
            self.lock.release()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)
        self.lock.release()


FORMATS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv"}


def kind_of(path: str) -> str:
    """``json``, ``jsonl``, ``csv`` or ``video`` from an output path (``-`` is JSONL)."""
    if path == "-":
        return "jsonl"
    ext = Path(path).suffix.lower()
    if ext in FORMATS:
        return FORMATS[ext]
    if ext in VIDEO_FOURCC:
        return "video"
    raise ValueError(f"{path}: unknown output format {ext or '(no extension)'}: use .json, .jsonl, .csv, .mp4 or .avi")


def open_sink(path: str, info: SourceInfo, scheme: str, stabilizer: str, k: int, lookahead: int = 0) -> Sink:
    kind = kind_of(path)
    if kind == "json":
        return JsonSink(Path(path), info, scheme, stabilizer, lookahead)
    if path == "-":
        return StdoutSink(info)
    if kind == "jsonl":
        return JsonlSink(Path(path), info)
    if kind == "csv":
        return CsvSink(Path(path), k)
    return VideoSink(Path(path), info)
