"""Heatmap-grid geometry: warps of heatmaps and the maps between grids, crops and source pixels.

The index convention, stated once for all of stableface:

* **crop pixels**: continuous coordinates of the backbone's input crop, origin at the top-left
  corner of the top-left pixel (pixel centres at +0.5);
* **grid index** ``q = (x, y)``: continuous heatmap coordinates in which cell ``(row r, col c)``
  has its centre at ``(c, r)``. A grid index maps to crop pixels as ``p = (q + 0.5) * stride``.

Every 2x3 matrix here maps *output* coordinates to *input* coordinates (a pull map), so that
``warp(maps, m)[:, q] = maps[:, m @ q]``, bilinear, with edges replicated.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from stableface.crop import CropBox, invert


def h3(m: np.ndarray) -> np.ndarray:
    """A 2x3 affine matrix as 3x3."""
    return np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]])


def compose(*ms: np.ndarray) -> np.ndarray:
    """2x3 of ``ms[0](ms[1](... (x)))``."""
    out = np.eye(3)
    for m in ms:
        out = out @ h3(m)
    return out[:2]


def index_to_crop(stride: float) -> np.ndarray:
    """Grid index -> crop pixels: ``p = (q + 0.5) * stride``."""
    return np.array([[stride, 0.0, 0.5 * stride], [0.0, stride, 0.5 * stride]])


def crop_to_index(stride: float) -> np.ndarray:
    return invert(index_to_crop(stride))


def index_to_source(box: CropBox, crop_size: int, stride: float) -> np.ndarray:
    """Grid index of ``box``'s heatmaps -> source pixels."""
    return compose(invert(box.matrix(crop_size)), index_to_crop(stride))


def source_to_index(box: CropBox, crop_size: int, stride: float) -> np.ndarray:
    return compose(crop_to_index(stride), box.matrix(crop_size))


def crop_change(old: CropBox, new: CropBox, crop_size: int, stride: float) -> np.ndarray:
    """2x3: grid index in ``new`` -> the same source point's grid index in ``old``."""
    return compose(source_to_index(old, crop_size, stride), index_to_source(new, crop_size, stride))


@lru_cache(maxsize=8)
def _cells(h: int, w: int) -> np.ndarray:
    """Homogeneous grid indices (3, h*w) of every cell, row by row."""
    ys, xs = np.mgrid[0:h, 0:w]
    q = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)]).astype(np.float64)
    q.setflags(write=False)
    return q


def taps(matrix: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps of a pull map over an (h, w) grid: flat indices (4, h*w) and weights (4, h*w)."""
    src = np.asarray(matrix, np.float64) @ _cells(h, w)  # (2, h*w) input grid index
    sx = np.clip(src[0], 0, w - 1)  # edges replicated
    sy = np.clip(src[1], 0, h - 1)
    x0 = np.minimum(np.floor(sx).astype(np.intp), w - 2 if w > 1 else 0)
    y0 = np.minimum(np.floor(sy).astype(np.intp), h - 2 if h > 1 else 0)
    fx, fy = sx - x0, sy - y0
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    idx = np.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1])
    wts = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]).astype(np.float32)
    return idx, wts


def warp(maps: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``out[..., q] = maps[..., matrix @ q]`` for maps (..., H, W): exact bilinear in float32
    (no fixed-point weights), edges replicated. ``matrix`` is a 2x3 pull map of grid indices."""
    h, w = maps.shape[-2:]
    if np.allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-9):
        return maps
    idx, wts = taps(matrix, h, w)
    cells = np.ascontiguousarray(maps.reshape(-1, h * w).T)  # (H*W, C): each tap gathers whole rows
    out = cells[idx[0]] * wts[0][:, None]
    for j in range(1, 4):
        out += cells[idx[j]] * wts[j][:, None]
    return out.T.reshape(maps.shape).astype(maps.dtype, copy=False)
