"""Planted faults through the real CLI: each gives its exit code and one clear stderr line."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from .conftest import shared_video


def track(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "stableface", "track", *map(str, args), "-q"],
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    return lines[0]


def test_truncated_video_keeps_what_it_could_read(tmp_path):
    clip = shared_video()
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    r = track(cut, "-o", tmp_path / "cut.json")
    if r.returncode == 0:  # FFmpeg could decode a prefix: the file holds those frames
        doc = json.loads((tmp_path / "cut.json").read_text())
        assert 0 < len(doc["frames"]) < 200
    else:
        assert r.returncode == 1 and "cut.mp4" in one_error_line(r.stderr)
        assert not (tmp_path / "cut.json").exists()


def test_zero_frame_video(tmp_path):
    empty = tmp_path / "empty.avi"
    w = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 64))
    w.release()
    r = track(empty, "-o", tmp_path / "e.json")
    assert r.returncode == 1
    assert one_error_line(r.stderr).startswith(f"stableface: error: {empty}: ")
    assert not (tmp_path / "e.json").exists() and not list(tmp_path.glob("*.partial"))


def test_camera_that_does_not_exist():
    r = subprocess.run([sys.executable, "-m", "stableface", "webcam", "--camera", "57", "--no-show", "-q"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert one_error_line(r.stderr) == "stableface: error: camera 57: cannot open (no such camera, or the stream refused the connection)"


@pytest.mark.slow
def test_tiny_huge_odd_and_unusual_images(tmp_path):
    cap = cv2.VideoCapture(str(shared_video()))
    ok, face = cap.read()
    assert ok
    cases = {
        "tiny.png": np.full((16, 16, 3), 90, np.uint8),
        "uhd.jpg": cv2.resize(face, (3840, 2160)),
        "odd.png": cv2.resize(face, (333, 517)),
        "grey.png": cv2.cvtColor(face, cv2.COLOR_BGR2GRAY),
        "deep.png": cv2.cvtColor(face, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257,
        "alpha.png": cv2.cvtColor(face, cv2.COLOR_BGR2BGRA),
    }
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, img in cases.items():
        cv2.imwrite(str(folder / name), img)
    out = tmp_path / "out"
    r = track(folder, "--out-dir", out)
    assert r.returncode == 0, r.stderr
    found = {p.stem: json.loads(p.read_text()) for p in out.iterdir()}
    assert set(found) == {n.split(".")[0] for n in cases}
    assert found["tiny"]["frames"][0]["faces"] == []
    for name in ("uhd", "odd", "grey", "deep", "alpha"):
        faces = found[name]["frames"][0]["faces"]
        assert len(faces) == 1, name
        w, h = found[name]["width"], found[name]["height"]
        pts = np.array(faces[0]["landmarks"])
        assert (pts[:, 0] > 0).all() and (pts[:, 0] < w).all() and (pts[:, 1] > 0).all() and (pts[:, 1] < h).all()
