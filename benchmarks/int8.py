"""int8 twin vs float backbone: per-crop speed (interleaved, same run) and NME on the validation split.

    python benchmarks/int8.py [--model weights/backbone.onnx] [--data ../shared/data/300w_train]

The twin is made by ``stableface quantize`` (onnxruntime static quantization, QDQ, int8 weights per
channel, uint8 activations, 200 calibration faces from the training split) into a temporary folder.
Speed: median over 15 rounds of 50 single-crop runs on 1 onnxruntime thread (``--threads``), the two
models alternating round by round.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from stableface import evaluate as E
from stableface import ibug, onnx_util
from stableface.backbone import HeatmapBackbone
from stableface.training.quantize import calibration_crops, quantize_backbone


def flag_summary() -> str:
    flags = onnx_util.cpu_flags()
    if flags is None:
        return "unknown"
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return " ".join(have) or "none of avx2/avx512/vnni"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="weights/backbone.onnx")
    ap.add_argument("--data", default="../shared/data/300w_train")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads (0: its default)")
    a = ap.parse_args()
    data = Path(a.data)
    files = ibug.list_annotated(data)
    train, val = ibug.split(files, 10)
    fl = HeatmapBackbone(a.model, device="cpu", threads=a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        rep = quantize_backbone(a.model, out, calibration_crops(train, fl, 200))
        q = HeatmapBackbone(out, device="cpu", threads=a.threads)
        models = {"float32": fl, "int8": q}
        x = np.random.default_rng(0).integers(0, 255, (1, fl.size, fl.size, 3), dtype=np.uint8)
        ts = {n: [] for n in models}
        for _ in range(a.rounds):
            for n, m in models.items():
                for _ in range(5):
                    m(x)
                t = time.perf_counter()
                for _ in range(50):
                    m(x)
                ts[n].append((time.perf_counter() - t) / 50 * 1000)
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, flags: {flag_summary()}; onnxruntime threads {a.threads}")
        print(f"int8 heatmaps vs float on the calibration crops: max abs diff {rep['max_abs_diff']:.3g}, "
              f"mean {rep['mean_abs_diff']:.2g}")
        print("| model | ms per crop | vs float32 | NME % | median % | failures @8% |")
        print("| --- | --- | --- | --- | --- | --- |")
        base = float(np.median(ts["float32"]))
        for n, m in models.items():
            t = E.evaluate_images(val, m).table()["pdc"]
            ms = float(np.median(ts[n]))
            print(f"| {n} | {ms:.2f} | {ms / base:.2f}x | {t['nme']:.2f} | {t['median']:.2f} | {t['fr8']:.2f} |")


if __name__ == "__main__":
    main()
