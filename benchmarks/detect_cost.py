"""The detection stage's time per frame while tracking, at ``--redetect-every 10`` (the default): the
shipped detectors merged at every re-detection (two releases ago) against one of them per
re-detection, in turn (``UnionDetector.redetect``), without and with the full-range model's tiles
of the frame in the turn (``PipelineConfig.detect_tiles``): tiles of the frame's shorter side (wide frames),
then also tiles of half that side with the sweep after a search (this release). Same run, interleaved
rounds; ``Pipeline.timer``'s ``detect`` stage over every frame of the clips.

    python benchmarks/detect_cost.py [--rounds 3] [--videos DIR] [--wide]   # default: the shared clips

``--wide`` pads every frame to 16:9 with grey borders (the shared clips are square, where no tile
runs). Last, a search table: 50 frames of a smooth random texture at 640x360 (no face), where every
frame is searched, without and with the tiles.
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


def frames(path: Path, wide: bool):
    """The clip's frames; ``wide``: each padded left and right with grey to 16:9 (a 512x512 clip becomes
    910x512), where the full-range model's tiles run."""
    cap = cv2.VideoCapture(str(path))
    while True:
        ok, f = cap.read()
        if not ok:
            break
        h, w = f.shape[:2]
        if wide and w * 9 < h * 16:
            pad = (round(h * 16 / 9) - w) // 2
            f = cv2.copyMakeBorder(f, 0, 0, pad, pad, cv2.BORDER_CONSTANT, value=(110, 110, 110))
        yield f
    cap.release()


def run(pipe: Pipeline, clips: list[Path], wide: bool = False) -> tuple[float, float, int, int, int]:
    """detect ms per frame, detections per frame, frames, track ids over all clips, frames without a face."""
    pipe.timer.clear()
    n = ids = empty = 0
    for c in clips:
        pipe.reset()
        seen = set()
        for i, f in enumerate(frames(c, wide)):  # (serially: the re-detections run in this thread, timed)
            faces = pipe.update(f, 40.0 * i).faces
            seen.update(fc.id for fc in faces)
            empty += not faces
            n += 1
        ids += len(seen)
    return 1000 * pipe.timer.total["detect"] / n, pipe.timer.count["detect"] / n, n, ids, empty


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "videos")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--wide", action="store_true", help="Pad every frame to 16:9 (grey borders), where the tiles run.")
    a = ap.parse_args()
    clips = sorted(a.videos.glob("*.mp4"))
    cfg = PipelineConfig(stabilizer="none", detect_tiles=False)
    plain = Pipeline.from_weights(device="cpu", config=cfg)
    tiles = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer="none"))
    one = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer="none"))
    one.detector.levels = one.detector.levels[:1]  # the previous release: tiles of the frame's shorter side only,
    one.detector.sweep = None  # and no sweep after a search
    both = Pipeline.from_weights(device="cpu", config=cfg)
    both.detector = _AllAtOnce(both.detector)
    res: dict[str, list] = {"every model at every re-detection": [], "one model per re-detection, in turn": [],
                            "one model per re-detection, in turn, tiles of the shorter side": [],
                            "the same with half-height tiles and the sweep (shipped)": []}
    sizes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in (next(frames(c, a.wide)) for c in clips)})
    for _ in range(a.rounds):
        for name, pipe in zip(res, (both, plain, one, tiles)):
            res[name].append(run(pipe, clips, a.wide))
    print(f"{platform.machine()}, {os.cpu_count()} CPUs; {len(clips)} clips ({', '.join(sizes)}), {res[name][0][2]} frames, "
          f"redetect every {cfg.redetect_every}; medians of {a.rounds} interleaved rounds")
    print("| re-detection | detect ms per frame | detections per frame | track ids (one person per clip) | frames without a face |")
    print("|---|---|---|---|---|")
    for name, rows in res.items():
        print(f"| {name} | {statistics.median(r[0] for r in rows):.3f} | {rows[0][1]:.3f} | {rows[0][3]} | {rows[0][4]} |")
    a_, b_, c_, d_ = (statistics.median(r[0] for r in rows) for rows in res.values())
    print(f"in turn / every model: {b_ / a_:.2f}x; with tiles / without: {c_ / b_:.2f}x; shipped / without tiles: "
          f"{d_ / b_:.2f}x; shipped / tiles of the shorter side: {d_ / c_:.2f}x")
    # searching: frames with no face (a smooth random texture, 640x360), where every frame is searched
    import numpy as np

    rng = np.random.default_rng(0)
    empty = [cv2.GaussianBlur(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), (0, 0), 6) for _ in range(50)]
    search = {"without tiles": plain, "tiles of the shorter side": one, "both levels (shipped)": tiles}
    found: dict[str, list] = {name: [] for name in search}
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
