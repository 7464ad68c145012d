"""Whole processes, end to end: `stableface track` beside MediaPipe FaceMesh on the same clips.

    python benchmarks/peers/e2e.py [--videos ../shared/videos] [--rounds 3]

Each round runs, one after the other, a fresh process of each tool over the same clips (all
512x512 shared clips, one face): decode, landmarks, a JSON file written per clip.
* stableface: `stableface track CLIPS... --out-dir DIR --overwrite -q` (the default weights,
  stabilizer and lookahead, as a user runs it).
* MediaPipe: FaceMesh (legacy solution, video mode, 1 face, 468 points), decoding with OpenCV,
  one JSON of landmarks per clip, run in the peers' own venv (benchmarks/peers/.venv, made by
  run.py).
* decode only: OpenCV reading every frame, in a process of its own.
* with ``--baseline DIR``: the stableface package of another checkout (an earlier commit's worktree),
  the same command, as ``python -P -m stableface`` with ``PYTHONPATH=DIR``.
The order of the tools alternates between rounds. Printed: the median over rounds of the wall
time of each process (start-up included) and frames per second, and the ratio to MediaPipe.
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

HERE = Path(__file__).resolve().parent
PEERS_PY = HERE / ".venv" / "bin" / "python"

MEDIAPIPE = r'''
import json, sys, cv2, mediapipe as mp
out = sys.argv[1]
for i, path in enumerate(sys.argv[2:]):
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False)
    cap, frames = cv2.VideoCapture(path), []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        r = mesh.process(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
        h, w = f.shape[:2]
        pts = [[p.x * w, p.y * h] for p in r.multi_face_landmarks[0].landmark] if r.multi_face_landmarks else []
        frames.append({"frame": len(frames), "landmarks": pts})
    with open(f"{out}/{i}.json", "w") as fh:
        json.dump({"source": path, "frames": frames}, fh)
'''

DECODE = r'''
import sys, cv2
for path in sys.argv[1:]:
    cap = cv2.VideoCapture(path)
    while cap.read()[0]:
        pass
'''


def frames_in(paths: list[Path]) -> int:
    n = 0
    for p in paths:
        cap = cv2.VideoCapture(str(p))
        while cap.read()[0]:
            n += 1
    return n


def timed(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"{cmd[0]} ... failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=Path, default=HERE.parents[2] / "shared" / "videos")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None,
                    help="Also time the stableface package of this checkout (a git worktree of an earlier commit: "
                         "git worktree add /tmp/old REV), run as python -m stableface with PYTHONPATH=DIR.")
    a = ap.parse_args()
    if not PEERS_PY.exists():
        sys.exit("the peers' venv is missing: run python benchmarks/peers/run.py --parts speed once to create it")
    clips = sorted(p for p in a.videos.glob("*.mp4")
                   if cv2.VideoCapture(str(p)).get(cv2.CAP_PROP_FRAME_WIDTH) == 512)
    n = frames_in(clips)
    sf = str(Path(sys.executable).with_name("stableface"))
    times: dict[str, list[float]] = {"stableface track": [], "MediaPipe FaceMesh": [], "decode only (OpenCV)": []}
    with tempfile.TemporaryDirectory() as tmp:
        cmds = {
            "stableface track": [sf, "track", *map(str, clips), "--out-dir", f"{tmp}/sf", "--overwrite", "-q"],
            "MediaPipe FaceMesh": [str(PEERS_PY), "-c", MEDIAPIPE, f"{tmp}/mp", *map(str, clips)],
            "decode only (OpenCV)": [sys.executable, "-c", DECODE, *map(str, clips)],
        }
        envs = {}
        if a.baseline is not None:
            name = f"stableface track ({a.baseline})"
            # (-P: not the package of the folder it runs in)
            cmds[name] = [sys.executable, "-P", "-m", "stableface", "track", *map(str, clips), "--out-dir", f"{tmp}/base",
                          "--overwrite", "-q"]
            envs[name] = dict(os.environ, PYTHONPATH=str(a.baseline.resolve()))
            times[name] = []
        os.makedirs(f"{tmp}/mp", exist_ok=True)
        order = list(cmds)
        for r in range(a.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                times[name].append(timed(cmds[name], envs.get(name)))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"{len(clips)} clips, {n} frames; median of {a.rounds} interleaved rounds; load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print("| process | wall s (median) | fps | vs MediaPipe | every round, s |")
    print("| --- | --- | --- | --- | --- |")
    for k, t in med.items():
        print(f"| {k} | {t:.1f} | {n / t:.1f} | {med['MediaPipe FaceMesh'] / t:.2f}x | "
              f"{', '.join(f'{x:.1f}' for x in times[k])} |")


if __name__ == "__main__":
    main()
