"""Time per frame with four faces against one, on the same video: four shared clips tiled 2x2
(each scaled to 256x256, a 512x512 mosaic; composed in a temporary folder, never saved), tracked
with ``--max-faces 1`` and ``--max-faces 4`` through ``Pipeline.track`` (JSON written), in turns.

    python benchmarks/many_faces.py [--frames 200] [--repeat 2] [--lookahead 8]

``4 faces, one by one`` is the previous path (one stabilizer call per face; the backbone already
took all crops in one call); ``2 threads``: every model with two onnxruntime threads instead of
stableface's default (every CPU but one). Prints ms per frame, faces per frame and the ratio to one face.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

import stableface.pipeline as P
from stableface.pipeline import Pipeline, PipelineConfig
from stableface.sinks import JsonSink
from stableface.video import open_source

CLIPS = ["WDA_KatieHill_000.mp4", "WDA_BobMenendez_000.mp4", "RD_Radio2_000.mp4", "WDA_EdMarkey0_000.mp4"]


def mosaic(videos: Path, out: Path, frames: int) -> Path:
    caps = [cv2.VideoCapture(str(videos / c)) for c in CLIPS]
    w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (512, 512))
    for _ in range(frames):
        tiles = []
        for c in caps:
            ok, f = c.read()
            if not ok:
                break
            tiles.append(cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA))
        if len(tiles) < 4:
            break
        w.write(np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])]))
    w.release()
    return out


def run(pipe: Pipeline, path: Path, out: Path) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    with open_source(str(path)) as src, JsonSink(out, src.info, pipe.scheme, pipe.stabilizer_label, pipe.config.lookahead) as sink:
        faces = n = 0
        for r in pipe.track(src, [sink]):
            n += 1
            faces += len(r.faces)
    return n, faces, time.perf_counter() - t0


def one_by_one(stabs, hm, crops, ts, images=None):
    return [s.update(h, c, ts, None if images is None else images[i]) for i, (s, h, c) in enumerate(zip(stabs, hm, crops))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "videos")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--lookahead", type=int, default=0, help="8 is what `track` does to files by default (the "
                    "ConvLSTM then does not run); 0: the live stabilizer")
    args = ap.parse_args()
    batched = P.update_many
    # (max faces, stabilizer path, onnxruntime threads: 0 is stableface's default, every CPU but one)
    variants = {"1 face": (1, batched, 0), "4 faces, batched": (4, batched, 0), "4 faces, one by one": (4, one_by_one, 0),
                "1 face, 2 threads": (1, batched, 2), "4 faces, batched, 2 threads": (4, batched, 2)}
    pipes = {k: Pipeline.from_weights(device="cpu", config=PipelineConfig(max_faces=m, lookahead=args.lookahead), threads=t)
             for k, (m, _, t) in variants.items()}
    wall = {k: 0.0 for k in variants}
    frames = {k: 0 for k in variants}
    faces = {k: 0 for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        video = mosaic(args.videos, Path(tmp) / "mosaic.avi", args.frames)
        for _ in range(args.repeat):
            for k, (_, fn, _) in variants.items():
                P.update_many = fn
                try:
                    n, f, dt = run(pipes[k], video, Path(tmp) / "out.json")
                finally:
                    P.update_many = batched
                wall[k] += dt
                frames[k] += n
                faces[k] += f
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; a 2x2 mosaic of 4 shared "
          f"clips, {frames['1 face'] // args.repeat} frames of 512x512, {args.repeat} passes in turns")
    print("| run | faces per frame | ms per frame | ratio to 1 face |")
    print("|---|---|---|---|")
    one = wall["1 face"] / frames["1 face"]
    for k in variants:
        ms = wall[k] / frames[k]
        print(f"| {k} | {faces[k] / frames[k]:.2f} | {ms * 1000:.2f} | **{ms / one:.2f}** |")


if __name__ == "__main__":
    main()
