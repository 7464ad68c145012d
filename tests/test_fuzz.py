"""A property-based fuzz of the CLI: random option combinations on random, often broken, inputs.

Whatever the inputs, a run must end with an exit code of the contract (0, 1, 2, 130, 143), never a
traceback, and every file left under a final name must be complete and valid: JSON that parses,
CSV with its header, a video that opens. Bounded (a dozen examples, about a minute), and the
same examples every run (``derandomize``); ``STABLEFACE_FUZZ_EXAMPLES=200`` explores further,
at random.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from .media import write_clip  # noqa: E402

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("STABLEFACE_FUZZ_EXAMPLES", "12"))
KINDS = ["clip", "truncated", "corrupt", "garbage_video", "garbage_image", "odd_png", "huge_png", "empty", "folder",
         "missing"]
CSV_HEAD = ["frame", "face_id", "timestamp", "confidence", "success"]


@pytest.fixture(scope="module")
def base_clip(tmp_path_factory):
    pytest.importorskip("av")
    return write_clip(tmp_path_factory.mktemp("fuzz") / "base.mp4", n=24, size=(64, 48))


def make_source(folder: Path, i: int, kind: str, base: Path, frac: float, w: int, h: int) -> str:
    rng = np.random.default_rng(i)
    data = base.read_bytes()
    p = folder / f"s{i}_{kind}"
    if kind == "clip":
        p = p.with_suffix(".mp4")
        p.write_bytes(data)
    elif kind == "truncated":
        p = p.with_suffix(".mp4")
        p.write_bytes(data[: max(1, int(len(data) * frac))])
    elif kind == "corrupt":
        p = p.with_suffix(".mp4")
        b = bytearray(data)
        at, n = int(len(b) * frac), max(1, int(len(b) * 0.2))
        b[at:at + n] = rng.bytes(len(b[at:at + n]))
        p.write_bytes(bytes(b))
    elif kind == "garbage_video":
        p = p.with_suffix(rng.choice([".mp4", ".avi", ".mkv"]))
        p.write_bytes(rng.bytes(int(5000 * frac) + 1))
    elif kind == "garbage_image":
        p = p.with_suffix(rng.choice([".png", ".jpg"]))
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(int(3000 * frac)))
    elif kind == "odd_png":
        p = p.with_suffix(".png")
        cv2.imwrite(str(p), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    elif kind == "huge_png":
        import struct
        import zlib

        def chunk(k, d):
            return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))

        p = p.with_suffix(".png")
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000 + w, 30000 + h, 8, 2, 0, 0, 0))
                      + chunk(b"IDAT", rng.bytes(2000)) + chunk(b"IEND", b""))
    elif kind == "empty":
        p = p.with_suffix(rng.choice([".mp4", ".png"]))
        p.write_bytes(b"")
    elif kind == "folder":
        p.mkdir()
        for j in range(3):
            cv2.imwrite(str(p / f"f{j}.png"), np.full((h, w, 3), 40 * j, np.uint8))
    else:
        p = p.with_suffix(".mp4")  # never created
    return str(p)


def check_outputs(out: Path) -> dict[str, int]:
    """Every file under a final name is whole and valid; returns frames per output."""
    left = sorted(out.rglob("*"))
    assert not [p for p in left if p.name.endswith((".partial", ".lock")) or ".partial." in p.name], left
    frames = {}
    for p in left:
        if p.is_dir():
            continue
        ext = p.suffix.lower()
        if ext == ".json":
            doc = json.loads(p.read_text())
            numbers = [f["frame"] for f in doc["frames"]]
            assert all(b > a for a, b in zip(numbers, numbers[1:])) and isinstance(doc["unreadable_frames"], list)
            frames[p.stem] = len(numbers)
        elif ext == ".jsonl":
            numbers = [json.loads(x)["frame"] for x in p.read_text().splitlines()]
            assert all(b > a for a, b in zip(numbers, numbers[1:]))
        elif ext == ".csv":
            rows = list(csv.reader(p.read_text().splitlines()))
            assert rows[0][:5] == CSV_HEAD and all(len(r) == len(rows[0]) for r in rows)
        elif ext in (".mp4", ".avi"):
            cap = cv2.VideoCapture(str(p))
            assert cap.isOpened() and cap.read()[0], p
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if p.stem in frames:
                assert n == frames[p.stem], (p, n, frames[p.stem])
    return frames


@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 12,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=3),
       frac=st.floats(0.05, 0.95), w=st.integers(1, 200), h=st.integers(1, 200),
       stabilizer=st.sampled_from(["none", "one-euro", "convlstm"]), lookahead=st.integers(0, 10),
       max_faces=st.integers(1, 3), redetect=st.integers(0, 5), jobs=st.integers(1, 2),
       formats=st.lists(st.sampled_from(["json", "jsonl", "csv", "mp4", "avi"]), max_size=3, unique=True),
       stdout=st.booleans(), sig=st.sampled_from([None, None, None, "SIGINT", "SIGTERM"]), delay=st.floats(0, 1.0))
def test_the_cli_never_breaks_its_contract(base_clip, kinds, frac, w, h, stabilizer, lookahead, max_faces, redetect, jobs,
                                           formats, stdout, sig, delay):
    work = Path(tempfile.mkdtemp(prefix="stableface-fuzz-"))
    try:
        sources = [make_source(work, i, k, base_clip, frac, w, h) for i, k in enumerate(kinds)]
        out = work / "out"
        out.mkdir()
        args = [sys.executable, "-m", "stableface", "track", *sources, "-q", "--stabilizer", stabilizer,
                "--lookahead", str(lookahead), "--max-faces", str(max_faces), "--redetect-every", str(redetect),
                "--jobs", str(jobs)]
        if len(sources) == 1:
            args += [a for f in formats for a in ("-o", str(out / f"o.{f}"))]
        else:
            text = [f for f in formats if f in ("json", "jsonl", "csv")]
            args += ["--out-dir", str(out), "--format", text[0] if text else "json"]
        if stdout:
            args += ["-o", "-"]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if sig is not None:  # once work has begun (a partial output exists), after a little more
            deadline = time.monotonic() + 30
            while p.poll() is None and not list(out.glob("*.partial*")) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(delay)
            if p.poll() is None:
                p.send_signal(getattr(signal, sig))
        stdout_text, err = p.communicate(timeout=300)
        assert "Traceback" not in err, err
        assert p.returncode in (0, 1, 2, 130, 143), (p.returncode, err)
        assert p.returncode in (0, 1, 2) or sig is not None
        if p.returncode != 2:
            for line in stdout_text.splitlines():
                json.loads(line)
        check_outputs(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
