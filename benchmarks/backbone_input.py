"""The backbone's input preparation (BGR uint8 crops -> normalised float32 NCHW): the previous
flip + transpose + broadcast arithmetic against ``HeatmapBackbone.prepare``, the same values.

    python benchmarks/backbone_input.py [--runs 200]

Medians of ``--runs`` calls, in turns with a 256x256 float32 numpy matmul as the reference op.
"""

from __future__ import annotations

import argparse

import numpy as np

from stableface.backbone import HeatmapBackbone
from stableface.weights import resolve
from timing import median_ms  # noqa: E402 (benchmarks/timing.py)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    bb = HeatmapBackbone(resolve().backbone, "cpu", 1)

    def before(crops):
        x = crops[..., ::-1] if bb.rgb else crops
        return (x.transpose(0, 3, 1, 2).astype(np.float32) - bb.mean) / bb.std

    a = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    print("| crops | reference matmul ms | before ms | now ms | ratio now / before |")
    print("|---|---|---|---|---|")
    for n in (1, 4):
        crops = np.random.default_rng(n).integers(0, 256, (n, bb.size, bb.size, 3), dtype=np.uint8)
        assert np.array_equal(before(crops), bb.prepare(crops))
        ref = median_ms(lambda: a @ a, args.runs)
        old = median_ms(lambda c=crops: before(c), args.runs)
        new = median_ms(lambda c=crops: bb.prepare(c), args.runs)
        print(f"| {n} | {ref:.3f} | {old:.3f} | {new:.3f} | {new / old:.2f} |")


if __name__ == "__main__":
    main()
