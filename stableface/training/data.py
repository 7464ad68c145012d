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
    label_dx: float = 0.0  # source px: where the annotation's x sits right of the feature (see LABEL_DX)


# How far right of the image feature each subset's annotations sit in x, in source pixels. A
# horizontal flip must mirror the feature, not the label: flipping the label turns +dx into -dx,
# so a network trained with flips learns neither and misses by -dx. Measured as the v1 backbone's
# mean x error (trained with plain flips) on the training split: AFW -1.11, HELEN -0.42, LFPW -0.99
# px (validation: -1.14, -0.42, -0.99); y, which is never flipped, shows no such offset.
LABEL_DX = {"afw": 1.11, "helen": 0.42, "lfpw": 0.99}


def load(files: list[Path]) -> list[Sample]:
    out = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{f}: cannot read image")
        dx = next((v for k, v in LABEL_DX.items() if k in (part.lower() for part in f.parts)), 0.0)
        out.append(Sample(f.stem, img, ibug.read_pts(f.with_suffix(".pts")), dx))
    return out


def eval_crop(sample: Sample, size: int) -> tuple[np.ndarray, np.ndarray, CropBox]:
    """The deterministic crop used for validation: landmark box x CROP_SCALE, upright."""
    box = box_from_landmarks(sample.points, CROP_SCALE)
    return warp(sample.image, box, size), to_crop(sample.points, box, size).astype(np.float32), box


@dataclass(frozen=True)
class PairJitter:
    """How a second view of a face differs from the first, as consecutive video frames do (sd of each)."""

    shift: float = 0.02  # of the crop side
    scale: float = 0.03  # relative
    roll_deg: float = 1.0

    def __call__(self, box: CropBox, rng: np.random.Generator) -> CropBox:
        dx, dy = rng.normal(0.0, self.shift * box.side, size=2)
        return CropBox(box.cx + dx, box.cy + dy, box.side * float(np.exp(rng.normal(0.0, self.scale))),
                       box.angle + float(np.deg2rad(rng.normal(0.0, self.roll_deg))))


def linear_between(m0: np.ndarray, m1: np.ndarray) -> np.ndarray:
    """2x2: a displacement in view 0's crop -> the same displacement in view 1's (both 2x3 source -> crop)."""
    return m1[:, :2] @ np.linalg.inv(m0[:, :2])


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
    jpeg: float = 0.0  # probability of JPEG blocking (quality 20-90)

    def crop_box(self, points: np.ndarray, rng: np.random.Generator) -> CropBox:
        base = box_from_landmarks(points, CROP_SCALE)
        side = base.side * rng.uniform(*self.scale_range)
        dx, dy = rng.normal(0.0, self.shift * base.side, size=2)
        angle = np.deg2rad(np.clip(rng.normal(0.0, self.rotate_deg / 2), -self.rotate_deg, self.rotate_deg))
        return CropBox(base.cx + dx, base.cy + dy, side, float(angle))

    def view(self, sample: Sample, box: CropBox, flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The crop, its points and its 2x3 source -> crop matrix (the flip included)."""
        m = box.matrix(self.size)
        img = warp(sample.image, box, self.size)
        pts = to_crop(sample.points, box, self.size).astype(np.float32)
        if flip:  # mirror the feature: the label's own x offset (label_dx) keeps its sign
            img = img[:, ::-1].copy()
            pts = pts[ibug.FLIP_INDEX].copy()
            shift = 2.0 * sample.label_dx * self.size / box.side
            pts[:, 0] = self.size - pts[:, 0] + shift
            m = np.array([[-1.0, 0.0, self.size + shift], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
        return img, pts, m

    def __call__(self, sample: Sample, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        box = self.crop_box(sample.points, rng)
        img, pts, _ = self.view(sample, box, bool(rng.random() < self.flip))
        return self.photometric(img, rng), pts

    def pair(self, sample: Sample, rng: np.random.Generator, jitter: PairJitter) -> tuple[tuple, tuple]:
        """Two views of one face, as two nearby video frames: (crop, points, matrix) each. The second
        crop is moved by ``jitter``; both share the look (colour, blur, occluder) and get their own
        sensor noise and JPEG blocking."""
        box = self.crop_box(sample.points, rng)
        flip = bool(rng.random() < self.flip)
        look = self.look(rng)
        out = []
        for b in (box, jitter(box, rng)):
            img, pts, m = self.view(sample, b, flip)
            out.append((self.degrade(self.apply_look(img, look), rng), pts, m))
        return out[0], out[1]

    def look(self, rng: np.random.Generator) -> dict:
        s = self.size
        occ = None
        if rng.random() < self.occlude:
            w, h = (rng.uniform(0.1, 0.4, size=2) * s).astype(int)
            occ = (int(rng.integers(0, s - w)), int(rng.integers(0, s - h)), int(w), int(h), rng.uniform(0, 255, size=3))
        return {"gain": rng.uniform(0.6, 1.4), "bias": rng.uniform(-40, 40), "colour": rng.uniform(0.85, 1.15, size=3),
                "grey": rng.random() < self.grey, "blur": int(rng.choice([3, 5, 7])) if rng.random() < self.blur else 0,
                "occluder": occ}

    @staticmethod
    def apply_look(img: np.ndarray, look: dict) -> np.ndarray:
        out = img.astype(np.float32) * look["gain"] + look["bias"]  # contrast, brightness
        out = out * look["colour"]  # colour balance
        if look["grey"]:
            out[:] = out.mean(axis=2, keepdims=True)
        if look["blur"]:
            out = cv2.GaussianBlur(out, (look["blur"], look["blur"]), 0)
        if look["occluder"] is not None:
            x, y, w, h, colour = look["occluder"]
            out[y:y + h, x:x + w] = colour
        return out

    def degrade(self, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sensor noise and codec blocking, drawn per view."""
        if rng.random() < self.noise:
            out = out + rng.normal(0.0, rng.uniform(2, 15), size=out.shape)
        img = np.clip(out, 0, 255).astype(np.uint8)
        if self.jpeg and rng.random() < self.jpeg:
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 91))])
            if ok:
                img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return img

    def photometric(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.degrade(self.apply_look(img, self.look(rng)), rng)
