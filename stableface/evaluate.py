"""``stableface evaluate``: accuracy on annotated images, stability on videos.

* Image folders with iBUG ``.pts`` beside each image: NME (inter-ocular), median, failure rates
  at 8% / 10%, AUC at 10%, for PDC and argmax decoding. ``--crop gt`` crops from the annotated
  landmark box (the usual protocol); ``--crop detector`` runs the whole pipeline from detection.
* Videos without annotations: Allan deviation (Eq. 11, % of the mean inter-ocular distance)
  and MCV (Eq. 9-10), for each stabilizer asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stableface import codec, ibug, metrics
from stableface.backbone import HeatmapBackbone
from stableface.crop import box_from_landmarks, to_source, warp
from stableface.video import open_source, read_image


@dataclass
class ImageReport:
    n: int
    errors: dict[str, np.ndarray]  # decoder -> per-image NME (fraction)
    missed: int = 0  # images where the detector found no face (--crop detector)

    def table(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, e in self.errors.items():
            out[name] = {"nme": float(e.mean() * 100), "median": float(np.median(e) * 100),
                         "fr8": metrics.failure_rate(e, 0.08) * 100, "fr10": metrics.failure_rate(e, 0.10) * 100,
                         "auc10": metrics.auc(e, 0.10) * 100, "n": int(len(e))}
        return out


def annotated_images(root: Path, every: int = 0) -> list[Path]:
    """Annotated images under ``root``: all, or the validation split (every ``every``-th)."""
    files = ibug.list_annotated(root)
    return ibug.split(files, every)[1] if every else files


def evaluate_images(files: list[Path], backbone: HeatmapBackbone, crop: str = "gt", pipeline_factory=None,
                    pdc_threshold: float = codec.DEFAULT_PDC_THRESHOLD,
                    progress: Callable[[int, int], None] | None = None) -> ImageReport:
    errors: dict[str, list[float]] = {"pdc": [], "argmax": []}
    missed = 0
    pipe = pipeline_factory() if crop == "detector" else None
    for i, f in enumerate(files):
        img, gt = read_image(f), ibug.read_pts(f.with_suffix(".pts"))
        iod = float(ibug.interocular(gt))
        if pipe is None:
            box = box_from_landmarks(gt, backbone.crop_scale)
            hm = backbone(warp(img, box, backbone.size)[None])[0]
            preds = {"pdc": codec.decode_pdc(hm, backbone.stride, pdc_threshold)[0],
                     "argmax": codec.decode_argmax(hm, backbone.stride)[0]}
            for name, p in preds.items():
                errors[name].append(float(np.linalg.norm(to_source(p, box, backbone.size) - gt, axis=-1).mean() / iod))
        else:
            pipe.reset()
            res = pipe.update(img, 0.0)
            if not res.faces:
                missed += 1
                errors["pdc"].append(float("inf"))
            else:
                best = min(res.faces, key=lambda fc: np.linalg.norm(fc.landmarks.mean(0) - gt.mean(0)))
                errors["pdc"].append(float(np.linalg.norm(best.landmarks - gt, axis=-1).mean() / iod))
        if progress:
            progress(i + 1, len(files))
    if pipe is not None:
        errors.pop("argmax")
    return ImageReport(len(files), {k: np.array(v) for k, v in errors.items()}, missed)


def video_stability(path: str, pipelines: dict[str, object]) -> dict[str, dict[str, float]]:
    """Allan deviation and CVar of the first face's track for each pipeline (frames without it are skipped)."""
    out = {}
    for name, pipe in pipelines.items():
        pts = []
        with open_source(path) as src:
            for _, res in pipe.stream(src):
                if res.faces:
                    pts.append(res.faces[0].landmarks)
        if len(pts) < 2:
            out[name] = {"frames": len(pts), "allan_dev_px": float("nan"), "allan_dev_pct_iod": float("nan"), "cvar": float("nan")}
            continue
        track = np.stack(pts).astype(np.float64)
        iod = float(ibug.interocular(track.mean(0))) if track.shape[1] == ibug.K else float("nan")
        dev = metrics.allan_deviation(track)
        out[name] = {"frames": len(pts), "allan_dev_px": dev, "allan_dev_pct_iod": 100 * dev / iod,
                     "cvar": metrics.cvar(track)}
    return out
