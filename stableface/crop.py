"""Crop / uncrop transforms: the one place where coordinate frames change.

All coordinates are continuous pixel coordinates, origin at the top-left corner of the
top-left pixel (pixel centres at +0.5), in the source frame and in the crop alike.

A crop is a square of side ``side`` source pixels centred at ``(cx, cy)`` and turned by
``angle`` radians (counter-clockwise in the image as seen on screen turns the face upright),
resampled to ``size x size`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CROP_SCALE = 1.3  # crop side = CROP_SCALE x the larger side of the landmark box


@dataclass(frozen=True)
class CropBox:
    """A square (possibly rotated) crop of the source frame."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.cx) and np.isfinite(self.cy) and np.isfinite(self.side) and np.isfinite(self.angle)):
            raise ValueError(f"crop box has non-finite values: {self}")
        if self.side <= 0:
            raise ValueError(f"crop side must be positive, got {self.side}")

    def matrix(self, size: int) -> np.ndarray:
        """2x3 affine matrix: source coordinates -> crop coordinates (continuous)."""
        k = size / self.side
        c, s = np.cos(self.angle), np.sin(self.angle)
        a = k * np.array([[c, s], [-s, c]], dtype=np.float64)
        b = np.array([size / 2.0, size / 2.0]) - a @ np.array([self.cx, self.cy])
        return np.hstack([a, b[:, None]])

    def corners(self) -> np.ndarray:
        """The four corners (4, 2) in source coordinates, clockwise from top-left."""
        inv = invert(self.matrix(1))
        unit = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
        return apply(inv, unit)

    def inner(self) -> tuple[float, float, float, float]:
        """The largest axis-aligned square (x0, y0, x1, y1) inside the crop (its whole side when upright)."""
        h = self.side / (abs(np.cos(self.angle)) + abs(np.sin(self.angle))) / 2
        return self.cx - h, self.cy - h, self.cx + h, self.cy + h

    def bounds(self) -> tuple[float, float, float, float]:
        """Axis-aligned box (x0, y0, x1, y1) around the crop."""
        c = self.corners()
        return float(c[:, 0].min()), float(c[:, 1].min()), float(c[:, 0].max()), float(c[:, 1].max())


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points (..., 2)."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    a = matrix[:, :2]
    ainv = np.linalg.inv(a)
    return np.hstack([ainv, (-ainv @ matrix[:, 2])[:, None]])


def to_crop(points: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Source coordinates -> crop coordinates."""
    return apply(box.matrix(size), points)


def to_source(points: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Crop coordinates -> source coordinates (the inverse of ``to_crop``)."""
    return apply(invert(box.matrix(size)), points)


def warp(image: np.ndarray, box: CropBox, size: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resample the crop from ``image`` (H, W[, C]); outside the frame is black."""
    return warp_matrix(image, box.matrix(size), size, interpolation)


def warp_matrix(image: np.ndarray, m: np.ndarray, size: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resample ``image`` through the 2x3 source -> output matrix ``m`` (continuous coordinates)."""
    # cv2 puts pixel centres at integers: shift both sides by half a pixel.
    m_cv = m.copy()
    m_cv[:, 2] = m[:, 2] + m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return cv2.warpAffine(image, m_cv, (size, size), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def box_from_landmarks(points: np.ndarray, scale: float = CROP_SCALE, rotate: bool = False) -> CropBox:
    """The crop the backbone was trained on: centred on the landmark box, side scale x its larger side.

    With ``rotate`` the crop is turned by the roll of the outer eye corners (iBUG 36 and 45),
    so a tilted head reaches the backbone upright.
    """
    pts = np.asarray(points, dtype=np.float64)
    angle = 0.0
    if rotate and pts.shape[0] == 68:
        d = pts[45] - pts[36]
        angle = float(np.arctan2(d[1], d[0]))
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        centre0 = (pts.min(axis=0) + pts.max(axis=0)) / 2.0
        rot = (pts - centre0) @ np.array([[c, -s], [s, c]])  # rotate by -angle
        lo, hi = rot.min(axis=0), rot.max(axis=0)
        mid = (lo + hi) / 2.0
        centre = centre0 + mid @ np.array([[c, s], [-s, c]])
        side = float(max(hi - lo)) * scale
        return CropBox(float(centre[0]), float(centre[1]), max(side, 1.0), angle)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre = (lo + hi) / 2.0
    side = float(max(hi - lo)) * scale
    return CropBox(float(centre[0]), float(centre[1]), max(side, 1.0), 0.0)
