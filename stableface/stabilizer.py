"""Per-track landmark stabilizers with explicit state: ConvLSTM (the paper), One Euro, none.

Every stabilizer has ``update(heatmaps, crop, timestamp_ms) -> (points, scores)`` and
``reset()``; ``points`` (K, 2) are in source pixels, ``scores`` (K,) are the raw heatmap peaks.
One instance holds the state of one face: the tracker builds them with a factory.

The ConvLSTM (Eq. 1, ``h_t, c_t, s_t = ConvLSTM(h_{t-1}, c_{t-1}, o_t)``) is per landmark:
for each of the K heatmaps, a 3x3 convolution over ``[o_t^k, h_{t-1}^k]`` gives the i, f, g, o
gates of ``hidden`` channels; ``s_t^k`` is a 1x1 convolution over ``[o_t^k, h_t^k]``
(grouped convolutions, groups = K). The state lives in the coordinates of the crop it was
computed in: when the tracker moves the crop, the state is resampled into the new crop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from stableface import codec, onnx_util
from stableface.crop import CropBox, invert, to_crop, to_source
from stableface.onnx_util import WeightsError


class Stabilizer(Protocol):
    def update(self, heatmaps: np.ndarray, crop: CropBox, timestamp_ms: float) -> tuple[np.ndarray, np.ndarray]: ...

    def reset(self) -> None: ...


class Decoder:
    """PDC (or argmax) decoding followed by the uncrop to source pixels."""

    def __init__(self, crop_size: int, stride: float, method: str = "pdc", threshold: float = codec.DEFAULT_PDC_THRESHOLD) -> None:
        if method not in codec.DECODERS:
            raise ValueError(f"unknown decoder {method!r}")
        self.crop_size, self.stride, self.method, self.threshold = crop_size, stride, method, threshold

    def decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points in crop pixels and scores."""
        if self.method == "pdc":
            return codec.decode_pdc(heatmaps, self.stride, self.threshold)
        return codec.decode_argmax(heatmaps, self.stride)

    def __call__(self, heatmaps: np.ndarray, crop: CropBox, offset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Points in source pixels and scores; ``offset`` (crop pixels) is added before the uncrop."""
        pts, scores = self.decode(heatmaps)
        if offset is not None:
            pts = pts + offset
        return to_source(pts, crop, self.crop_size).astype(np.float32), scores


class NoStabilizer:
    """The raw backbone: decode each frame on its own."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder

    def update(self, heatmaps: np.ndarray, crop: CropBox, timestamp_ms: float) -> tuple[np.ndarray, np.ndarray]:
        return self.decoder(heatmaps, crop)

    def reset(self) -> None:
        pass


class OneEuro:
    """The One Euro filter (Casiez et al. 2012) on arrays, driven by timestamps in ms."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None
        self.t: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, timestamp_ms: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.x is None or self.t is None or timestamp_ms <= self.t:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), timestamp_ms
            return x.copy()
        dt = (timestamp_ms - self.t) / 1000.0
        dx = (x - self.x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx)
        a = self._alpha(cutoff, dt)
        self.x = a * x + (1 - a) * self.x
        self.t = timestamp_ms
        return self.x.copy()


class OneEuroStabilizer:
    """Raw backbone + PDC, then a One Euro filter on the source-pixel landmarks.

    ``min_cutoff`` (Hz) and ``beta`` (per px/s) are scaled by the face size so that one setting
    serves small and large faces: the filter sees coordinates in units of the crop side / 100.
    """

    def __init__(self, decoder: Decoder, min_cutoff: float = 4.0, beta: float = 1.0) -> None:
        self.decoder = decoder
        self.filter = OneEuro(min_cutoff, beta)

    def update(self, heatmaps: np.ndarray, crop: CropBox, timestamp_ms: float) -> tuple[np.ndarray, np.ndarray]:
        pts, scores = self.decoder(heatmaps, crop)
        unit = crop.side / 100.0
        return (self.filter(pts / unit, timestamp_ms) * unit).astype(np.float32), scores

    def reset(self) -> None:
        self.filter.reset()


def warp_maps(maps: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Resample maps (C, H, W) so that ``out[:, q] = maps[:, matrix @ q]`` (bilinear, edges replicated).

    ``matrix`` (2x3) maps output cell-centre index coordinates to input ones.
    """
    c, h, w = maps.shape
    m = np.asarray(matrix, dtype=np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # index coordinates are OpenCV's pixel centres
    hwc = np.ascontiguousarray(maps.transpose(1, 2, 0))
    out = np.empty_like(hwc)
    for i in range(0, c, 4):  # OpenCV warps at most 4 channels at a time
        part = cv2.warpAffine(hwc[:, :, i:i + 4], m, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        out[:, :, i:i + 4] = part.reshape(h, w, -1)
    return out.transpose(2, 0, 1)


def _interp_matrix(n: int, d: float) -> np.ndarray:
    """(n, n) bilinear weights: row q samples position q - d, edges replicated."""
    src = np.arange(n) - d
    i0 = np.floor(src)
    f = (src - i0).astype(np.float32)
    a = np.zeros((n, n), np.float32)
    rows = np.arange(n)
    np.add.at(a, (rows, np.clip(i0, 0, n - 1).astype(np.intp)), 1 - f)
    np.add.at(a, (rows, np.clip(i0 + 1, 0, n - 1).astype(np.intp)), f)
    return a


def shift_maps(maps: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``out[:, y, x] = maps[:, y - dy, x - dx]``, bilinear, edges replicated (``warp_maps`` of a translation).

    Separable: two small interpolation matrices, ``A_y @ map @ A_x^T`` for every map (batched
    matrix products; about 5x faster than gathering the taps with fancy indexing on 272 maps).
    """
    _, h, w = maps.shape
    out = np.matmul(np.matmul(_interp_matrix(h, dy), maps), _interp_matrix(w, dx).T)
    return out.astype(maps.dtype, copy=False)


def crop_change(old: CropBox, new: CropBox, crop_size: int, stride: float) -> np.ndarray:
    """2x3 matrix: heatmap index coordinates in ``new`` -> the same source point's in ``old``."""
    def index_to_crop(s: float) -> np.ndarray:  # q -> p = (q + 0.5) * s
        return np.array([[s, 0, 0.5 * s], [0, s, 0.5 * s], [0, 0, 1]])
    to_src_new = np.vstack([invert(new.matrix(crop_size)), [0, 0, 1]])
    to_old = np.vstack([old.matrix(crop_size), [0, 0, 1]])
    m = np.linalg.inv(index_to_crop(stride)) @ to_old @ to_src_new @ index_to_crop(stride)
    return m[:2]


class ConvLSTMStep:
    """One ConvLSTM step from an ONNX export (inputs o, h, c -> outputs s, h, c)."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int = 0) -> None:
        self.path = Path(path)
        self.session = onnx_util.session(self.path, device, threads)
        meta = onnx_util.metadata(self.session)
        names = [i.name for i in self.session.get_inputs()]
        if names != ["o", "h", "c"]:
            raise WeightsError(f"{self.path}: not a stableface ConvLSTM step (inputs {names}, expected o, h, c)")
        self.k = int(meta.get("num_landmarks", 0))
        self.hidden = int(meta.get("hidden", 0))
        self.heatmap_size = int(meta.get("heatmap_size", 0))
        if not (self.k and self.hidden and self.heatmap_size):
            raise WeightsError(f"{self.path}: missing num_landmarks/hidden/heatmap_size metadata")
        self.meta = meta

    def check(self, k: int, heatmap_size: int, backbone: str = "backbone") -> None:
        if (k, heatmap_size) != (self.k, self.heatmap_size):
            raise WeightsError(f"{self.path}: stabilizer expects {self.k} heatmaps of {self.heatmap_size}x{self.heatmap_size}, "
                               f"but the {backbone} gives {k} of {heatmap_size}x{heatmap_size}")

    def zeros(self, n: int = 1) -> tuple[np.ndarray, np.ndarray]:
        shape = (n, self.k * self.hidden, self.heatmap_size, self.heatmap_size)
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    def __call__(self, o: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s, h, c = self.session.run(None, {"o": onnx_util.as_float32(o), "h": h, "c": c})
        return s, h, c


class ConvLSTMStabilizer:
    """The paper's stabilizer: ConvLSTM over the backbone heatmaps, then PDC, then uncrop.

    With ``motion_compensation`` the ConvLSTM follows the face's translation (the median
    displacement of the raw landmarks since the last shift), so it averages away per-landmark
    noise without lagging behind head or camera motion. The state keeps its own frame,
    ``offset`` heatmap cells behind the crop's: each input is shifted by ``-offset`` into that
    frame (68 maps, bilinear) and the landmarks are shifted back exactly; whenever the offset
    reaches half a cell, the state moves by whole cells (a copy, no interpolation). This is the
    same as resampling the state every frame, on a quarter of the maps and without re-blurring the state.
    """

    min_shift = 0.1  # heatmap cells (0.4 crop px at stride 4) while the face moves: above the noise of a 68-point median
    min_shift_still = 0.2  # once no shift happened for ``still_after`` frames: noise alone rarely moves a still face's state
    still_after = 3
    prime_steps = 12  # a new track starts from the state of a face that has been still for a while (near the fixed point)

    def __init__(self, step: ConvLSTMStep, decoder: Decoder, motion_compensation: bool = True) -> None:
        self.step, self.decoder, self.motion_compensation = step, decoder, motion_compensation
        self.reset()

    def reset(self) -> None:
        self.h: np.ndarray | None = None
        self.c: np.ndarray | None = None
        self.crop: CropBox | None = None
        self.raw: np.ndarray | None = None
        self.offset = np.zeros(2)  # (x, y) heatmap cells: state index = crop index - offset
        self.since_shift = self.still_after  # a new track starts as a still face

    def update(self, heatmaps: np.ndarray, crop: CropBox, timestamp_ms: float) -> tuple[np.ndarray, np.ndarray]:
        if self.motion_compensation:
            raw, raw_scores = codec.decode_pdc(heatmaps, self.decoder.stride, self.decoder.threshold)
        else:
            raw, raw_scores = None, heatmaps.reshape(heatmaps.shape[0], -1).max(axis=-1)
        if self.h is None or self.c is None:
            self.h, self.c = self.step.zeros(1)
            for _ in range(self.prime_steps):
                _, self.h, self.c = self.step(heatmaps[None], self.h, self.c)
        else:
            if self.crop is not None and crop != self.crop:
                # the state moves into the new crop's frame, offset included
                m = crop_change(self.crop, crop, self.decoder.crop_size, self.decoder.stride)
                m = _compose(np.array([[1.0, 0.0, -self.offset[0]], [0.0, 1.0, -self.offset[1]]]), m)
                self._warp_state(m)
                self.offset = np.zeros(2)
                if self.raw is not None:  # previous raw landmarks, moved into the new crop
                    self.raw = to_crop(to_source(self.raw, self.crop, self.decoder.crop_size), crop, self.decoder.crop_size)
            if raw is not None and self.raw is not None:
                # displacement since the last shift; below the noise of the median, wait
                d = np.median(raw - self.raw, axis=0) / self.decoder.stride  # heatmap cells
                limit = self.min_shift if self.since_shift < self.still_after else self.min_shift_still
                self.since_shift += 1
                if np.hypot(*d) > limit:
                    self.since_shift = 0
                    self.raw = raw
                    self.offset = self.offset + d
                    whole = np.round(self.offset)
                    if whole.any():
                        self.h, self.c = (shift_whole(x, int(whole[0]), int(whole[1])) for x in (self.h, self.c))
                        self.offset = self.offset - whole
        self.crop = crop
        if self.raw is None:
            self.raw = raw
        o = heatmaps
        if self.offset.any():
            o = shift_maps(heatmaps, -float(self.offset[0]), -float(self.offset[1]))
        s, self.h, self.c = self.step(o[None], self.h, self.c)
        pts, _ = self.decoder(s[0], crop, self.offset * self.decoder.stride)
        return pts, raw_scores.astype(np.float32)

    def _warp_state(self, m: np.ndarray) -> None:
        n = self.h.shape[1]
        both = warp_maps(np.concatenate([self.h[0], self.c[0]]), m)
        self.h, self.c = both[None, :n], both[None, n:]


def shift_whole(maps: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``out[..., y, x] = maps[..., y - dy, x - dx]`` for whole cells, edges replicated (block copies)."""
    return _shift_axis(_shift_axis(maps, dy, -2), dx, -1)


def _shift_axis(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    if n == 0:
        return a
    size = a.shape[axis]
    n = max(-size, min(size, n))
    out = np.empty_like(a)
    dst, src = [slice(None)] * a.ndim, [slice(None)] * a.ndim
    if n > 0:  # content moves towards higher indices; the first n copy the first row
        dst[axis], src[axis] = slice(n, None), slice(0, size - n)
        out[tuple(dst)] = a[tuple(src)]
        dst[axis], src[axis] = slice(0, n), slice(0, 1)
    else:
        dst[axis], src[axis] = slice(0, size + n), slice(-n, None)
        out[tuple(dst)] = a[tuple(src)]
        dst[axis], src[axis] = slice(size + n, None), slice(size - 1, size)
    out[tuple(dst)] = a[tuple(src)]
    return out


def _compose(first: np.ndarray, then: np.ndarray) -> np.ndarray:
    """2x3 maps applied as ``first(then(q))`` (both map output coordinates to input ones)."""
    a = np.vstack([first, [0, 0, 1]]) @ np.vstack([then, [0, 0, 1]])
    return a[:2]


StabilizerFactory = Callable[[], Stabilizer]


def convlstm_reference(o: np.ndarray, h: np.ndarray, c: np.ndarray, w_gates: np.ndarray, b_gates: np.ndarray,
                       w_out: np.ndarray, b_out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numpy reference of one step for one face, for parity tests.

    o (K, H, W); h, c (K*hid, H, W); w_gates (K*4*hid, 1+hid, 3, 3); w_out (K, 1+hid, 1, 1).
    """
    k, hh, ww = o.shape
    hid = h.shape[0] // k
    z = np.concatenate([o[:, None], h.reshape(k, hid, hh, ww)], axis=1)  # (K, 1+hid, H, W)
    zp = np.pad(z, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(zp, (3, 3), axis=(2, 3))  # (K, 1+hid, H, W, 3, 3)
    wg = w_gates.reshape(k, 4 * hid, 1 + hid, 3, 3)
    gates = np.einsum("kchwab,kocab->kohw", win, wg) + b_gates.reshape(k, 4 * hid, 1, 1)
    i, f, g, og = np.split(gates, 4, axis=1)
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    c_new = sig(f) * c.reshape(k, hid, hh, ww) + sig(i) * np.tanh(g)
    h_new = sig(og) * np.tanh(c_new)
    zo = np.concatenate([o[:, None], h_new], axis=1)
    s = np.einsum("kchw,kc->khw", zo, w_out.reshape(k, 1 + hid)) + b_out.reshape(k, 1, 1)
    return s, h_new.reshape(k * hid, hh, ww), c_new.reshape(k * hid, hh, ww)
