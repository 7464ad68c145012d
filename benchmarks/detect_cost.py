"""The detection stage's time per frame while tracking, at ``--redetect-every 10`` (the default): the
shipped detectors merged at every re-detection (the previous release) against one of them per
re-detection, in turn (``UnionDetector.redetect``, this release). Same run, interleaved rounds;
``Pipeline.timer``'s ``detect`` stage over every frame of the shared clips.

    python benchmarks/detect_cost.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from pathlib import Path

from stableface.pipeline import Pipeline, PipelineConfig


class _AllAtOnce:
    """The union detector without ``redetect``: every re-detection runs all its models."""

    def __init__(self, union) -> None:
        self.union = union

    def detect(self, image):
        return self.union.detect(image)


def run(pipe: Pipeline, clips: list[Path]) -> tuple[float, float, int]:
    pipe.timer.clear()
    n = 0
    for c in clips:
        pipe.reset()
        for _ in pipe.track(str(c), overlap=False):  # (with a reader thread, re-detections run there)
            n += 1
    return 1000 * pipe.timer.total["detect"] / n, pipe.timer.count["detect"] / n, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "videos")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    clips = sorted(a.videos.glob("*.mp4"))
    cfg = PipelineConfig(stabilizer="none")
    turn = Pipeline.from_weights(device="cpu", config=cfg)
    both = Pipeline.from_weights(device="cpu", config=cfg)
    both.detector = _AllAtOnce(both.detector)
    res: dict[str, list] = {"every model at every re-detection": [], "one model per re-detection, in turn": []}
    for _ in range(a.rounds):
        for name, pipe in zip(res, (both, turn)):
            res[name].append(run(pipe, clips))
    print(f"{platform.machine()}, {os.cpu_count()} CPUs; {len(clips)} shared clips, {res[name][0][2]} frames, "
          f"redetect every {cfg.redetect_every}; medians of {a.rounds} interleaved rounds")
    print("| re-detection | detect ms per frame | detections per frame |")
    print("|---|---|---|")
    for name, rows in res.items():
        print(f"| {name} | {statistics.median(r[0] for r in rows):.3f} | {rows[0][1]:.3f} |")
    a_, b_ = (statistics.median(r[0] for r in rows) for rows in res.values())
    print(f"in turn / every model: {b_ / a_:.2f}x")


if __name__ == "__main__":
    main()
