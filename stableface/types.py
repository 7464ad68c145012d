"""Result types: one per concept, validated on construction. Array shapes are documented."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from stableface.crop import CropBox


def _finite_box(box: tuple[float, float, float, float]) -> None:
    if len(box) != 4 or not all(np.isfinite(box)):
        raise ValueError(f"box must be 4 finite numbers (x0, y0, x1, y1), got {box}")


@dataclass(frozen=True)
class Frame:
    """A decoded frame: BGR uint8 image (H, W, 3), its index and timestamp in the source."""

    image: np.ndarray
    index: int
    timestamp_ms: float

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"frame image must be (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}")


@dataclass(frozen=True)
class Detection:
    """A detector hit: box (x0, y0, x1, y1) in source pixels, score in [0, 1], keypoints (6, 2)."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    def __post_init__(self) -> None:
        _finite_box(self.box)


@dataclass(frozen=True)
class Face:
    """One tracked face in one frame.

    landmarks (K, 2) float in source pixel coordinates (origin at the top-left pixel's corner);
    landmark_scores (K,) heatmap peaks of the raw backbone output; frame, where the pipeline
    follows the face by image flow for a lookahead: the 2x3 similarity from the track's face frame
    to this frame (source pixels; ``stabilizer.FaceMotion``). It is not part of any output.
    """

    id: int
    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    landmark_scores: np.ndarray
    frame: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _finite_box(self.box)
        if self.landmarks.ndim != 2 or self.landmarks.shape[1] != 2:
            raise ValueError(f"landmarks must be (K, 2), got {self.landmarks.shape}")
        if self.landmark_scores.shape != (self.landmarks.shape[0],):
            raise ValueError("landmark_scores must be (K,)")

    def to_dict(self, ndigits: int = 2) -> dict:
        return {"id": int(self.id), "box": [round(float(v), ndigits) for v in self.box],
                "score": round(float(self.score), 4),
                "landmarks": [[round(float(x), ndigits), round(float(y), ndigits)] for x, y in self.landmarks],
                "landmark_scores": [round(float(s), 4) for s in self.landmark_scores]}


@dataclass(frozen=True)
class FrameResult:
    """Everything found in one frame; ``faces`` is empty (never None) when there is no face.

    ``shot``: the index of the shot the frame belongs to (0 until the first cut).
    """

    frame: int
    timestamp_ms: float
    faces: tuple[Face, ...] = ()
    shot: int = 0

    def __post_init__(self) -> None:
        if int(self.shot) != self.shot or self.shot < 0:
            raise ValueError(f"shot must be a whole number >= 0, got {self.shot}")

    def to_dict(self) -> dict:
        return {"frame": int(self.frame), "timestamp_ms": round(float(self.timestamp_ms), 3), "shot": int(self.shot),
                "faces": [f.to_dict() for f in self.faces]}


class Stabilizer(Protocol):
    """A per-track landmark stabilizer with explicit state (one instance per face).

    ``update`` takes the backbone's heatmaps (K, H, W) of this frame's crop, the frame's
    timestamp and optionally the crop's pixels (what the backbone saw, for image flow), and returns landmarks (K, 2) in source pixels and their raw scores (K,).
    ``reset`` forgets the state: the next update starts a new track.
    """

    def update(self, heatmaps: np.ndarray, crop: CropBox, timestamp_ms: float,
               image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def reset(self) -> None: ...
