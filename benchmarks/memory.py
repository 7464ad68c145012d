"""Peak memory against video length: ``stableface track`` on a 1,000- and a 10,000-frame clip.

    python benchmarks/memory.py [--clip ../shared/videos/WDA_KatieHill_000.mp4] [--long 10000]

The long clips are the shared clip played forwards and backwards (no jump cuts), written as
MJPG .avi to a temporary folder. Each run is a fresh ``stableface track`` process writing JSON and
CSV; its peak RSS comes from ``wait4`` (ru_maxrss).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2


def make_clip(src: Path, n: int, out: Path) -> None:
    cap = cv2.VideoCapture(str(src))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(f, (256, 256)) if f.shape[0] > 512 else f)
    loop = frames + frames[::-1][1:-1]
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    for i in range(n):
        wr.write(loop[i % len(loop)])
    wr.release()


def peak_rss(cmd: list[str]) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024.0, time.perf_counter() - t0, p.returncode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "videos" / "WDA_KatieHill_000.mp4")
    ap.add_argument("--short", type=int, default=1000)
    ap.add_argument("--long", type=int, default=10000, help="45000 = a 30-minute clip at 25 fps")
    args = ap.parse_args()
    print("| frames | frames written | lost | peak RSS (MB) | wall (s) | fps | exit |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.short, args.long):
            clip = Path(tmp) / f"clip{n}.avi"
            make_clip(args.clip, n, clip)
            cmd = [sys.executable, "-m", "stableface", "track", str(clip), "-q", "-o", str(Path(tmp) / f"o{n}.json"),
                   "-o", str(Path(tmp) / f"o{n}.csv")]
            rss, wall, code = peak_rss(cmd)
            rows.append(rss)
            with open(Path(tmp) / f"o{n}.csv") as fh:
                written = len({line.split(",", 1)[0] for line in fh} - {"frame"})
            print(f"| {n} | {written} | {n - written} | {rss:.1f} | {wall:.1f} | {n / wall:.1f} | {code} |")
            (Path(tmp) / f"o{n}.json").unlink(missing_ok=True)
    print(f"\npeak RSS difference, {args.long} vs {args.short} frames: {rows[1] - rows[0]:+.1f} MB")


if __name__ == "__main__":
    main()
