"""Stability and accuracy of raw PDC, One Euro and the ConvLSTM on validation sequences and real clips.

    python benchmarks/stabilizer_eval.py [--data ../shared/data/300w_train] [--videos ../shared/videos] [--stabilizer ONNX]

Everything runs through the shipped ONNX models (the runtime path). Sequences come from the
validation images (every 10th file, never trained on) as in ``stableface finetune``:
* still: 30 frames, pixel noise sigma 10, the face does not move;
* moving: 30 frames of drift or handheld shake, noise sigma 5.
Metrics (% of inter-ocular distance): NME; jitter = std over time of the landmark error;
jitter error = mean |(p_t - p_{t-1}) - (g_t - g_{t-1})|. The One Euro filter is tuned on the
same moving and still sequences (grid over min_cutoff and beta, best NME + jitter error + jitter).
Real clips: Allan deviation (% IOD) of the whole pipeline per stabilizer.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from stableface import ibug
from stableface.metrics import sequence_metrics
from stableface.backbone import HeatmapBackbone
from stableface.crop import CropBox
from stableface.stabilizer import DEVIATION, ConvLSTMStabilizer, ConvLSTMStep, Decoder, MotionConfig, OneEuro
from stableface.training import data as D
from stableface.training.sequences import SequenceSpec, make_sequence
from stableface.weights import resolve

ROOT = Path(__file__).resolve().parents[2]


def sequences(samples, backbone, kind, noise, n_frames, seed):
    rng = np.random.default_rng(seed)
    spec = SequenceSpec(length=n_frames, size=backbone.size, crop_scale=backbone.crop_scale, noise=(noise, noise),
                        blur=0.0, motion=kind, max_speed=1.0)
    hms, gts, crops = [], [], []
    for s in samples:
        frames, gt, _ = make_sequence(s, spec, rng)
        hms.append(backbone(frames))
        gts.append(gt)
        crops.append(frames)
    return np.stack(hms), np.stack(gts), np.stack(crops)


def run_convlstm(step: ConvLSTMStep, hms: np.ndarray, size: int, stride: float, compensate: bool = True,
                 offset: np.ndarray | None = None, crops: np.ndarray | None = None, deviation=DEVIATION) -> np.ndarray:
    """The runtime stabilizer class on a fixed crop whose coordinates are the crop's own (``offset``: the
    backbone's calibration, as the pipeline's decoder adds it; ``crops``: the frames' pixels, given to
    the stabilizer as the pipeline gives them, for the face motion's image flow; ``deviation``: the guard)."""
    box = CropBox(size / 2, size / 2, float(size))
    stab = ConvLSTMStabilizer(step, Decoder(size, stride, offset=offset), None if compensate else MotionConfig(enabled=False),
                              deviation=deviation)
    out = []
    for i, seq in enumerate(hms):
        stab.reset()
        out.append(np.stack([stab.update(o, box, t * 40.0, None if crops is None else crops[i][t])[0]
                             for t, o in enumerate(seq)]))
    return np.stack(out)


