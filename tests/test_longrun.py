"""A long run keeps memory flat and loses no frame (RSS sampled from /proc while it runs)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("skimage")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_memory_flat_and_no_frame_lost_on_a_long_clip(tmp_path):
    from stableface.demo import make_clip

    frames, _ = make_clip(50, noise=4.0)
    clip = tmp_path / "long.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (256, 256))
    n = 1500
    small = [cv2.resize(f, (256, 256)) for f in frames]
    loop = small + small[::-1]
    for i in range(n):
        w.write(loop[i % len(loop)])
    w.release()
    out = tmp_path / "long.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "stableface", "track", str(clip), "-q", "-o", str(out),
                          "-o", str(tmp_path / "long.json")])
    samples = []
    while p.poll() is None:
        try:
            samples.append(rss_mb(p.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    assert p.wait() == 0
    lines = out.read_text().splitlines()
    assert [json.loads(x)["frame"] for x in lines] == list(range(n))  # no frame lost
    assert sum(1 for x in lines if json.loads(x)["faces"]) > 0.95 * n
    samples = [s for s in samples if s == s]
    assert len(samples) >= 10
    early, late = np.median(samples[len(samples) // 4: len(samples) // 2]), max(samples[len(samples) // 2:])
    assert late - early < 20.0, (early, late)
