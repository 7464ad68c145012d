"""Audience shots through the command line: small faces in 640x360 video files with hard cuts.

    python benchmarks/audience.py [--scales 24,32,48] [--shots 12] [--frames 30] [--baseline DIR]

For each face size S (landmark box side, px) it renders one H.264/MPEG-4 file of ``--shots`` shots,
each ``--frames`` frames of a still 640x360 picture with 4 validation faces of that size on a
textured background (``detector_recall.compose``; seeded), a hard cut between shots, and runs
``stableface track FILE -o OUT.json`` on it as a user would (every default). Printed per size:

* faces tracked on each shot's last frame, against the faces planted (a face counts when a
  tracked face's landmark centre lies within half a planted face's box of it);
* frames from a shot's first frame until the most faces of that shot were tracked (median, max);
* shots the JSON reports (the ``shot`` field), and whether the ids run 0, 1, 2, ... with none skipped.

``--baseline DIR`` also runs another checkout's package (a ``git worktree`` of an earlier commit)
on the same files, as ``python -P -m stableface`` with ``PYTHONPATH=DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detector_recall as dr  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def render(path: Path, pictures, frames: int) -> None:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 360))
    for img, _, _ in pictures:
        for _ in range(frames):
            vw.write(img)
    vw.release()


def score(out: Path, pictures, frames: int) -> dict:
    fr = json.load(open(out))["frames"]
    tracked, waits, ids = 0, [], []
    for k, (_, pts, _) in enumerate(pictures):
        shot = fr[frames * k:frames * (k + 1)]
        last = [np.asarray(f["landmarks"], float).mean(0) for f in shot[-1]["faces"]]
        for p in pts:
            centre, side = dr.landmark_box(p)
            tracked += any(np.linalg.norm(c - centre) < 0.5 * side for c in last)
        counts = [len(f["faces"]) for f in shot]
        waits.append(counts.index(max(counts)))
        ids += [f["id"] for f in fr[frames * k:frames * (k + 1)] for f in f["faces"]]
    seen = list(dict.fromkeys(ids))
    return {"tracked": tracked, "planted": sum(len(p) for _, p, _ in pictures), "waits": waits,
            "shots": sorted({f.get("shot") for f in fr}), "ids in order": seen == list(range(len(seen)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "300w_train")
    ap.add_argument("--scales", default="24,32,48")
    ap.add_argument("--shots", type=int, default=12)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--baseline", type=Path, default=None)
    args = ap.parse_args()
    faces = dr.load_faces(args.data, "val")
    sf = str(Path(sys.executable).with_name("stableface"))
    tools = {"this checkout": ([sf], None)}
    if args.baseline is not None:
        tools[str(args.baseline)] = ([sys.executable, "-P", "-m", "stableface"],
                                     dict(os.environ, PYTHONPATH=str(args.baseline.resolve())))
    print(f"{args.shots} shots of {args.frames} frames per size, 4 faces a shot, 640x360, hard cuts; "
          "`stableface track FILE -o OUT.json` with every default\n")
    print("| tool | S | faces tracked at the shots' ends | frames until a shot's faces were found (median / max) "
          "| shots reported | ids 0, 1, 2, ... |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for s in (int(v) for v in args.scales.split(",") if v):
            pictures = dr.compose(faces, s, np.random.default_rng(args.seed + s))[:args.shots]
            video = Path(tmp) / f"audience{s}.mp4"
            render(video, pictures, args.frames)
            for name, (cmd, env) in tools.items():
                out = Path(tmp) / f"{s}.json"
                subprocess.run(cmd + ["track", str(video), "-o", str(out), "--overwrite", "-q"], check=True, env=env)
                r = score(out, pictures, args.frames)
                print(f"| {name} | {s} | {r['tracked']}/{r['planted']} ({100 * r['tracked'] / r['planted']:.1f}%) "
                      f"| {int(np.median(r['waits']))} / {max(r['waits'])} | {len(r['shots'])} of {len(pictures)} "
                      f"| {'yes' if r['ids in order'] else 'no'} |")


if __name__ == "__main__":
    main()
