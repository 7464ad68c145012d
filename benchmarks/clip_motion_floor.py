"""How much of a real clip's Allan deviation is motion, not jitter.

    python benchmarks/clip_motion_floor.py [--videos ../shared/videos]

Tracks each clip raw and with the ConvLSTM stabilizer, then smooths the raw track with a
zero-phase Gaussian over time (sigma 1, 2, 3 frames). That smoother sees the future, so it has no
lag: it is a lower bound for what a causal stabilizer can remove without trailing the face. If
even it cannot take the Allan deviation 40% below raw, the rest of the deviation is head and
mouth motion that a stabilizer must follow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stableface import ibug, metrics
from stableface.evaluate import run_tracks
from stableface.pipeline import Pipeline, PipelineConfig

ROOT = Path(__file__).resolve().parents[2]


def smooth(track: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing along time (edges reflected)."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.concatenate([track[r:0:-1], track, track[-2:-r - 2:-1]])
    return np.stack([np.tensordot(k, padded[t:t + 2 * r + 1], axes=(0, 0)) for t in range(len(track))])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=Path, default=ROOT / "shared" / "videos")
    args = ap.parse_args()
    pipes = {k: Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer=k)) for k in ("none", "convlstm")}
    sigmas = (1.0, 2.0, 3.0)
    print("| clip | raw | ConvLSTM | " + " | ".join(f"zero-phase sigma {s:g}" for s in sigmas) + " |")
    print("|---" * (3 + len(sigmas)) + "|")
    rows = []
    for v in sorted(args.videos.glob("*.mp4")):
        tr = run_tracks(str(v), pipes)
        raw = tr["none"][np.isfinite(tr["none"]).all(axis=(1, 2))]
        lstm = tr["convlstm"][np.isfinite(tr["convlstm"]).all(axis=(1, 2))]
        iod = float(ibug.interocular(raw.mean(0)))
        row = [100 * metrics.allan_deviation(t) / iod for t in [raw, lstm] + [smooth(raw, s) for s in sigmas]]
        rows.append(row)
        print(f"| {v.name} | " + " | ".join(f"{x:.3f}" for x in row) + " |")
    m = np.mean(rows, axis=0)
    print("| **mean** | " + " | ".join(f"{x:.3f} ({100 * (x / m[0] - 1):+.0f}%)" for x in m) + " |")


if __name__ == "__main__":
    main()
