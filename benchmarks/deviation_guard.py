"""Choose the ConvLSTM's deviation guard (``stabilizer.DeviationConfig``) on real-motion *training* clips.

    python benchmarks/deviation_guard.py [--out runs/real_motion_train] [--clips 16] [--seed 1]

Renders (or reuses) the training split of the real-motion benchmark (training stills and motion,
never the benchmark's), runs the whole pipeline once with the guard off (raw and unguarded ConvLSTM
tracks), then applies each guard setting offline to those tracks and prints mean NRMSE, jitter
error and lag (% of IOD, frames). Offline is close, not exact: in the pipeline the crop follows
the guarded points, and the offline rows give the guard no face motion (it counts the face as moving:
the looser bounds of a still face, ``still_gain``, do not act; the training clips' faces always move).
The last line runs the shipped guard through the pipeline. "Each frame's deviation
alone" rows are the previous release's guard (``limit_deviation`` with a bound of 0.006).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from real_motion import ROOT, build, run
from stableface.evaluate import accuracy
from stableface.pipeline import PipelineConfig
from stableface.points import Scorer
from stableface.stabilizer import DEVIATION, DeviationConfig, DeviationGuard, limit_deviation


def guarded(unguarded: np.ndarray, raw: np.ndarray, cfg: DeviationConfig | float) -> np.ndarray:
    """A (T, K, 2) ConvLSTM track through a guard (a float: the previous per-frame bound), a frame at a time."""
    guard = DeviationGuard(cfg) if isinstance(cfg, DeviationConfig) else None
    out = []
    for u, r in zip(unguarded, raw):
        if not (np.isfinite(u).all() and np.isfinite(r).all()):  # the track ended: a new one starts unguarded
            out.append(u)
            if guard is not None:
                guard.reset()
            continue
        out.append(guard(u, r) if guard is not None else limit_deviation(u, r, cfg))
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT / "shared" / "data" / "300w_train")
    ap.add_argument("--videos", type=Path, default=ROOT / "shared" / "videos")
    ap.add_argument("--out", type=Path, default=Path("runs/real_motion_train"))
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    paths = build(args.out, args.data, args.videos, args.clips, args.frames, args.seed, split="train")
    gts = [np.load(p.with_suffix(".npy")) for p in paths]
    tracks: dict = {}
    run(paths, {"none": PipelineConfig(stabilizer="none"), "convlstm": PipelineConfig(stabilizer="convlstm", deviation=None)},
        log=lambda s: None, tracks=tracks)
    scorer = Scorer.build()

    def score(ts):
        rows = [accuracy(t, g, scorer) for t, g in zip(ts, gts)]
        return tuple(float(np.mean([r[k] for r in rows])) for k in ("nrmse", "jitter_error", "lag_frames"))

    print(f"{len(paths)} training clips x {args.frames} frames; % of IOD; offline on the unguarded network's tracks")
    print("| guard | NRMSE % | jitter error % | lag (frames) |")
    print("|---|---|---|---|")
    rows = {"raw": tracks["none"], "none (the network's output)": tracks["convlstm"]}
    for name, tr in rows.items():
        m = score(tr)
        print(f"| {name} | {m[0]:.3f} | {m[1]:.4f} | {m[2]:.2f} |")
    for limit in (0.004, 0.006, 0.01):
        m = score([guarded(u, r, limit) for u, r in zip(tracks["convlstm"], tracks["none"])])
        print(f"| each frame's deviation alone, bound {limit} | {m[0]:.3f} | {m[1]:.4f} | {m[2]:.2f} |")
    for drift, rate, limit in itertools.product((0.002, 0.003, 0.004), (0.35, 0.5, 0.7), (0.01, 0.015, 0.02, 0.03)):
        cfg = DeviationConfig(drift=drift, rate=rate, limit=limit)
        m = score([guarded(u, r, cfg) for u, r in zip(tracks["convlstm"], tracks["none"])])
        mark = " (shipped)" if cfg == DEVIATION else ""
        print(f"| drift {drift}, rate {rate}, limit {limit}{mark} | {m[0]:.3f} | {m[1]:.4f} | {m[2]:.2f} |")
    res = run(paths, {"none": PipelineConfig(stabilizer="none"), "shipped": PipelineConfig(stabilizer="convlstm")},
              log=lambda s: None)
    print(f"\nthrough the pipeline: raw {res['none']['nrmse']:.3f} / {res['none']['jitter_error']:.4f}; "
          f"the shipped guard {res['shipped']['nrmse']:.3f} / {res['shipped']['jitter_error']:.4f} (NRMSE / jitter error %)")


if __name__ == "__main__":
    main()
