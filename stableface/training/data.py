"""Annotated face images loaded for training, the validation crop, and augmentation.

Listing and the fixed validation split live in ``stableface.ibug``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stableface import ibug
from stableface.crop import CROP_SCALE, CropBox, box_from_landmarks, to_crop, warp


@dataclass
class Sample:
    name: str
    image: np.ndarray  # (H, W, 3) uint8 BGR
    points: np.ndarray  # (K, 2) float32, source pixel coordinates


def load(files: list[Path]) -> list[Sample]:
    out = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{f}: cannot read image")
        out.append(Sample(f.stem, img, ibug.read_pts(f.with_suffix(".pts"))))
    return out


def eval_crop(sample: Sample, size: int) -> tuple[np.ndarray, np.ndarray, CropBox]:
    """The deterministic crop used for validation: landmark box x CROP_SCALE, upright."""
    box = box_from_landmarks(sample.points, CROP_SCALE)
    return warp(sample.image, box, size), to_crop(sample.points, box, size).astype(np.float32), box


@dataclass
class Augment:
    """Random crop geometry and photometric corruption, mirrored-index aware."""

    size: int = 128
    rotate_deg: float = 30.0
    scale_range: tuple[float, float] = (0.85, 1.2)
    shift: float = 0.08
    flip: float = 0.5
    grey: float = 0.15
    blur: float = 0.25
    noise: float = 0.35
    occlude: float = 0.3

    def crop_box(self, points: np.ndarray, rng: np.random.Generator) -> CropBox:
        base = box_from_landmarks(points, CROP_SCALE)
        side = base.side * rng.uniform(*self.scale_range)
        dx, dy = rng.normal(0.0, self.shift * base.side, size=2)
        angle = np.deg2rad(np.clip(rng.normal(0.0, self.rotate_deg / 2), -self.rotate_deg, self.rotate_deg))
        return CropBox(base.cx + dx, base.cy + dy, side, float(angle))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        box = self.crop_box(sample.points, rng)
        img = warp(sample.image, box, self.size)
        pts = to_crop(sample.points, box, self.size).astype(np.float32)
        if rng.random() < self.flip:
            img = img[:, ::-1].copy()
            pts = pts[ibug.FLIP_INDEX].copy()
            pts[:, 0] = self.size - pts[:, 0]
        return self.photometric(img, rng), pts

    def photometric(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = img.astype(np.float32)
        out = out * rng.uniform(0.6, 1.4) + rng.uniform(-40, 40)  # contrast, brightness
        out = out * rng.uniform(0.85, 1.15, size=3)  # colour balance
        if rng.random() < self.grey:
            out[:] = out.mean(axis=2, keepdims=True)
        if rng.random() < self.blur:
            k = int(rng.choice([3, 5, 7]))
            out = cv2.GaussianBlur(out, (k, k), 0)
        if rng.random() < self.occlude:
            s = self.size
            w, h = (rng.uniform(0.1, 0.4, size=2) * s).astype(int)
            x, y = rng.integers(0, s - w), rng.integers(0, s - h)
            out[y:y + h, x:x + w] = rng.uniform(0, 255, size=3)
        if rng.random() < self.noise:
            out = out + rng.normal(0.0, rng.uniform(2, 15), size=out.shape)
        return np.clip(out, 0, 255).astype(np.uint8)
