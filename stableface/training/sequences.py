"""Training and validation sequences synthesised from still annotated images (paper, Sec. 4.2).

A sequence keeps one crop fixed (as the tracker's dead-band crop does) while the image moves
under small similarity motions: still, slow drift, or handheld shake, a few crop pixels per
frame, with fresh pixel noise in every frame and optional blur. Ground truth follows exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stableface.crop import CROP_SCALE, CropBox, apply, box_from_landmarks, warp_matrix
from stableface.training.data import Sample

MOTIONS = ("still", "drift", "shake")


def _similarity(dx: float, dy: float, angle: float, scale: float, cx: float, cy: float) -> np.ndarray:
    """3x3: rotate/scale about (cx, cy), then translate."""
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    a = np.array([[c, -s], [s, c]])
    t = np.array([cx, cy]) - a @ np.array([cx, cy]) + np.array([dx, dy])
    return np.vstack([np.hstack([a, t[:, None]]), [0, 0, 1]])


@dataclass
class SequenceSpec:
    length: int = 8
    size: int = 128
    crop_scale: float = CROP_SCALE
    noise: tuple[float, float] = (0.0, 15.0)  # per-sequence sigma range
    blur: float = 0.2
    max_speed: float = 2.0  # crop pixels per frame for drift
    shake: float = 1.0  # crop pixels per frame (std) for shake
    motion: str | None = None  # force a motion kind; random when None
    crop_jitter: float = 0.05


def motion_matrices(spec: SequenceSpec, box: CropBox, rng: np.random.Generator, kind: str) -> list[np.ndarray]:
    """Per-frame 3x3 motions of the image, in source pixels."""
    px = box.side / spec.size  # source pixels per crop pixel
    n = spec.length
    if kind == "still":
        return [np.eye(3)] * n
    if kind == "drift":
        v = rng.uniform(-spec.max_speed, spec.max_speed, size=2) * px
        w = np.deg2rad(rng.uniform(-0.5, 0.5))
        z = rng.uniform(-0.006, 0.006)
        return [_similarity(v[0] * t, v[1] * t, w * t, 1 + z * t, box.cx, box.cy) for t in range(n)]
    steps = rng.normal(0, spec.shake * px, size=(n, 2))
    steps[0] = 0
    pos = np.cumsum(steps, axis=0)
    ang = np.cumsum(rng.normal(0, np.deg2rad(0.4), size=n))
    return [_similarity(pos[t, 0], pos[t, 1], ang[t] - ang[0], 1.0, box.cx, box.cy) for t in range(n)]


def make_sequence(sample: Sample, spec: SequenceSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """Frames (T, S, S, 3) uint8 crops and landmarks (T, K, 2) in crop coordinates, and the motion kind."""
    base = box_from_landmarks(sample.points, spec.crop_scale)
    j = spec.crop_jitter * base.side
    box = CropBox(base.cx + rng.normal(0, j), base.cy + rng.normal(0, j), base.side * rng.uniform(0.92, 1.1),
                  float(np.deg2rad(rng.normal(0, 6))))
    kind = spec.motion or str(rng.choice(MOTIONS, p=[0.35, 0.35, 0.3]))
    crop = np.vstack([box.matrix(spec.size), [0, 0, 1]])
    sigma = rng.uniform(*spec.noise)
    blur = int(rng.choice([3, 5])) if rng.random() < spec.blur else 0
    frames, points = [], []
    for m in motion_matrices(spec, box, rng, kind):
        full = (crop @ m)[:2]
        img = warp_matrix(sample.image, full, spec.size)
        if blur:
            img = cv2.GaussianBlur(img, (blur, blur), 0)
        if sigma > 0:
            img = np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)
        frames.append(img)
        points.append(apply(full, sample.points))
    return np.stack(frames), np.stack(points).astype(np.float32), kind
