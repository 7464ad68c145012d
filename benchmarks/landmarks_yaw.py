"""Landmark error by head yaw, and how the landmark-confidence gates behave on turned faces.

    python benchmarks/landmarks_yaw.py [--data ../shared/data/300w_train] [--videos ../shared/videos]

On the fixed validation split (every 10th image; the backbone never trained on it), |yaw| from the
ground truth (``stableface.pose``), binned 0-15, 15-30, 30-45, 45-70, over 70 degrees:

* NME (inter-ocular, continuous PDC) from the ground-truth crop (``stableface evaluate --crop gt``);
* through the pipeline's own steps from detection: the detector's best face, its first pass from the
  detection box (the start check: mean heatmap peak >= ``start_score``) and its second pass from
  the first pass's landmarks (what a track reports; it ends below ``min_score``);
* for each gate threshold: the share of faces kept and the NME of those kept, and how many faces
  with landmarks off the face (NME over 10%) would be reported.

On the shared clips (one person each): the share of tracked frames whose landmark score is under
each threshold (a gate there would drop good faces).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from stableface import ibug, metrics, pose
from stableface.crop import box_from_landmarks
from stableface.pipeline import Pipeline, PipelineConfig
from stableface.tracker import crop_from_detection

BINS = (0, 15, 30, 45, 70, 180)
BIN_NAMES = ("0-15", "15-30", "30-45", "45-70", ">70")
ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = (0.3, 0.4, 0.5, 0.55, 0.6, 0.65)


def yaw_bin(yaw: float) -> int:
    return int(np.searchsorted(BINS, abs(yaw), side="right") - 1)


def nme(p: np.ndarray, gt: np.ndarray) -> float:
    return float(metrics.nme(p, gt, float(ibug.interocular(gt))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "300w_train")
    ap.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "videos")
    ap.add_argument("--weights", default=None, help="Another backbone .onnx or weight set (e.g. accurate).")
    args = ap.parse_args()
    pipe = Pipeline.from_weights(args.weights, device="cpu", config=PipelineConfig(stabilizer="none"))
    scale = pipe.backbone.crop_scale
    rows = []  # yaw, gt-crop NME, detected, first-pass score, NME, score, yaw from the predicted landmarks
    for f in ibug.split(ibug.list_annotated(args.data))[1]:
        img, gt = cv2.imread(str(f)), ibug.read_pts(f.with_suffix(".pts"))
        yaw = pose.yaw_degrees(gt, img.shape[1], img.shape[0])
        box = box_from_landmarks(gt, scale)
        p, _ = pipe.decoder(pipe.backbone(pipe._crops(img, [box]))[0], box)
        dets = pipe.detector.detect(img)
        if not dets:
            rows.append((yaw, nme(p, gt), False, 0.0, np.inf, 0.0, 0.0))
            continue
        c = crop_from_detection(dets[0])
        p1, s1 = pipe.decoder(pipe._heatmaps(pipe._crops(img, [c]))[0], c)
        c2 = box_from_landmarks(p1, scale, rotate=pipe.config.rotate_crops)
        p2, s2 = pipe.decoder(pipe._heatmaps(pipe._crops(img, [c2]))[0], c2)
        rows.append((yaw, nme(p, gt), True, float(np.mean(s1)), nme(p2, gt), float(np.mean(s2)), pose.face_yaw(p2)))
    r = np.array(rows, dtype=float)
    bins = np.array([yaw_bin(y) for y in r[:, 0]])
    print(f"{len(r)} validation faces; start_score {pipe.config.start_score}, min_score {pipe.config.min_score}\n")
    print("| abs(yaw) | faces | NME, ground-truth crop | detected | NME from detection | mean landmark score "
          "| faces with NME > 10% | abs(yaw) from the predicted landmarks: mean, max |")
    print("|---|---|---|---|---|---|---|---|")
    for b, name in enumerate(BIN_NAMES):
        m = bins == b
        if not m.any():
            print(f"| {name} | 0 | - | - | - | - | - | - |")
            continue
        d = m & (r[:, 2] > 0)
        print(f"| {name} | {m.sum()} | {100 * r[m, 1].mean():.2f}% | {d.sum()} | {100 * r[d, 4].mean():.2f}% "
              f"| {r[d, 5].mean():.3f} (min {r[d, 5].min():.3f}) | {(r[d, 4] > 0.10).sum()} "
              f"| {np.abs(r[d, 6]).mean():.1f}, {np.abs(r[d, 6]).max():.1f} |")
    print("\nGates on the first pass's mean landmark score (the start check), then on the second pass's (the track's):\n")
    print("| threshold | kept, by abs(yaw) bin | NME of kept faces | faces with NME > 10% kept |")
    print("|---|---|---|---|")
    det = r[:, 2] > 0
    for t in THRESHOLDS:
        keep = det & (r[:, 3] >= t) & (r[:, 5] >= t)
        per_bin = ", ".join(f"{name}: {(keep & (bins == b)).sum()}/{(det & (bins == b)).sum()}"
                            for b, name in enumerate(BIN_NAMES) if (bins == b).any())
        print(f"| {t} | {per_bin} | {100 * r[keep, 4].mean():.2f}% | {(keep & (r[:, 4] > 0.10)).sum()} "
              f"of {(det & (r[:, 4] > 0.10)).sum()} |")

    scores, yaws = [], []
    for v in sorted(args.videos.glob("*.mp4")):
        pipe.reset()
        cap = cv2.VideoCapture(str(v))
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            res = pipe.update(frame, i * 40.0)
            scores += [fc.score for fc in res.faces]
            yaws += [abs(pose.face_yaw(fc.landmarks)) for fc in res.faces]
            i += 1
        cap.release()
    s = np.array(scores)
    print(f"\nShared clips: {len(s)} tracked faces; landmark score mean {s.mean():.3f}, min {s.min():.3f}; share under "
          + ", ".join(f"{t}: {100 * (s < t).mean():.2f}%" for t in THRESHOLDS))
    y = np.array(yaws)
    print(f"abs(yaw) from the tracked landmarks: mean {y.mean():.1f}, 99th percentile {np.percentile(y, 99):.1f}, "
          f"max {y.max():.1f} degrees")


if __name__ == "__main__":
    main()
