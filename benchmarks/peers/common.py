"""Frames shared by both sides of the peers benchmark (numpy only, importable from either venv)."""

from __future__ import annotations

import numpy as np

SIDE = 320  # validation images are at most 320 px; smaller ones are padded (bottom/right, black)


def pad(img: np.ndarray, side: int = SIDE) -> np.ndarray:
    out = np.zeros((side, side, 3), np.uint8)
    h, w = img.shape[:2]
    out[:h, :w] = img[:side, :side]
    return out


def still_frame(base: np.ndarray, sigma: float, seed: int, i: int, t: int) -> np.ndarray:
    """Frame ``t`` of still sequence ``i``: the same image, new Gaussian pixel noise each frame."""
    if sigma == 0:
        return base.copy()
    rng = np.random.default_rng([seed, i, t])
    return np.clip(base.astype(np.float32) + rng.normal(0.0, sigma, base.shape).astype(np.float32), 0, 255).astype(np.uint8)
