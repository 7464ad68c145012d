"""How far the runtime's image flow strays from the ground truth's frame-to-frame similarity.

    python benchmarks/flow_error.py [--clips runs/real_motion_train]   # clips of benchmarks/real_motion.py

Runs the shipped pipeline (ConvLSTM, image flow) through ``benchmarks/real_motion.py``'s code on
rendered real-motion clips with exact ground truth, records every similarity the flow measures
(``FaceMotion._flow_step``, source pixels, previous frame -> this one), and compares it with the
similarity fitted to the ground truth's 68 points between the same frames: the error at the
face's centroid (x, y, in inter-ocular distances), of the relative scale and of the roll (rad),
their standard deviations, and the frame-to-frame correlation of the x error. These are the
figures behind ``training.finetune.FLOW_ERROR_STD`` / ``FLOW_ERROR_CORRELATION`` (measured on the
16 training clips, ``--split train --seed 1 --clips 16 --out runs/real_motion_train``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_motion as RM  # noqa: E402

from stableface import ibug, stabilizer as S  # noqa: E402
from stableface.pipeline import PipelineConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=Path, default=Path("runs/real_motion_train"))
    args = ap.parse_args()
    clips = sorted(args.clips.glob("clip*.mp4"))
    if not clips:
        raise SystemExit(f"no clip*.mp4 in {args.clips}: render them with benchmarks/real_motion.py first")
    seen: list[tuple[float, np.ndarray | None]] = []
    step, update = S.FaceMotion._flow_step, S.FaceMotion.update

    def spy_step(self, grey, crop):
        m = step(self, grey, crop)
        seen.append((self._now, m))
        return m

    def spy_update(self, landmarks, timestamp_ms, unit, image=None, crop=None, moved=None):
        self._now = timestamp_ms
        return update(self, landmarks, timestamp_ms, unit, image, crop, moved)

    S.FaceMotion._flow_step, S.FaceMotion.update = spy_step, spy_update
    errors, failed = [], 0
    for c in clips:
        seen.clear()
        RM.run([c], {"convlstm": PipelineConfig(stabilizer="convlstm")}, log=lambda s: None)
        gt = np.load(c.with_suffix(".npy"))
        for t, m in seen:
            j = int(round(t * 25 / 1000))
            if j < 1 or j >= len(gt):
                continue
            if m is None:
                failed += 1
                continue
            g0, g1 = gt[j - 1], gt[j]
            iod = float(ibug.interocular(g1))
            exact = S.fit_similarity(g0, g1)
            c0 = g0.mean(0)[None]
            dx, dy = (S.apply_affine(m, c0) - S.apply_affine(exact, c0))[0] / iod
            ds = np.hypot(*m[:, 0]) / np.hypot(*exact[:, 0]) - 1
            dr = np.arctan2(m[1, 0], m[0, 0]) - np.arctan2(exact[1, 0], exact[0, 0])
            errors.append((dx, dy, ds, dr))
    e = np.array(errors)
    print(f"{len(clips)} clips, {len(e)} frame pairs with a flow ({failed} where the flow failed)")
    print("| error | x (IOD) | y (IOD) | scale | roll (rad) |\n|---|---|---|---|---|")
    print("| mean | " + " | ".join(f"{v:+.5f}" for v in e.mean(0)) + " |")
    print("| standard deviation | " + " | ".join(f"{v:.5f}" for v in e.std(0)) + " |")
    print(f"frame-to-frame correlation of the x error: {np.corrcoef(e[:-1, 0], e[1:, 0])[0, 1]:.2f}")


if __name__ == "__main__":
    main()
