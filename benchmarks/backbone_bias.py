"""Mean landmark error of backbones in x and y (source px) on the validation split, crop from the annotation,
of the network alone and with its calibration (``landmark_offset``).

    python benchmarks/backbone_bias.py weights/backbone.onnx [OTHER.onnx ...] [--data ../shared/data/300w_train]

A backbone whose flips mirrored the labels instead of the image feature misses by the subsets'
annotation offset in x (model card, "On real motion").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stableface import codec, ibug
from stableface.backbone import HeatmapBackbone
from stableface.crop import box_from_landmarks, to_source, warp
from stableface.video import read_image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "300w_train")
    a = ap.parse_args()
    files = ibug.split(ibug.list_annotated(a.data), 10)[1]
    for path in a.models:
        bb = HeatmapBackbone(path, device="cpu", threads=1)
        d, dc = [], []
        for f in files:
            img, gt = read_image(f), ibug.read_pts(f.with_suffix(".pts"))
            box = box_from_landmarks(gt, bb.crop_scale)
            q = codec.decode_pdc(bb(warp(img, box, bb.size)[None])[0], bb.stride)[0]
            d.append((to_source(q, box, bb.size) - gt).mean(0))
            if bb.offset is not None:  # as the runtime decodes: with the calibration
                dc.append((to_source(q + bb.offset, box, bb.size) - gt).mean(0))
        d = np.array(d)
        cal = f"; calibrated x {np.mean(dc, 0)[0]:+.2f} px, y {np.mean(dc, 0)[1]:+.2f} px" if dc else ""
        print(f"{path}: mean error x {d[:, 0].mean():+.2f} px, y {d[:, 1].mean():+.2f} px{cal} "
              f"({len(d)} validation faces, crop from the annotation)")


if __name__ == "__main__":
    main()
