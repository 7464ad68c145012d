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
import logging
import os
import shutil
import sys
from fractions import Fraction
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from stableface import __version__
from stableface.draw import draw_result
from stableface.types import FrameResult
from stableface.video import SourceInfo, _av, cv_name

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: O_EXCL lock files instead
    fcntl = None

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}  # through OpenCV
H264_EXTS = {".mp4", ".m4v", ".mov", ".mkv"}  # H.264 through PyAV, when it is installed


log = logging.getLogger("stableface")


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

    def footer(self, unreadable: list[int], dropped: int) -> None:
        """What the source could not give, told before ``close``: the numbers of the frames that could
        not be decoded, and how many stale frames a live source dropped. (Frame numbers are the
        source's, so in every format those frames are the numbers missing; JSON also lists them.)"""

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
        self.tail = {"unreadable_frames": [], "dropped_frames": 0}

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        self._put(("," if self.count else "") + "\n" + json.dumps(result.to_dict(), separators=(",", ":")))
        self.count += 1

    def footer(self, unreadable: list[int], dropped: int) -> None:
        self.tail = {"unreadable_frames": [int(i) for i in unreadable], "dropped_frames": int(dropped)}

    def _finish(self) -> None:
        assert self.fh is not None
        self.fh.write("\n], " + json.dumps(self.tail, separators=(", ", ": "))[1:] + "\n")


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


class _CvEncoder:
    """OpenCV's VideoWriter: MPEG-4 Part 2 (``mp4v``) or Motion JPEG, at a constant frame rate."""

    def __init__(self, tmp: Path, fourcc: str, fps: float, size: tuple[int, int]) -> None:
        self.name, self.alias_dir = cv_name(str(tmp))  # (OpenCV crashes on a name that is not UTF-8)
        self.writer = cv2.VideoWriter(self.name, cv2.VideoWriter_fourcc(*fourcc), fps, size)
        self.opened = self.writer.isOpened()

    def write(self, canvas: np.ndarray, timestamp_ms: float) -> None:
        self.writer.write(canvas)

    def release(self) -> None:
        self.writer.release()

    def frames_in(self, tmp: Path) -> int:
        # FFmpeg, which wrote it (OpenCV's own AVI reader would print its complaints to stderr)
        cap = cv2.VideoCapture(self.name, getattr(cv2, "CAP_FFMPEG", cv2.CAP_ANY))
        try:
            if not cap.isOpened() or not cap.read()[0]:
                return 0
            n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            return round(n) if np.isfinite(n) and 0 < n < 1e9 else 0
        finally:
            cap.release()

    def cleanup(self) -> None:
        if self.alias_dir is not None:
            shutil.rmtree(self.alias_dir, ignore_errors=True)
            self.alias_dir = None


