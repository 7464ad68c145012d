"""``stableface calibrate``: measure a model's systematic offset on training data and store it in its metadata.

* **Backbone** (``landmark_offset``): the mean miss of each decoded landmark on the training split,
  crop pixels, ground truth minus prediction, over crops placed as the tracker places them (from
  the landmarks, rolled upright, jittered in position and size). A backbone whose flip
  augmentation mirrored the labels misses every face by the annotations' own offset (the shipped v1
  backbone: -0.95 px in x on its training split); the runtime's ``Decoder`` adds the offset to every
  decoded point, raw or stabilized.
* **Stabilizer** (``output_offset``): the mean of (stabilized - raw) per landmark in the state
  frame's crop pixels, over real-motion *training* sequences (``realmotion.training_sequences``),
  run by the runtime's own ``ConvLSTMStabilizer``. A ConvLSTM trained over a biased backbone
  learns to shift its output towards the annotations; once the backbone is calibrated that shift
  is an offset against raw, and the runtime takes it off every stabilized point.

Both are measured on training data only: the validation split and the benchmark never see them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stableface import codec, ibug
from stableface.backbone import HeatmapBackbone
from stableface.crop import CropBox, box_from_landmarks, invert, to_crop, warp
from stableface.stabilizer import ConvLSTMStabilizer, ConvLSTMStep, Decoder, apply_affine
from stableface.video import read_image

Progress = Callable[[int, int], None]


def backbone_offset(backbone: HeatmapBackbone, files: list[Path], views: int = 2, seed: int = 0,
                    progress: Progress | None = None, batch: int = 32) -> dict:
    """Mean (ground truth - PDC) per landmark, crop pixels, over ``views`` tracker-like crops of each
    annotated image in ``files``; ``backbone``'s own ``landmark_offset`` is ignored."""
    if not files:
        raise ValueError("no annotated images to calibrate on")
    rng = np.random.default_rng(seed)
    crops, truth, errs = [], [], []

    def flush() -> None:
        if crops:
            pts = codec.decode_pdc(backbone(np.stack(crops)), backbone.stride)[0]
            errs.append(np.stack(truth) - pts)
            crops.clear()
            truth.clear()

    for i, f in enumerate(files):
        img, gt = read_image(f), ibug.read_pts(f.with_suffix(".pts"))
        if gt.shape != (backbone.k, 2):
            raise ValueError(f"{f.with_suffix('.pts')}: {gt.shape[0]} points, the backbone gives {backbone.k}")
        base = box_from_landmarks(gt, backbone.crop_scale, rotate=True)
        for _ in range(views):
            j = 0.03 * base.side
            box = CropBox(base.cx + rng.normal(0, j), base.cy + rng.normal(0, j), base.side * rng.uniform(0.95, 1.05),
                          base.angle)
            crops.append(warp(img, box, backbone.size))
            truth.append(to_crop(gt, box, backbone.size))
        if len(crops) >= batch:
            flush()
        if progress:
            progress(i + 1, len(files))
    flush()
    e = np.concatenate(errs)  # (N, K, 2)
    rep = trimmed_mean(e, TRIM_CELLS * backbone.stride)
    return {**rep, "faces": len(files), "crops": len(e)}


def stabilizer_offset(step: ConvLSTMStep, backbone: HeatmapBackbone, sequences, skip: int = 4,
                      progress: Progress | None = None, total: int = 0) -> dict:
    """Mean (stabilized - raw) per landmark in the state frame's crop pixels, over ``sequences``
    (an iterable of ``(crops (T, S, S, 3), ground truth)``, one fixed crop each), through the runtime's
    ``ConvLSTMStabilizer`` with ``backbone``'s calibration; the first ``skip`` frames of each are left out
    (a new track is primed on its first frame). ``step``'s own ``output_offset`` is ignored."""
    decoder = Decoder(backbone.size, backbone.stride, offset=backbone.offset)
    box = CropBox(backbone.size / 2, backbone.size / 2, float(backbone.size))  # crop pixels = source pixels
    deltas, n = [], 0
    for crops, _ in sequences:
        hms = np.concatenate([backbone(crops[i:i + 32]) for i in range(0, len(crops), 32)])
        stab = ConvLSTMStabilizer(step, decoder, deviation=None)  # the network's own offset, unguarded
        for t, hm in enumerate(hms):
            raw, _ = stab._raw(hm, box)
            motion, o = stab._input(raw, hm, box, t * 40.0, crops[t])  # with the crop's pixels, as at run time
            q, _ = decoder.decode(stab._step(o))  # state frame, crop pixels (the state frame's crop is ``box``)
            raw_state = apply_affine(invert(motion), raw)  # the raw points carried into the state frame
            if t >= skip:
                deltas.append(q - raw_state)
        n += 1
        if progress:
            progress(n, total)
    if not deltas:
        raise ValueError(f"no sequence longer than {skip} frames to calibrate on")
    d = np.stack(deltas)
    rep = trimmed_mean(d, TRIM_CELLS * backbone.stride)
    return {**rep, "sequences": n, "frames": len(d)}


TRIM_CELLS = 2.0
"""Differences longer than this many heatmap cells are left out of the means: failed faces, and
frames where the face has moved far inside a sequence's fixed crop (on the shipped models, 1% of
the stabilized - raw differences exceed 33 crop pixels while the median is 0.8)."""


def trimmed_mean(d: np.ndarray, limit: float) -> dict:
    """Per-landmark mean of ``d`` (N, K, 2) over the entries no longer than ``limit``; with the share
    left out, the overall mean (x, y) and its standard error (from the spread of the kept entries)."""
    keep = np.linalg.norm(d, axis=-1) <= limit  # (N, K)
    n = np.maximum(keep.sum(axis=0), 1)[:, None]  # (K, 1)
    offset = np.where(keep[..., None], d, 0.0).sum(axis=0) / n
    var = np.where(keep[..., None], (d - offset) ** 2, 0.0).sum(axis=0) / n
    return {"offset": offset.astype(np.float32), "mean": [float(v) for v in offset.mean(axis=0)],
            "stderr": [float(v) for v in np.sqrt((var / n).mean(axis=0))], "left_out": float(1 - keep.mean())}


def write_offsets(model: str | Path, out: str | Path, offsets: dict[str, tuple[np.ndarray, dict]]) -> None:
    """Copy ``model`` to ``out`` (atomically) with each ``key`` (K x 2) of ``offsets`` and ``key +
    '_calibration'`` (how it was measured) in its metadata, replacing earlier values."""
    import onnx

    m = onnx.load(str(model))
    drop = {k for key in offsets for k in (key, key + "_calibration")}
    keep = [p for p in m.metadata_props if p.key not in drop]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    for key, (offset, note) in offsets.items():
        m.metadata_props.add(key=key, value=json.dumps(np.round(np.asarray(offset, np.float64), 4).tolist()))
        m.metadata_props.add(key=key + "_calibration", value=json.dumps(note))
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        onnx.save(m, str(tmp))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
