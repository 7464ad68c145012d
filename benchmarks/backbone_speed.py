"""Two backbones (each with its stabilizer) in the same run: ms per crop of the backbone alone, and
end-to-end ``Pipeline.track`` fps on the shared clips, in interleaved rounds (medians).

    python benchmarks/backbone_speed.py A.onnx B.onnx [--stabilizers SA.onnx SB.onnx] [--rounds 3] [--lookahead 8]

End to end runs ``PipelineConfig``'s defaults (``--lookahead 0``, ``--max-faces 4``) unless ``--lookahead``
says otherwise (the files' default: ``--lookahead 8``).

The ratio is B's fps over A's (above 1: B is faster). This machine's speed drifts between runs, so
only the ratio inside one run is meant to be compared.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from stableface.backbone import HeatmapBackbone
from stableface.pipeline import Pipeline, PipelineConfig
from timing import median_ms  # noqa: E402 (benchmarks/timing.py)


def e2e_fps(pipe: Pipeline, clips: list[Path], frames: int) -> float:
    n, t0 = 0, time.perf_counter()
    for c in clips:
        pipe.reset()
        for i, _ in enumerate(pipe.track(str(c))):
            n += 1
            if i + 1 >= frames:
                break
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs=2, type=Path)
    ap.add_argument("--stabilizers", nargs=2, type=Path, default=None)
    ap.add_argument("--videos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "videos")
    ap.add_argument("--frames", type=int, default=100, help="frames per clip")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lookahead", type=int, default=PipelineConfig().lookahead)
    ap.add_argument("--max-faces", type=int, default=PipelineConfig().max_faces)
    a = ap.parse_args()
    clips = sorted(p for p in a.videos.glob("*.mp4") if p.name != "obama.mp4")
    stabs = a.stabilizers or [None, None]
    print(f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs; {len(clips)} clips x {a.frames} frames; "
          f"lookahead {a.lookahead}, max faces {a.max_faces}")
    rng = np.random.default_rng(0)
    bbs = [HeatmapBackbone(m, device="cpu") for m in a.models]
    pipes = [Pipeline.from_weights(m, s, device="cpu", config=PipelineConfig(lookahead=a.lookahead, max_faces=a.max_faces)) for m, s in zip(a.models, stabs)]
    ms = {i: [] for i in range(2)}
    fps = {i: [] for i in range(2)}
    for _ in range(a.rounds):
        for i in range(2):
            c = rng.integers(0, 255, (1, bbs[i].size, bbs[i].size, 3), dtype=np.uint8)
            ms[i].append(median_ms(lambda: bbs[i](c), 50))
            fps[i].append(e2e_fps(pipes[i], clips, a.frames))
    print("| backbone | ms per crop (backbone alone) | track fps (end to end) |")
    print("|---|---|---|")
    for i, m in enumerate(a.models):
        print(f"| {m} | {statistics.median(ms[i]):.2f} | {statistics.median(fps[i]):.1f} |")
    r = statistics.median(fps[1]) / statistics.median(fps[0])
    print(f"end-to-end fps, B / A: {r:.2f}x; backbone time, B / A: {statistics.median(ms[1]) / statistics.median(ms[0]):.2f}x")


if __name__ == "__main__":
    main()
