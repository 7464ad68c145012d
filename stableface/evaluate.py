"""``stableface evaluate``: accuracy on annotated images and videos, stability on any video.

* (a) Image folders with an annotation file (iBUG ``.pts``) beside each image: NME, median,
  failure rates at 8% / 10%, AUC at 10%, for PDC and argmax decoding. ``--crop gt`` crops from
  the annotated landmark box (the usual protocol); ``--crop detector`` runs the whole pipeline.
* (b) Videos with per-frame annotations (a ``.npy`` of (T, K, 2), or a folder of one ``.pts``
  per frame): NME, NRMSE, jitter and second-difference error, LDEQ's NMJ, FHR's
  time delay and second difference, lag in frames, Allan deviation and MCV per stabilizer. A ``.pts`` file's
  frame is the last number in its name (``frame_000012.pts`` and ``000012.pts`` are frame 12);
  when the smallest number is 1 the names count from 1, as 300-VW's ``000001.pts`` do, and
  ``000001.pts`` is frame 0. A frame without a file is a gap: a NaN row, not scored, and
  counted in ``annotation_missing``.
* (c) Videos without annotations: Allan deviation (Eq. 11, % of the mean inter-ocular
  distance) and MCV (Eq. 9-10), per stabilizer.

Annotations in another layout are matched through a :class:`stableface.points.Scorer`
(correspondence map, point subset, normalisation).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stableface import codec, ibug, metrics
from stableface.backbone import HeatmapBackbone
from stableface.crop import box_from_landmarks, to_source, warp
from stableface.ibug import AnnotationError
from stableface.points import Scorer
from stableface.stabilizer import Decoder
from stableface.video import VIDEO_EXTS, open_source, read_image

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
                    progress: Callable[[int, int], None] | None = None, scorer: Scorer | None = None) -> ImageReport:
    scorer = scorer or Scorer.build()
    errors: dict[str, list[float]] = {"pdc": [], "argmax": []}
    missed = 0
    pipe = pipeline_factory() if crop == "detector" else None
    # the runtime's decoders: PDC with the backbone's calibration, argmax without
    decoders = {"pdc": Decoder(backbone.size, backbone.stride, threshold=pdc_threshold, offset=backbone.offset),
                "argmax": Decoder(backbone.size, backbone.stride, method="argmax")}
    for i, f in enumerate(files):
        img, gt = read_image(f), ibug.read_pts(f.with_suffix(".pts"))
        _enough_points(f.with_suffix(".pts"), gt, scorer)
        norm = float(scorer.normaliser(gt))

        def err(p: np.ndarray) -> float:
            return float(metrics.nme(*scorer.pairs(p, gt), norm))

        if pipe is None:
            box = box_from_landmarks(gt[scorer.full.theirs], backbone.crop_scale)
            hm = backbone(warp(img, box, backbone.size)[None])[0]
            for name, dec in decoders.items():
                errors[name].append(err(to_source(dec.decode(hm)[0], box, backbone.size)))
        else:
            pipe.reset()
            res = pipe.update(img, 0.0)
            if not res.faces:
                missed += 1
                errors["pdc"].append(float("inf"))
            else:
                errors["pdc"].append(min(err(fc.landmarks) for fc in res.faces))
        if progress:
            progress(i + 1, len(files))
    if pipe is not None:
        errors.pop("argmax")
    return ImageReport(len(files), {k: np.array(v) for k, v in errors.items()}, missed)


def _enough_points(path: Path, gt: np.ndarray, scorer: Scorer) -> None:
    need = scorer.full.annotation_points
    if gt.shape[-2] < need:
        raise AnnotationError(f"{path}: {gt.shape[-2]} points; the {scorer.full.name} map needs {need} (choose another --map)")


def frame_numbers(files: list[Path]) -> list[int]:
    """The frame index of each per-frame ``.pts``: the last number in its name, minus 1 when the
    smallest is 1 (names that count from 1, like 300-VW's). Raises AnnotationError naming the file."""
    numbers = []
    for f in files:
        found = re.findall(r"\d+", f.stem)
        if not found:
            raise AnnotationError(f"{f}: no frame number in the file name (expected e.g. 000012.pts)")
        numbers.append(int(found[-1]))
    first: dict[int, Path] = {}
    for f, n in zip(files, numbers):
        if n in first:
            raise AnnotationError(f"{f}: the same frame number ({n}) as {first[n].name}")
        first[n] = f
    offset = 1 if min(numbers) == 1 else 0
    return [n - offset for n in numbers]


def find_annotations(video: Path) -> Path | None:
    """Per-frame annotations of a video, by convention: ``NAME.npy`` beside it, a folder ``NAME/``
    or ``NAME_annot/`` of ``.pts`` files, or (300-VW layout) ``annot/`` beside ``vid.avi``."""
    for cand in (video.with_suffix(".npy"), video.with_suffix(""), video.with_name(video.stem + "_annot"),
                 video.parent / "annot"):
        if cand.suffix == ".npy" and cand.is_file():
            return cand
        if cand.is_dir() and any(cand.glob("*.pts")):
            return cand
    return None


def load_annotation_track(path: str | Path, scorer: Scorer | None = None) -> np.ndarray:
    """(T, K, 2) float64 from a ``.npy`` (NaN rows allowed: not annotated) or a folder of per-frame
    ``.pts`` matched to frames by the number in their names (:func:`frame_numbers`; a missing
    frame is a NaN row). A ``.pts`` that is malformed, or has fewer points than ``scorer``'s map
    needs or another count than the others, raises AnnotationError naming it."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.pts"))
        if not files:
            raise AnnotationError(f"{path}: no .pts files")
        index = frame_numbers(files)
        tracks = [ibug.read_pts(f) for f in files]
        if scorer is not None:
            for f, t in zip(files, tracks):
                _enough_points(f, t, scorer)
        counts = [len(t) for t in tracks]
        usual = max(set(counts), key=counts.count)
        for f, c in zip(files, counts):
            if c != usual:
                raise AnnotationError(f"{f}: {c} points, the other .pts files here have {usual}")
        out = np.full((max(index) + 1, usual, 2), np.nan)
        out[index] = np.stack(tracks)
        return out
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npy ({exc})") from None
    if arr.ndim != 3 or arr.shape[-1] != 2:
        raise ValueError(f"{path}: annotations must have shape (frames, points, 2), not {arr.shape}")
    return arr.astype(np.float64)


def run_tracks(path: str, pipelines: dict[str, object], gt: np.ndarray | None = None,
               scorer: Scorer | None = None) -> dict[str, np.ndarray]:
    """(T, 68, 2) landmarks per pipeline, NaN where no face was tracked. Row ``i`` is the source's
    frame ``i``: a frame that could not be decoded is a NaN row, so the annotations stay aligned.
    With annotations the face nearest to the annotated one is taken, else the first."""
    return track_source(path, pipelines, gt, scorer)[0]


def track_source(path: str, pipelines: dict[str, object], gt: np.ndarray | None = None,
                 scorer: Scorer | None = None) -> tuple[dict[str, np.ndarray], int]:
    """``run_tracks``'s tracks, and how many of the source's frames could not be decoded."""
    out, undecoded = {}, 0
    for name, pipe in pipelines.items():
        rows: dict[int, np.ndarray] = {}
        last = -1
        with open_source(path) as src:
            for _, res in pipe.stream(src):
                i = last = res.frame
                faces = [f.landmarks for f in res.faces]
                if not faces:
                    continue
                if gt is not None and scorer is not None and i < len(gt) and np.isfinite(gt[i]).all():
                    rows[i] = min(faces, key=lambda p: float(np.linalg.norm(np.subtract(*scorer.pairs(p, gt[i])), axis=-1).mean()))
                else:
                    rows[i] = faces[0]
            n = max([last, *src.unreadable]) + 1
            if src.incomplete:
                undecoded = len(src.unreadable)
                logging.getLogger("stableface").warning("%s: %d frames could not be decoded; they are not scored",
                                                        path, undecoded)
        track = np.full((n, ibug.K, 2), np.nan)
        for i, p in rows.items():
            track[i] = p
        out[name] = track
    return out, undecoded


def _valid(track: np.ndarray) -> np.ndarray:
    return np.isfinite(track).all(axis=(-1, -2))


def stability(track: np.ndarray) -> dict[str, float]:
    """Allan deviation (px and % of the mean inter-ocular distance) and CVar over the tracked frames."""
    t = track[_valid(track)]
    if len(t) < 2:
        return {"frames": len(t), "allan_dev_px": float("nan"), "allan_dev_pct_iod": float("nan"), "cvar": float("nan")}
    iod = float(ibug.interocular(t.mean(0)))
    dev = metrics.allan_deviation(t)
    return {"frames": len(t), "allan_dev_px": dev, "allan_dev_pct_iod": 100 * dev / iod, "cvar": metrics.cvar(t)}


def accuracy(track: np.ndarray, gt: np.ndarray, scorer: Scorer, max_lag: int = 10) -> dict[str, float]:
    """Accuracy and stability against the annotations, over frames that are tracked and annotated.

    ``nme``, ``nrmse``, ``jitter_error``, ``second_diff_error``: % of the normaliser. ``nmj``
    (LDEQ), ``time_delay`` (FHR, frames) and ``fhr_second_diff`` (% of the annotation box's
    longer side) keep their papers' normalisation, the box of all annotated points
    (see :mod:`stableface.metrics`). ``lag_frames``: the shift, within ``max_lag``, that best
    aligns the predicted motion with the annotated one (positive: behind). Frames the tracker
    missed count in ``missed``; the video metrics use the consecutive pairs (triples) of frames
    that are all tracked and annotated. NaN where there are none.
    """
    n = min(len(track), len(gt))
    p, g = scorer.pairs(track[:n], gt[:n])
    norm = scorer.normaliser(gt[:n])
    annotated = np.isfinite(g).all(axis=(-1, -2)) & np.isfinite(norm)
    ok = annotated & np.isfinite(p).all(axis=(-1, -2))
    both = ok[1:] & ok[:-1]
    out = {"annotated": int(annotated.sum()), "missed": int((annotated & ~ok).sum()), "nme": float("nan"),
           "nrmse": float("nan"), "jitter_error": float("nan")}
    if ok.any():
        out["nme"] = 100 * float(metrics.nme(p[ok], g[ok], norm[ok]).mean())
        out["nrmse"] = 100 * float(metrics.nrmse(p[ok], g[ok], norm[ok]).mean())
    if both.any():
        step = np.linalg.norm(np.diff(p, axis=0) - np.diff(g, axis=0), axis=-1)[both]  # (pairs, n)
        out["jitter_error"] = 100 * float((step / norm[1:][both][:, None]).mean())
    pm = np.where(ok[:, None, None], p, np.nan)  # a frame counts only where it is tracked and annotated
    box = gt[:n]
    out["second_diff_error"] = 100 * metrics.second_diff_error(pm, g, norm)
    out["nmj"] = metrics.nmj(pm, g, box)
    out["time_delay"] = metrics.fhr_time_delay(pm, g, box)
    out["fhr_second_diff"] = metrics.fhr_second_diff(pm, g, box)
    out["lag_frames"] = metrics.lag_frames(pm, g, max_lag)
    return out


@dataclass
class VideoReport:
    name: str
    metrics: dict[str, dict[str, float]]  # stabilizer -> numbers
    tracks: dict[str, np.ndarray] = field(repr=False)
    gt: np.ndarray | None = field(default=None, repr=False)
    undecoded: int = 0  # frames of the source that could not be decoded (not scored)


def evaluate_video(path: Path, pipelines: dict[str, object], annotations: Path | None = None,
                   scorer: Scorer | None = None) -> VideoReport:
    scorer = scorer or Scorer.build()
    gt = load_annotation_track(annotations, scorer) if annotations is not None else None
    tracks, undecoded = track_source(str(path), pipelines, gt, scorer)
    out = {}
    for name, tr in tracks.items():
        out[name] = stability(tr)
        if gt is not None:
            out[name].update(accuracy(tr, gt, scorer))
            # video frames with no annotation: gaps in the .pts numbering, NaN rows, frames past the end
            out[name]["annotation_missing"] = len(tr) - out[name]["annotated"]
            if len(gt) != len(tr):
                out[name]["annotation_frames"] = len(gt)
    return VideoReport(path.name, out, tracks, gt, undecoded)


def method_config(name: str, lookahead_default: int = 8):
    """A method of ``evaluate --stabilizers``: a stabilizer (``none``, ``one-euro``, ``convlstm``), or
    ``lookahead`` / ``lookaheadN`` (the fixed-lag smoother over N frames, N = 8 by default)."""
    from stableface.pipeline import STABILIZERS, PipelineConfig

    if name in STABILIZERS:
        return PipelineConfig(stabilizer=name)
    if name.startswith("lookahead"):
        n = name[len("lookahead"):]
        if n == "" or (n.isdigit() and 0 < int(n) <= 120):
            return PipelineConfig(stabilizer="none", lookahead=int(n) if n else lookahead_default)
    raise ValueError(f"unknown method {name!r}: use none, one-euro, convlstm, lookahead or lookaheadN (N in 1..120)")


def list_videos(root: Path) -> list[Path]:
    return [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTS)


def video_stability(path: str, pipelines: dict[str, object]) -> dict[str, dict[str, float]]:
    """Allan deviation and CVar of the first face's track for each pipeline (frames without it are skipped)."""
    return {name: stability(tr) for name, tr in run_tracks(path, pipelines).items()}