def run_one_euro(raw: np.ndarray, min_cutoff: float, beta: float, unit: float, fps: float = 25.0) -> np.ndarray:
    out = np.empty_like(raw)
    for i, seq in enumerate(raw):
        f = OneEuro(min_cutoff, beta)
        for t, p in enumerate(seq):
            out[i, t] = f(p / unit, t * 1000.0 / fps) * unit
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT / "shared" / "data" / "300w_train")
    ap.add_argument("--videos", type=Path, default=ROOT / "shared" / "videos")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    ap.add_argument("--stabilizer", type=Path, default=None, help="A stabilizer .onnx other than the shipped one.")
    ap.add_argument("--weights", type=Path, default=None, help="A backbone .onnx (or weights folder) other than the shipped one.")
    args = ap.parse_args()
    ws = resolve(args.weights, args.stabilizer)
    bb = HeatmapBackbone(ws.backbone, "cpu")
    step = ConvLSTMStep(ws.stabilizer, "cpu")
    _, val_files = ibug.training_split(args.data)
    samples = D.load(val_files)
    unit = bb.size / 100.0  # the pipeline's One Euro works in units of crop side / 100
    sets = {"still": sequences(samples, bb, "still", 10.0, args.frames, 1),
            "drift": sequences(samples, bb, "drift", 5.0, args.frames, 2),
            "shake": sequences(samples, bb, "shake", 5.0, args.frames, 3)}
    decoder = Decoder(bb.size, bb.stride, offset=bb.offset)  # the pipeline's: PDC with the backbone's calibration
    raw = {k: decoder.decode(h)[0] for k, (h, _, _) in sets.items()}
    lstm = {k: run_convlstm(step, h, bb.size, bb.stride, offset=bb.offset, crops=c) for k, (h, _, c) in sets.items()}
    unguarded = {k: run_convlstm(step, h, bb.size, bb.stride, offset=bb.offset, crops=c, deviation=None)
                 for k, (h, _, c) in sets.items()}
    plain = {k: run_convlstm(step, h, bb.size, bb.stride, compensate=False, offset=bb.offset) for k, (h, _, _) in sets.items()}
    landmark_motion = {k: run_convlstm(step, h, bb.size, bb.stride, offset=bb.offset) for k, (h, _, _) in sets.items()}
    # tune One Euro honestly on the same sequences
    best, best_cost = None, float("inf")
    for mc, beta in itertools.product([0.3, 0.5, 1.0, 2.0, 4.0], [0.0, 0.01, 0.05, 0.2, 1.0]):
        cost = 0.0
        for k, (_, gt, _) in sets.items():
            m = sequence_metrics(run_one_euro(raw[k], mc, beta, unit), gt)
            cost += m["nme"] + m["jitter_error"] + m["jitter"]
        if cost < best_cost:
            best, best_cost = (mc, beta), cost
    euro = {k: run_one_euro(raw[k], *best, unit) for k in sets}
    table = {}
    for k, (_, gt, _) in sets.items():
        table[k] = {"raw": sequence_metrics(raw[k], gt), "one-euro": sequence_metrics(euro[k], gt),
                    "convlstm (no motion compensation)": sequence_metrics(plain[k], gt),
                    "convlstm (motion from the landmarks only)": sequence_metrics(landmark_motion[k], gt),
                    "convlstm (no deviation guard)": sequence_metrics(unguarded[k], gt),
                    "convlstm": sequence_metrics(lstm[k], gt)}
    print(f"{len(samples)} validation images x {args.frames} frames per set; One Euro tuned: min_cutoff={best[0]}, beta={best[1]}")
    print("| set | method | NME % | jitter % | jitter error % |")
    print("|---|---|---|---|---|")
    for k, rows in table.items():
        for name, m in rows.items():
            print(f"| {k} | {name} | {m['nme']:.2f} | {m['jitter']:.3f} | {m['jitter_error']:.3f} |")
    s = table["still"]
    print(f"\nstill faces: jitter {100 * (1 - s['convlstm']['jitter'] / s['raw']['jitter']):.0f}% lower than raw, "
          f"NME {100 * (s['convlstm']['nme'] / s['raw']['nme'] - 1):+.1f}% relative")
    clips = {}
    if args.videos.exists():
        from stableface.evaluate import video_stability
        from stableface.pipeline import Pipeline, PipelineConfig

        pipes = {k: Pipeline.from_weights(args.weights, stabilizer_weights=args.stabilizer, device="cpu", config=PipelineConfig(stabilizer=k, one_euro_min_cutoff=best[0],
                                                                              one_euro_beta=best[1]))
                 for k in ("none", "one-euro", "convlstm")}
        print("\n| clip | raw Allan dev % IOD | One Euro | ConvLSTM | ConvLSTM vs raw |")
        print("|---|---|---|---|---|")
        for v in sorted(args.videos.glob("*.mp4")):
            r = video_stability(str(v), pipes)
            clips[v.name] = r
            a, e, c = (r[k]["allan_dev_pct_iod"] for k in ("none", "one-euro", "convlstm"))
            print(f"| {v.name} | {a:.3f} | {e:.3f} | {c:.3f} | {100 * (c / a - 1):+.0f}% |")
        mean = {k: float(np.mean([r[k]["allan_dev_pct_iod"] for r in clips.values()])) for k in ("none", "one-euro", "convlstm")}
        print(f"| **mean** | {mean['none']:.3f} | {mean['one-euro']:.3f} | {mean['convlstm']:.3f} | "
              f"{100 * (mean['convlstm'] / mean['none'] - 1):+.0f}% |")
    if args.json:
        args.json.write_text(json.dumps({"sequences": table, "one_euro": best, "clips": clips}, indent=2))


if __name__ == "__main__":
    main()