class _AvEncoder:
    """H.264 by PyAV (libx264, yuv420p; MP4 with ``+faststart``): plays in web browsers. Each frame
    keeps its source time (so a variable frame rate stays right), and the source's audio track is
    copied in (its packets remuxed, not re-encoded), cut where the video ends."""

    TB = Fraction(1, 90000)

    def __init__(self, av, tmp: Path, fps: float, size: tuple[int, int], audio_from: str | None) -> None:
        self.av = av
        mp4 = tmp.suffix.lower() in (".mp4", ".m4v", ".mov")
        self.out = av.open(str(tmp), "w", options={"movflags": "+faststart"} if mp4 else {})
        try:
            self.stream = self.out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            self.size = (size[0] + size[0] % 2, size[1] + size[1] % 2)  # 4:2:0 needs even sides: pad one pixel
            self.stream.width, self.stream.height = self.size
            self.stream.pix_fmt = "yuv420p"
            self.stream.codec_context.time_base = self.TB
            self.stream.options = {"crf": "20", "preset": "veryfast"}
        except BaseException:
            self.out.close()
            raise
        self.opened, self.last_pts, self.end_s = True, -1, 0.0
        self.frame_s = 1.0 / fps
        self.audio = None
        if audio_from is not None:
            try:
                self.audio = _AudioCopy(av, audio_from, self.out)
            except (av.FFmpegError, OSError, ValueError) as exc:  # a codec this container cannot hold, a broken track
                if str(exc) != "no audio track":
                    log.warning("%s: the audio track is not kept (%s)", audio_from, getattr(exc, "strerror", None) or exc)
        try:
            self.out.start_encoding()  # the file exists from here, and the encoder's settings are checked
        except BaseException:
            self.abandon()
            raise

    def write(self, canvas: np.ndarray, timestamp_ms: float) -> None:
        if canvas.shape[1::-1] != self.size:  # odd sides
            canvas = cv2.copyMakeBorder(canvas, 0, self.size[1] - canvas.shape[0], 0, self.size[0] - canvas.shape[1],
                                        cv2.BORDER_REPLICATE)
        frame = self.av.VideoFrame.from_ndarray(canvas, format="bgr24")
        frame.pts = self.last_pts = max(round(timestamp_ms * 90), self.last_pts + 1)
        frame.time_base = self.TB
        self.end_s = timestamp_ms / 1000.0 + self.frame_s
        if self.audio is not None:
            self.audio.copy_until(timestamp_ms / 1000.0)
        for packet in self.stream.encode(frame):
            self.out.mux(packet)

    def release(self) -> None:
        try:
            for packet in self.stream.encode(None):
                self.out.mux(packet)
            if self.audio is not None:
                self.audio.copy_until(self.end_s)
        finally:
            if self.audio is not None:
                self.audio.close()
            self.out.close()

    def abandon(self) -> None:
        try:
            if self.audio is not None:
                self.audio.close()
            self.out.close()
        except (self.av.FFmpegError, OSError):
            pass

    def frames_in(self, tmp: Path) -> int:
        """Video packets read back from the file (its index alone would not show a file cut short)."""
        n = 0
        try:
            with self.av.open(str(tmp)) as c:
                for p in c.demux(c.streams.video[0]):
                    n += bool(p.size)
        except (self.av.FFmpegError, OSError, IndexError):
            pass
        return n

    def cleanup(self) -> None:
        pass


class _AudioCopy:
    """The audio track of a source file, remuxed into an output as the video reaches each packet's time."""

    def __init__(self, av, source: str, out) -> None:
        self.av, self.out = av, out
        self.src = av.open("file:" + source)
        if not self.src.streams.audio:
            self.src.close()
            raise ValueError("no audio track")  # (not said: most clips have none)
        try:
            self.a = self.src.streams.audio[0]
            self.ostream = out.add_stream_from_template(self.a)
            video = self.src.streams.video[0] if self.src.streams.video else None
            start = video.start_time * video.time_base if video is not None and video.start_time is not None else 0
            self.shift = round(start / self.a.time_base) if self.a.time_base else 0  # video time 0 is the first frame
            self.packets = self.src.demux(self.a)
            self.pending = None
        except BaseException:
            self.src.close()
            raise

    def copy_until(self, t_s: float) -> None:
        while True:
            p = self.pending
            if p is None:
                try:
                    p = next(self.packets)
                except (StopIteration, self.av.FFmpegError):
                    self.packets = iter(())
                    return
                if p.dts is None or p.pts is None:
                    continue
            if (p.pts - self.shift) * self.a.time_base > t_s:
                self.pending = p
                return
            self.pending = None
            p.pts, p.dts = p.pts - self.shift, p.dts - self.shift
            if p.pts < 0:
                continue
            p.stream = self.ostream
            self.out.mux(p)

    def close(self) -> None:
        self.src.close()


