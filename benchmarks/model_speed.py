"""Per-face latency: backbone, one ConvLSTM step, and the whole stabilizer update on a moving face.

    python benchmarks/model_speed.py [--runs 300]

Each figure is the median of many runs after warm-up. A fixed reference op (a 256x256 float32
matrix product in numpy, single call) is timed in the same run, so the ratio column can be
compared across machines.
"""

from __future__ import annotations

import argparse
import os
import platform

import cv2
import numpy as np

from stableface.backbone import HeatmapBackbone
from stableface import codec
from stableface.crop import CropBox
from stableface import grid
from stableface.stabilizer import ConvLSTMStabilizer, ConvLSTMStep, Decoder
from stableface.weights import resolve
from timing import median_ms  # noqa: E402 (benchmarks/timing.py)


TAIL = 1e-30
"""Encoded Gaussians are cut to zero below this. A backbone's ReLU maps hold exact zeros and nothing near
this small (the smallest positive value on a real face's maps: 9.5e-07); a Gaussian's far tail holds
denormal floats (under 1.2e-38) and values whose products in the ConvLSTM are denormal, and both send the
step down the CPU's slow path (the row "with its Gaussian tails" shows how far: on an Intel Xeon, 4.6x)."""


def real_like(maps: np.ndarray) -> np.ndarray:
    """Encoded heatmaps with their far tails (under ``TAIL``) set to zero, as a backbone's maps have them."""
    return np.where(maps < TAIL, 0.0, maps).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    args = ap.parse_args()
    ws = resolve()
    rng = np.random.default_rng(0)
    a = rng.random((256, 256), dtype=np.float32)
    ref = median_ms(lambda: a @ a, args.runs)
    bb = HeatmapBackbone(ws.backbone, "cpu", args.threads)
    crop = rng.integers(0, 255, size=(1, bb.size, bb.size, 3), dtype=np.uint8)
    t_bb = median_ms(lambda: bb(crop), args.runs)
    step = ConvLSTMStep(ws.stabilizer, "cpu", args.threads)
    o = rng.random((1, step.k, step.heatmap_size, step.heatmap_size), dtype=np.float32)
    h, c = step.zeros(1)
    t_st = median_ms(lambda: step(o, h, c), args.runs)
    a = np.deg2rad(2.0)
    pull = np.array([[np.cos(a), -np.sin(a), 0.37], [np.sin(a), np.cos(a), -0.21]])
    t_in = median_ms(lambda: grid.warp(o[0], pull), args.runs)
    t_pdc = median_ms(lambda: codec.decode_pdc(o[0], bb.stride), args.runs)
    # the runtime stage on a face circling 12 crop px around its place, 40 frames a turn (1.9 px,
    # about half a heatmap cell, per frame): raw PDC, filtered motion, input warp, step, PDC
    stab = ConvLSTMStabilizer(step, Decoder(bb.size, bb.stride))
    box = CropBox(bb.size / 2, bb.size / 2, float(bb.size))
    pts = rng.uniform(30, bb.size - 30, size=(step.k, 2))
    turn = [2 * np.pi * i / 40 for i in range(40)]
    tails = [codec.encode(pts + [12 * np.cos(a), 12 * np.sin(a)], (step.heatmap_size,) * 2, bb.stride) for a in turn]
    moving = [real_like(m) for m in tails]  # (TAIL)
    t_tails = median_ms(lambda: step(tails[0][None].astype(np.float32), h, c), args.runs)
    t_cut = median_ms(lambda: step(moving[0][None], h, c), args.runs)
    i = iter(range(10 ** 9))

    def moving_step():
        n = next(i)
        return stab.update(moving[n % 40], box, 40.0 * n)

    t_stage = median_ms(moving_step, args.runs)
    still = ConvLSTMStabilizer(step, Decoder(bb.size, bb.stride))
    j = iter(range(10 ** 9))
    t_still = median_ms(lambda: still.update(moving[0], box, 40.0 * next(j)), args.runs)
    # the same moving face with the crop's pixels (a smooth texture moving with it): the face motion by image flow
    tex = cv2.GaussianBlur(rng.normal(128, 60, size=(bb.size + 40, bb.size + 40, 3)).astype(np.float32), (0, 0), 2.0)
    tex = np.clip(tex * 2.5 - 190, 0, 255).astype(np.uint8)
    images = [np.ascontiguousarray(tex[20 - int(12 * np.sin(a)):][:bb.size, 20 - int(12 * np.cos(a)):][:, :bb.size]) for a in turn]
    flowing = ConvLSTMStabilizer(step, Decoder(bb.size, bb.stride))
    k = iter(range(10 ** 9))
    def with_image():
        n = next(k)
        return flowing.update(moving[n % 40], box, 40.0 * n, images[n % 40])
    t_flow = median_ms(with_image, args.runs)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; onnxruntime threads "
          f"{args.threads or 'default'}; median of {args.runs} runs")
    print("| model | ms per face | ratio to reference op |")
    print("|---|---|---|")
    print(f"| reference: 256x256 float32 matmul (numpy) | {ref:.3f} | 1.0 |")
    print(f"| backbone {bb.size}x{bb.size} -> {bb.k}x{bb.heatmap_size}x{bb.heatmap_size} | {t_bb:.2f} | {t_bb / ref:.1f} |")
    print(f"| ConvLSTM step (hidden {step.hidden} per landmark) | {t_st:.2f} | {t_st / ref:.1f} |")
    print(f"| ConvLSTM step on Gaussian heatmaps, far tails cut (as a backbone's maps) | {t_cut:.2f} | {t_cut / ref:.1f} |")
    print(f"| ConvLSTM step on the same heatmaps with their Gaussian tails (denormal floats) | {t_tails:.2f} | {t_tails / ref:.1f} |")
    print(f"| exact bilinear warp of the input into the state frame ({step.k} maps) | {t_in:.2f} | {t_in / ref:.1f} |")
    print(f"| PDC decode ({step.k} maps) | {t_pdc:.2f} | {t_pdc / ref:.1f} |")
    print(f"| whole stabilizer update, moving face | {t_stage:.2f} | {t_stage / ref:.1f} |")
    print(f"| whole stabilizer update, still face | {t_still:.2f} | {t_still / ref:.1f} |")
    print(f"| whole stabilizer update, moving face, with the crop's pixels (image flow, the pipeline's path) | {t_flow:.2f} | {t_flow / ref:.1f} |")


if __name__ == "__main__":
    main()
