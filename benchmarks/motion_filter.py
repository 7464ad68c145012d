"""The stabilizer's face-motion filter, on training sequences: jitter error and NME of a finetuned
ConvLSTM for a grid of One Euro settings (min_cutoff x beta), as ``finetune --tune-motion`` tables
them, on a wider grid.

    python benchmarks/motion_filter.py RUNS_DIR [--backbone B] [--sequences 300]

RUNS_DIR is a finetune's ``OUTPUT.runs`` folder: its ``last.pt`` and cached ``sequences.npz`` (the
real-motion training sequences come last in it). Nothing here sees a validation image or the
benchmark's clips, so a setting chosen from this table is chosen on training data.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from stableface.backbone import HeatmapBackbone
from stableface.stabilizer import MotionConfig
from stableface.training.convlstm import ConvLSTM
from stableface.training.finetune import FinetuneConfig, tune_motion

GRID = [(mc, beta) for mc in (1.0, 2.0, 4.0, 8.0, 16.0) for beta in (0.3, 1.0, 3.0, 10.0)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path)
    ap.add_argument("--backbone", type=Path, help="default: the one the finetune used")
    ap.add_argument("--sequences", type=int, default=300, help="real-motion training sequences scored (the last ones)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ck = torch.load(a.runs / "last.pt", map_location="cpu", weights_only=False)
    names = {f.name for f in fields(FinetuneConfig)}
    cfg = FinetuneConfig(**{k: v for k, v in ck["config"].items() if k in names})
    cfg.tune_sequences = a.sequences
    model = ConvLSTM(ck["k"], cfg.hidden)
    model.load_state_dict(ck["model"])
    bb = HeatmapBackbone(a.backbone or cfg.backbone, device="cpu", threads=1)
    z = np.load(a.runs / "sequences.npz")
    base = MotionConfig(**cfg.motion) if cfg.motion else MotionConfig()
    best, table = tune_motion(model, z["hms"], z["gts"], bb, base, cfg, GRID)
    print(f"{a.runs}: {a.sequences} real-motion training sequences, % of inter-ocular distance")
    print("| min_cutoff Hz | beta | NME % | jitter error % |")
    print("|---|---|---|---|")
    print(f"| raw | | {table[0]['raw_nme']:.3f} | {table[0]['raw_jitter_error']:.3f} |")
    for r in table:
        print(f"| {r['min_cutoff']:g} | {r['beta']:g} | {r['nme']:.3f} | {r['jitter_error']:.3f} |")
    print(f"lowest jitter error at an NME within 1% of raw's: min_cutoff {best.min_cutoff:g}, beta {best.beta:g}")


if __name__ == "__main__":
    main()
