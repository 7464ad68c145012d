"""Result writers, one class per format, chosen by extension; all are context managers.

JSON and CSV are written to ``NAME.partial`` and renamed on close, so a file under the final
name is always complete and valid; closing after an interrupt writes a valid file up to the
last processed frame.
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

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class SinkError(Exception):
    """An output cannot be written."""


def header(info: SourceInfo, scheme: str, stabilizer: str, lookahead: int = 0) -> dict:
    return {"stableface_version": __version__, "source": info.name, "width": info.width, "height": info.height,
            "fps": round(float(info.fps), 3), "landmark_scheme": scheme, "stabilizer": stabilizer,
            "lookahead": int(lookahead)}


class Sink:
    needs_image = False

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abort(self) -> None:
        """Drop the output (used when a source fails before any frame)."""
        self.close()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _AtomicText(Sink):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".partial")
        try:
            self.fh: IO[str] | None = open(self.tmp, "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot write ({exc.strerror or exc})") from None

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
            self.fh.close()
            self.tmp.unlink(missing_ok=True)
            raise SinkError(f"{self.path}: cannot write ({exc.strerror or exc}); partial output removed") from None
        finally:
            self.fh = None

    def abort(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        self.tmp.unlink(missing_ok=True)

    def _put(self, text: str) -> None:
        assert self.fh is not None
        try:
            self.fh.write(text)
        except OSError as exc:
            self.abort()
            raise SinkError(f"{self.path}: cannot write ({exc.strerror or exc}); partial output removed") from None


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
    """OpenFace-style wide rows: ``frame,face_id,timestamp,confidence,success,x_0..,y_0..``."""

    def __init__(self, path: Path, k: int) -> None:
        super().__init__(path)
        self.k = k
        self._row(["frame", "face_id", "timestamp", "confidence", "success"]
                  + [f"x_{i}" for i in range(k)] + [f"y_{i}" for i in range(k)])

    def _row(self, values: list) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        self._put(buf.getvalue())

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        t = f"{result.timestamp_ms / 1000.0:.3f}"
        if not result.faces:
            self._row([result.frame, "", t, "0", "0"] + [""] * (2 * self.k))
        for f in result.faces:
            xs = [f"{v:.2f}" for v in f.landmarks[:, 0]]
            ys = [f"{v:.2f}" for v in f.landmarks[:, 1]]
            self._row([result.frame, f.id, t, f"{f.score:.3f}", "1"] + xs + ys)


class JsonlSink(Sink):
    """One JSON object per frame and line, plus ``source``; ``-`` is standard output."""

    def __init__(self, path: Path | str, info: SourceInfo) -> None:
        self.source = info.name
        self.stdout = str(path) == "-"
        self.path = Path(path) if not self.stdout else None
        try:
            self.fh: IO[str] | None = sys.stdout if self.stdout else open(path, "w", encoding="utf-8")
        except OSError as exc:
            raise SinkError(f"{path}: cannot write ({exc.strerror or exc})") from None

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        d = result.to_dict()
        d["source"] = self.source
        try:
            assert self.fh is not None
            self.fh.write(json.dumps(d, separators=(",", ":")) + "\n")
            self.fh.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise SinkError(f"{self.path or 'stdout'}: cannot write ({exc.strerror or exc})") from None

    def close(self) -> None:
        if self.fh is not None and not self.stdout:
            self.fh.close()
        self.fh = None


class VideoSink(Sink):
    """The source frames with landmarks, box, id and fps drawn on them."""

    needs_image = True

    def __init__(self, path: Path, info: SourceInfo) -> None:
        self.path = Path(path)
        fourcc = VIDEO_FOURCC.get(self.path.suffix.lower(), "mp4v")
        fps = info.fps if info.fps > 0 else 25.0
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), fps, (info.width, info.height))
        if not self.writer.isOpened():
            raise SinkError(f"{self.path}: cannot open a video writer here")
        self.size = (info.width, info.height)
        self.fps_text: str | None = None

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        if image is None:
            raise ValueError("VideoSink needs the frame image")
        canvas = draw_result(image, result, self.fps_text)
        if canvas.shape[1::-1] != self.size:
            canvas = cv2.resize(canvas, self.size)
        self.writer.write(canvas)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


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
    if kind == "jsonl":
        return JsonlSink(path, info)
    if kind == "csv":
        return CsvSink(Path(path), k)
    return VideoSink(Path(path), info)
