"""Heatmap encode (training targets) and decode (PDC, argmax), with one coordinate convention.

Coordinate convention, on both sides of the codec:

* crop space: continuous pixel coordinates of the backbone's input crop, origin at the
  top-left corner of the top-left pixel, so the centre of pixel ``(i, j)`` is ``(j + 0.5, i + 0.5)``;
* heatmap space: heatmap cell ``(r, c)`` covers crop pixels ``[c*stride, (c+1)*stride)``, its
  centre is at crop coordinate ``((c + 0.5) * stride, (r + 0.5) * stride)``.

``encode`` places a Gaussian for each point; ``decode_pdc`` inverts it (round trip tested).
Heatmaps are arrays of shape ``(..., K, H, W)``; points are ``(..., K, 2)`` as ``(x, y)``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

DEFAULT_SIGMA = 1.5
DEFAULT_PDC_THRESHOLD = 0.2
DEFAULT_PDC_MODE = "continuous"
PDC_MODES = ("continuous", "hard")


def encode(points: np.ndarray, size: tuple[int, int], stride: float, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """Gaussian heatmaps (peak 1) for ``points`` (K, 2) in crop space; returns (K, H, W) float32."""
    points = np.asarray(points, dtype=np.float32)
    h, w = size
    centres = points / stride - 0.5  # heatmap index space
    ys = np.arange(h, dtype=np.float32)[None, :, None]
    xs = np.arange(w, dtype=np.float32)[None, None, :]
    dx2 = (xs - centres[:, 0, None, None]) ** 2
    dy2 = (ys - centres[:, 1, None, None]) ** 2
    return np.exp(-(dx2 + dy2) / (2.0 * sigma * sigma)).astype(np.float32)


def decode_pdc(heatmaps: np.ndarray, stride: float, threshold: float = DEFAULT_PDC_THRESHOLD,
               mode: str = DEFAULT_PDC_MODE) -> tuple[np.ndarray, np.ndarray]:
    """Probability Density Centralization (paper, Algorithm 1), in two forms.

    * ``continuous`` (the default, a deviation from Algorithm 1): the weight of a cell is
      ``max(phi - threshold, 0)``. It grows from zero as a cell crosses the threshold, so a
      landmark moves continuously with the heatmap: no cell adds or removes ``threshold`` of mass
      at once (the hard form's jitter on video).
    * ``hard`` (Algorithm 1): values below ``threshold`` are zeroed and the rest keep their value.

    Where no value exceeds the threshold (a very weak map), the centre of mass of the positive
    part is used instead, so every landmark gets a finite position.

    Returns ``(points, scores)``: points (..., K, 2) in crop space, scores (..., K) = map peaks.
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    h, w = hm.shape[-2:]
    lead = hm.shape[:-2]
    maps = hm.reshape(-1, h * w)
    m = _moments(h, w)
    s = pdc_weights(maps, threshold, mode) @ m  # (N, 3): each map's mass, sum of x, sum of y (one product)
    weak = s[:, 0] <= 1e-12
    if np.any(weak):
        s[weak] = np.maximum(maps[weak], 0.0) @ m
    flat = s[:, 0] <= 1e-12  # an all-zero map: centre of the crop
    centre = s[:, 1:] / np.where(flat, 1.0, s[:, 0])[:, None]
    centre[flat] = ((w - 1) / 2.0, (h - 1) / 2.0)
    points = ((centre + 0.5) * stride).reshape(*lead, 2)
    scores = maps.max(axis=-1).reshape(lead)
    return points.astype(np.float32), scores.astype(np.float32)


@lru_cache(maxsize=8)
def _moments(h: int, w: int) -> np.ndarray:
    """(h * w, 3) float32: 1, x and y of each cell of an h x w map, row-major (cached per size, read-only)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    m = np.stack([np.ones(h * w, np.float32), x.ravel(), y.ravel()], axis=1)
    m.setflags(write=False)
    return m


def pdc_weights(hm: np.ndarray, threshold: float, mode: str = DEFAULT_PDC_MODE) -> np.ndarray:
    """The mass PDC gives each cell: ``max(phi - threshold, 0)`` (continuous) or ``phi * (phi >= threshold)`` (hard)."""
    if mode == "continuous":
        kept = hm - np.float32(threshold)
        return np.maximum(kept, 0.0, out=kept)
    if mode == "hard":
        return hm * (hm >= threshold)
    raise ValueError(f"unknown PDC mode {mode!r}: continuous or hard")


def decode_argmax(heatmaps: np.ndarray, stride: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer argmax of each map (no sub-pixel refinement); same spaces as ``decode_pdc``."""
    hm = np.asarray(heatmaps, dtype=np.float32)
    h, w = hm.shape[-2:]
    flat = hm.reshape(*hm.shape[:-2], -1)
    idx = flat.argmax(axis=-1)
    points = (np.stack([idx % w, idx // w], axis=-1).astype(np.float32) + 0.5) * stride
    return points, flat.max(axis=-1).astype(np.float32)


DECODERS = {"pdc": decode_pdc, "argmax": decode_argmax}