class VideoSink(Sink):
    """The source frames with landmarks, box, id and fps drawn on them.

    ``.mp4``, ``.m4v``, ``.mov`` and ``.mkv`` are H.264 (PyAV, when it is installed: they play in
    web browsers; the source's audio is kept), else MPEG-4 Part 2 through OpenCV; ``.avi`` is Motion
    JPEG. On close the written file is opened again and must hold every frame written (a full
    disk leaves a short or unreadable file, and OpenCV's writer does not report it).
    """

    needs_image = True

    def __init__(self, path: Path, info: SourceInfo, audio_from: str | None = None) -> None:
        self.path = Path(path)
        self.lock = OutputLock(self.path)
        self.tmp = partial_path(self.path, keep_suffix=True)
        fps = info.fps if info.fps > 0 else 25.0
        self.size = (info.width, info.height)
        self.encoder: _AvEncoder | _CvEncoder | None = None
        self.open = True
        av = _av() if self.path.suffix.lower() in H264_EXTS else None
        try:
            if av is not None:
                try:
                    self.encoder = _AvEncoder(av, self.tmp, fps, self.size, audio_from)
                except (av.FFmpegError, OSError) as exc:
                    raise SinkError(f"{self.path}: cannot write ({getattr(exc, 'strerror', None) or exc})") from None
            else:
                self.encoder = _CvEncoder(self.tmp, VIDEO_FOURCC.get(self.path.suffix.lower(), "mp4v"), fps, self.size)
                if not self.encoder.opened:
                    raise SinkError(f"{self.path}: cannot open a video writer here")
        except BaseException:
            self.abort()
            raise
        self.fps_text: str | None = None
        self.count = 0

    @property
    def writer(self):
        """The encoder (it has ``release()``), for tests that plant what a full disk does to it."""
        return self.encoder

    @writer.setter
    def writer(self, value) -> None:
        self.encoder = value

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        if image is None:
            raise ValueError("VideoSink needs the frame image")
        assert self.encoder is not None and self.open
        canvas = draw_result(image, result, self.fps_text)
        if canvas.shape[1::-1] != self.size:
            canvas = cv2.resize(canvas, self.size)
        try:
            self.encoder.write(canvas, result.timestamp_ms)
        except (OSError, ValueError) as exc:  # PyAV's errors are these: a full disk is an OSError
            self.abort()
            raise SinkError(f"{self.path}: cannot write ({_why(exc) if isinstance(exc, OSError) else exc}); "
                            "partial output removed") from None
        self.count += 1

    def _written(self) -> int:
        """Frames a reader finds in the partial file (0 when it is missing, empty or unreadable)."""
        try:
            if self.tmp.stat().st_size == 0:
                return 0
        except OSError:
            return 0
        return self.encoder.frames_in(self.tmp)

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        try:
            try:
                self.encoder.release()
            except (OSError, ValueError) as exc:
                self.tmp.unlink(missing_ok=True)
                raise SinkError(f"{self.path}: cannot write ({_why(exc) if isinstance(exc, OSError) else exc}); "
                                "partial output removed") from None
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
            self._release()

    def abort(self) -> None:
        if self.open and self.encoder is not None:
            self.open = False
            try:
                self.encoder.abandon() if hasattr(self.encoder, "abandon") else self.encoder.release()
            except (OSError, ValueError):
                pass
        self.open = False
        self.tmp.unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        if self.encoder is not None:
            self.encoder.cleanup()
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


def open_sink(path: str, info: SourceInfo, scheme: str, stabilizer: str, k: int, lookahead: int = 0,
              audio_from: str | None = None) -> Sink:
    """The sink for ``path``'s format; ``audio_from``: a source file whose audio a video output keeps."""
    kind = kind_of(path)
    if kind == "json":
        return JsonSink(Path(path), info, scheme, stabilizer, lookahead)
    if path == "-":
        return StdoutSink(info)
    if kind == "jsonl":
        return JsonlSink(Path(path), info)
    if kind == "csv":
        return CsvSink(Path(path), k)
    return VideoSink(Path(path), info, audio_from)
