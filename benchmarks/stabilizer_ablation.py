"""The paper's Tables 3-4 for our stabilizer: Theta, Theta_PDC and L2 vs Jitter loss.

    python benchmarks/stabilizer_ablation.py [--epochs 2] [--out runs/ablation] [--only theta=1.5,l2]

Every variant is the shipped recipe (``stableface finetune`` defaults) with one setting changed,
trained for ``--epochs`` epochs over the shipped backbone, in one process that computes the
backbone heatmaps once. Each variant reports, with its own Theta_PDC for decoding:
* the finetune validation (100 validation images x 30 frames): still faces with noise sigma 10
  (jitter = std over time of the error, NME) and drifting faces with noise sigma 5 (NME,
  jitter error), all % of inter-ocular distance;
* the Allan deviation (% IOD) of the whole pipeline on the real clips in ``--videos``;
* NME x still jitter, the analogue of the paper's NRMSE x MCV.
A variant whose ``result.json`` exists is not retrained (the run can be resumed after a stop).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from stableface.evaluate import video_stability
from stableface.pipeline import Pipeline, PipelineConfig
from stableface.training.finetune import FinetuneConfig, export_checkpoint, train
from stableface.weights import resolve

ROOT = Path(__file__).resolve().parents[2]

VARIANTS: dict[str, dict] = {
    "theta=0": {"theta": 0.0}, "theta=0.5": {"theta": 0.5}, "theta=1 (default)": {}, "theta=1.5": {"theta": 1.5},
    "theta=2": {"theta": 2.0},
    "pdc=0": {"pdc_threshold": 0.0}, "pdc=0.1": {"pdc_threshold": 0.1}, "pdc=0.4": {"pdc_threshold": 0.4},
    "l2": {"loss": "l2"},
}


def slug(name: str) -> str:
    return name.split(" ")[0].replace("=", "_")


def clips_allan(stabilizer: Path, videos: list[Path], threshold: float) -> tuple[float, float]:
    pipes = {k: Pipeline.from_weights(stabilizer_weights=stabilizer, device="cpu",
                                      config=PipelineConfig(stabilizer=k, pdc_threshold=threshold))
             for k in ("none", "convlstm")}
    rows = [video_stability(str(v), pipes) for v in videos]
    return (float(np.mean([r["none"]["allan_dev_pct_iod"] for r in rows])),
            float(np.mean([r["convlstm"]["allan_dev_pct_iod"] for r in rows])))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT / "shared" / "data" / "300w_train")
    ap.add_argument("--videos", type=Path, default=ROOT / "shared" / "videos")
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--only", default="", help="Comma-separated variant names (default: all).")
    ap.add_argument("--limit", type=int, default=0, help="Use only this many training images (smoke runs).")
    ap.add_argument("--hidden", type=int, default=FinetuneConfig.hidden, help="Hidden channels per landmark.")
    ap.add_argument("--sequences", default="synthetic", help="synthetic, real-motion or both (finetune --sequences).")
    args = ap.parse_args()
    names = [n for n in VARIANTS if not args.only or n in args.only.split(",") or slug(n) in args.only.split(",")]
    base = FinetuneConfig(data=str(args.data), backbone=str(resolve().backbone), out="", epochs=args.epochs, hidden=args.hidden,
                          limit=args.limit, val_images=min(100, args.limit) if args.limit else 100,
                          sequences=args.sequences)
    videos = sorted(args.videos.glob("*.mp4")) if args.videos.exists() else []
    cache: dict = {}
    results = {}
    for name in names:
        out = args.out / slug(name)
        done = out / "result.json"
        if done.exists():
            results[name] = json.loads(done.read_text())
            continue
        cfg = replace(base, out=str(out), **VARIANTS[name])
        t0 = time.perf_counter()
        print(f"== {name}: training {cfg.epochs} epochs", flush=True)
        m = train(cfg, log=lambda s: print("  " + s, flush=True), cache=cache)
        export_checkpoint(out / "last.pt", out / "stabilizer.onnx")
        raw_allan, allan = clips_allan(out / "stabilizer.onnx", videos, cfg.pdc_threshold) if videos else (float("nan"),) * 2
        res = {"config": VARIANTS[name], "validation": m, "clips_raw_allan": raw_allan, "clips_allan": allan,
               "minutes": (time.perf_counter() - t0) / 60}
        done.write_text(json.dumps(res, indent=2))
        results[name] = res
    print(f"\n{args.epochs} epochs per variant; validation: 100 images x 30 frames; clips: {len(videos)} real clips")
    print("| variant | still jitter % (raw) | still NME % (raw) | NME x jitter | drift NME % (raw) | drift jitter error % (raw) "
          "| clips Allan % IOD (raw) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        v = r["validation"]
        print(f"| {name} | {v['still_stab_jitter']:.3f} ({v['still_raw_jitter']:.3f}) | {v['still_stab_nme']:.2f} "
              f"({v['still_raw_nme']:.2f}) | {v['still_stab_nme'] * v['still_stab_jitter']:.2f} | {v['drift_stab_nme']:.2f} "
              f"({v['drift_raw_nme']:.2f}) | {v['drift_stab_jitter_error']:.3f} ({v['drift_raw_jitter_error']:.3f}) | "
              f"{r['clips_allan']:.3f} ({r['clips_raw_allan']:.3f}) |")


if __name__ == "__main__":
    main()
