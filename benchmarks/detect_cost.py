"""The detection stage's time per frame while tracking, at ``--redetect-every 10`` (the default): the
shipped detectors merged at every re-detection (two releases ago) against one of them per
re-detection, in turn (``UnionDetector.redetect``), without and with the full-range model's tiles
of wide frames in the turn (``PipelineConfig.detect_tiles``, this release). Same run, interleaved
rounds; ``Pipeline.timer``'s ``detect`` stage over every frame of the clips.

    python benchmarks/detect_cost.py [--rounds 3] [--videos DIR]   # default: the shared clips
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from pathlib import Path

import cv2

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


def _size(path: Path) -> tuple[int, int]:
    cap = cv2.VideoCapture(str(path))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    return w, h


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "videos")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    clips = sorted(a.videos.glob("*.mp4"))
    cfg = PipelineConfig(stabilizer="none", detect_tiles=False)
    plain = Pipeline.from_weights(device="cpu", config=cfg)
    tiles = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer="none"))
    both = Pipeline.from_weights(device="cpu", config=cfg)
    both.detector = _AllAtOnce(both.detector)
    res: dict[str, list] = {"every model at every re-detection": [], "one model per re-detection, in turn": [],
                            "one model per re-detection, in turn, tiles included (shipped)": []}
    sizes = sorted({f"{w}x{h}" for w, h in (_size(c) for c in clips)})
    for _ in range(a.rounds):
        for name, pipe in zip(res, (both, plain, tiles)):
            res[name].append(run(pipe, clips))
    print(f"{platform.machine()}, {os.cpu_count()} CPUs; {len(clips)} clips ({', '.join(sizes)}), {res[name][0][2]} frames, "
          f"redetect every {cfg.redetect_every}; medians of {a.rounds} interleaved rounds")
    print("| re-detection | detect ms per frame | detections per frame |")
    print("|---|---|---|")
    for name, rows in res.items():
        print(f"| {name} | {statistics.median(r[0] for r in rows):.3f} | {rows[0][1]:.3f} |")
    a_, b_, c_ = (statistics.median(r[0] for r in rows) for rows in res.values())
    print(f"in turn / every model: {b_ / a_:.2f}x; with tiles / without: {c_ / b_:.2f}x")
    # searching: frames with no face (a smooth random texture, 640x360), where every frame is searched
    import numpy as np

    rng = np.random.default_rng(0)
    empty = [cv2.GaussianBlur(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), (0, 0), 6) for _ in range(50)]
    found, search = {"without tiles": [], "with tiles (shipped)": []}, {"without tiles": plain, "with tiles (shipped)": tiles}
    for _ in range(a.rounds):
        for name, pipe in search.items():
            pipe.reset()
            pipe.timer.clear()
            faces = sum(len(pipe.update(f, 40.0 * i).faces) for i, f in enumerate(empty))
            found[name].append((1000 * pipe.timer.total["detect"] / len(empty), faces))
    print(f"\nsearching, {len(empty)} frames of 640x360 with no face:\n| search | detect ms per frame | faces reported |\n|---|---|---|")
    for name, rows in found.items():
        print(f"| {name} | {statistics.median(r[0] for r in rows):.3f} | {rows[0][1]} |")


if __name__ == "__main__":
    main()
