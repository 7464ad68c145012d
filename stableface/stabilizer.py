"""Per-track landmark stabilizers with explicit state: ConvLSTM (the paper), One Euro, none.

Every stabilizer has ``update(heatmaps, crop, timestamp_ms) -> (points, scores)`` and
``reset()``; ``points`` (K, 2) are in source pixels, ``scores`` (K,) are the raw heatmap peaks.
One instance holds the state of one face: the tracker builds them with a factory.

The ConvLSTM (Eq. 1, ``h_t, c_t, s_t = ConvLSTM(h_{t-1}, c_{t-1}, o_t)``) is per landmark:
for each of the K heatmaps, a 3x3 convolution over ``[o_t^k, h_{t-1}^k]`` gives the i, f, g, o
gates of ``hidden`` channels; ``s_t^k`` is a 1x1 convolution over ``[o_t^k, h_t^k]``
(grouped convolutions, groups = K). The state lives in the face's own frame (the grid of the
track's first crop, carried along by the face's filtered motion: ``ConvLSTMStabilizer``); it is
never resampled. The grid geometry is in ``stableface.grid``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stableface import codec, grid, onnx_util
from stableface.crop import CropBox, to_crop, to_source
from stableface.onnx_util import WeightsError
from stableface.types import Stabilizer


class Decoder:
    """PDC (or argmax) decoding, the backbone's calibration offset, then the uncrop to source pixels.

    ``offset`` (K, 2, crop pixels; the backbone's ``landmark_offset``) is added to every decoded
    point, raw or stabilized, decoded with PDC (it is measured with PDC; argmax points go without):
    heatmaps in this pipeline are all in the backbone's convention, and the offset maps that
    convention onto the annotations'."""

    def __init__(self, crop_size: int, stride: float, method: str = "pdc", threshold: float = codec.DEFAULT_PDC_THRESHOLD,
                 mode: str = codec.DEFAULT_PDC_MODE, offset: np.ndarray | None = None) -> None:
        if method not in codec.DECODERS:
            raise ValueError(f"unknown decoder {method!r}")
        if mode not in codec.PDC_MODES:
            raise ValueError(f"unknown PDC mode {mode!r}")
        self.crop_size, self.stride, self.method, self.threshold, self.mode = crop_size, stride, method, threshold, mode
        self.offset = None if offset is None else np.asarray(offset, np.float32)

    def decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points in crop pixels (calibrated) and scores."""
        if self.method != "pdc":  # the offset is measured with PDC
            return codec.decode_argmax(heatmaps, self.stride)
        pts, scores = codec.decode_pdc(heatmaps, self.stride, self.threshold, self.mode)
        if self.offset is not None:
            pts = pts + self.offset
        return pts, scores

    def __call__(self, heatmaps: np.ndarray, crop: CropBox) -> tuple[np.ndarray, np.ndarray]:
        """Points in source pixels and scores."""
        pts, scores = self.decode(heatmaps)
        return to_source(pts, crop, self.crop_size).astype(np.float32), scores


class NoStabilizer:
    """The raw backbone: decode each frame on its own.

    With ``motion`` it also follows the face's frame (``FaceMotion``, by image flow when given the
    crop's pixels) and keeps it in ``frame``: the similarity a lookahead smooths the shape in."""

    def __init__(self, decoder: Decoder, motion: MotionConfig | None = None) -> None:
        self.decoder = decoder
        self.motion = None if motion is None else FaceMotion(motion)
        self.frame: np.ndarray | None = None

    def update(self, heatmaps: np.ndarray, crop: CropBox, timestamp_ms: float,
               image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        pts, scores = self.decoder(heatmaps, crop)
        self.follow(pts, crop, timestamp_ms, image)
        return pts, scores

    def follow(self, raw: np.ndarray, crop: CropBox, timestamp_ms: float, image: np.ndarray | None) -> None:
        """Carry the face's frame to this frame's raw landmarks (with ``motion`` only)."""
        if self.motion is not None:
            self.frame = self.motion.update(raw, timestamp_ms, crop.side, image, crop)

    def reset(self) -> None:
        self.frame = None
        if self.motion is not None:
            self.motion.reset()


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

    def update(self, heatmaps: np.ndarray, crop: CropBox, timestamp_ms: float,
               image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        pts, scores = self.decoder(heatmaps, crop)
        unit = crop.side / 100.0
        return (self.filter(pts / unit, timestamp_ms) * unit).astype(np.float32), scores

    def reset(self) -> None:
        self.filter.reset()


@dataclass(frozen=True)
class MotionConfig:
    """How the ConvLSTM's state follows the face; read by the runtime and by the training twin.

    The face's motion is a similarity (shift, scale, roll) mapping the track's first raw landmarks
    onto this frame's, tracked through the images of two anchor points. The pipeline gives the
    stabilizer the crop's pixels, and then (``flow``) the motion from the previous frame is
    measured in the image: pyramidal Lucas-Kanade flow of the previous raw landmarks from the
    previous crop into this one, a similarity fitted to it. Pixels move with the head but not
    with the backbone's noise, so the common-mode noise of the raw landmarks (which any filter of
    the landmark fit either passes on or pays for in lag) stays out of the state's frame. The
    landmark fit pulls the tracked anchors back by ``flow_pull`` per frame, so the flow's drift
    cannot build up. Without the pixels (a caller that gives heatmaps only) the landmark fit is
    filtered by a One Euro filter instead (in units of 1/100 of the first crop's side). The
    ConvLSTM then sees a face that holds still up to its non-rigid motion and a small residual.
    """

    enabled: bool = True
    min_cutoff: float = 1.5  # Hz
    beta: float = 0.3  # per (unit / s)
    d_cutoff: float = 1.0  # Hz
    prime_steps: int = 12  # a new track starts from the state of a face that has been still for a while
    # Image flow (where the stabilizer is given the crop's pixels): the motion from the previous
    # frame is measured by pyramidal Lucas-Kanade flow of the previous raw landmarks between the two
    # crops, and the landmark fit only pulls the result back by ``flow_pull`` per frame (a
    # complementary filter: the flow's short-term precision, the landmarks' long-term truth).
    flow: bool = True
    flow_pull: float = 0.05  # chosen on the real-motion training clips (0.05, 0.1, 0.2)
    flow_window: int = 11  # LK window side, crop pixels (9, 11, 15, 21, 31 tried; 11: as good as 15 at half its time)
    flow_levels: int = 2  # LK pyramid levels above the crop


FLOW_OUTLIER = 3.0
"""Crop pixels: a flowed point further than this from the similarity fitted to all of them is left out
(speech moves the mouth and jaw by about a pixel against the head in a frame; a lost LK point, many)."""

FLOW_LOST = 0.1
"""Of the crop side: where the flow's motion puts the face this far from the landmarks' fit, the flow has
lost it (a cut the shot test missed, an occlusion), and the face's frame starts again from the landmarks."""


class FaceMotion:
    """The filtered similarity of one face: its first raw landmarks -> now (source pixels).

    ``update`` with the crop's pixels (``image``, ``crop``) follows the face by image flow from the
    previous frame, pulled towards the landmark fit (``MotionConfig.flow``); without them (the
    training twin, a stabilizer given heatmaps only) it One-Euro-filters the landmark fit."""

    def __init__(self, config: MotionConfig = MotionConfig()) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.ref: np.ndarray | None = None
        self.anchors: np.ndarray | None = None
        self.unit = 1.0
        self.filter = OneEuro(self.config.min_cutoff, self.config.beta, self.config.d_cutoff)
        self.current: np.ndarray | None = None  # the anchors' filtered images (flow path)
        self.previous: tuple[np.ndarray, CropBox, np.ndarray] | None = None  # grey crop, its box, raw landmarks

    def update(self, landmarks: np.ndarray, timestamp_ms: float, unit: float, image: np.ndarray | None = None,
               crop: CropBox | None = None, moved: np.ndarray | None = None) -> np.ndarray:
        """2x3 similarity mapping the first frame's landmarks onto this frame's (source px).

        ``image``/``crop``: this frame's crop pixels and box, for the image flow; ``moved``: the
        frame-to-frame similarity measured some other way (the training twin passes the ground
        truth's), used instead of the flow."""
        pts = np.asarray(landmarks, np.float64)
        first = self.ref is None
        if first:
            self.ref, self.unit = pts.copy(), unit / 100.0
            c = pts.mean(axis=0)
            self.anchors = np.array([c, c + [unit / 2, 0.0]])
        if not self.config.enabled:
            return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        seen = apply_affine(fit_similarity(self.ref, pts), self.anchors)
        if self.config.flow and (moved is not None or (image is not None and crop is not None)):
            if image is not None and crop is not None:
                if image.ndim not in (2, 3) or image.shape[0] != image.shape[1]:
                    raise ValueError(f"image must be the face's square crop, got an array of shape {image.shape}")
                grey = image.copy() if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
                if moved is None:
                    moved = self._flow_step(grey, crop)
                self.previous = (grey, crop, pts)
            a = self.config.flow_pull
            if first or self.current is None:
                self.current = seen.copy()
            elif moved is None:  # the flow failed: hold the frame, and the landmarks pull it as usual
                self.current = (1.0 - a) * self.current + a * seen
            else:
                ahead = apply_affine(moved, self.current)
                if np.abs(ahead - seen).max() > FLOW_LOST * unit:  # the flow has lost the face (an unseen cut, an
                    self.current = seen.copy()                     # occlusion): start again from the landmarks
                else:
                    self.current = (1.0 - a) * ahead + a * seen
            smooth = self.current
        else:
            smooth = self.filter(seen / self.unit, timestamp_ms) * self.unit
        return fit_similarity(self.anchors, smooth)  # exact for two point pairs

    def _flow_step(self, grey: np.ndarray, crop: CropBox) -> np.ndarray | None:
        """The similarity (source px) that moved the previous raw landmarks onto this frame, by LK flow
        between the previous crop and this one; None without a previous frame or when the flow fails."""
        if self.previous is None:
            return None
        pgrey, pcrop, ppts = self.previous
        if pgrey.shape != grey.shape:
            return None
        size = grey.shape[0]
        p0 = to_crop(ppts, pcrop, size).astype(np.float32).reshape(-1, 1, 2)
        w = self.config.flow_window
        p1, status, _ = cv2.calcOpticalFlowPyrLK(pgrey, grey, p0, None, winSize=(w, w), maxLevel=self.config.flow_levels)
        if p1 is None:
            return None
        ok = status.ravel() == 1
        if ok.sum() < max(3, len(ok) // 2):
            return None
        src, dst = ppts[ok], to_source(p1.reshape(-1, 2)[ok], crop, size)
        m = fit_similarity(src, dst)
        # points the similarity does not explain (LK lost them) are left out, and the fit is made again
        residual = np.linalg.norm(apply_affine(m, src) - dst, axis=-1) * (size / crop.side)  # crop pixels
        keep = residual < FLOW_OUTLIER
        if keep.sum() < max(3, len(ok) // 2):
            return None
        return m if keep.all() else fit_similarity(src[keep], dst[keep])


def motion_config(fields: object) -> MotionConfig:
    """A ``MotionConfig`` from a model's metadata (a dict; anything else: the defaults). Fields it does not
    know (a newer model's) are ignored; fields a model lacks (an older one's) take their defaults."""
    if not isinstance(fields, dict):
        return MotionConfig()
    known = {f.name for f in dataclasses.fields(MotionConfig)}
    return MotionConfig(**{k: v for k, v in fields.items() if k in known})


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 similarity (no reflection) mapping points ``src`` (N, 2) onto ``dst`` (N, 2),
    or onto each of a stack ``dst`` (..., N, 2): then (..., 2, 3)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if dst.ndim == 2:  # one pair of point sets (the per-frame hot path): the same sums, without the stacking
        ms, md = src.mean(0), dst.mean(0)
        a, b = src - ms, dst - md
        den = float(np.einsum("ij,ij->", a, a))
        if den <= 1e-12:
            return np.array([[1.0, 0.0, md[0] - ms[0]], [0.0, 1.0, md[1] - ms[1]]])
        sc = float(np.einsum("ij,ij->", a, b)) / den
        ss = float(a[:, 0] @ b[:, 1] - a[:, 1] @ b[:, 0]) / den
        return np.array([[sc, -ss, md[0] - sc * ms[0] + ss * ms[1]], [ss, sc, md[1] - ss * ms[0] - sc * ms[1]]])
    ms, md = src.mean(0), dst.mean(-2)
    a, b = src - ms, dst - md[..., None, :]
    den = (a ** 2).sum()
    if den <= 1e-12:
        return np.concatenate([np.broadcast_to(np.eye(2), md.shape[:-1] + (2, 2)), (md - ms)[..., None]], axis=-1)
    sc = (a * b).sum(axis=(-2, -1)) / den  # s cos(theta)
    ss = (a[:, 0] * b[..., 1] - a[:, 1] * b[..., 0]).sum(axis=-1) / den  # s sin(theta)
    r = np.stack([np.stack([sc, -ss], axis=-1), np.stack([ss, sc], axis=-1)], axis=-2)
    return np.concatenate([r, (md - r @ ms)[..., None]], axis=-1)


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points (..., N, 2) through the 2x3 affine ``m`` (or a stack of them, (..., 2, 3))."""
    return np.asarray(pts, np.float64) @ np.swapaxes(m[..., :2], -1, -2) + m[..., None, :, 2]


def state_to_input(ref: CropBox, crop: CropBox, motion: np.ndarray, crop_size: int, stride: float) -> np.ndarray:
    """Pull map: grid index of the state frame (``ref``'s grid) -> grid index of ``crop``'s heatmaps,
    through the face's motion (2x3, source pixels of the first frame -> now)."""
    return grid.compose(grid.source_to_index(crop, crop_size, stride), motion, grid.index_to_source(ref, crop_size, stride))


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
        motion = meta.get("motion")
        self.motion = motion_config(motion)
        # the stabilized points' mean offset from the raw ones (state-frame crop pixels), measured on
        # training sequences by `stableface calibrate stabilizer` and taken off every output
        self.output_offset = onnx_util.point_offsets(meta, "output_offset", self.k, self.path)

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


@dataclass(frozen=True)
class DeviationConfig:
    """How far the ConvLSTM's points may stray from the raw ones (fractions of the face's width, the
    extent of its raw landmarks), a runtime guard on the network's output (the twin trains without it).

    Noise makes a stabilized point's deviation from its raw one flicker about zero; a point the slow
    state leaves behind (the jaw contour under a head turn, which the face's similarity motion does not
    carry) deviates the same way frame after frame. So the guard bounds the deviation's moving average
    (rate ``rate`` per frame) softly by ``drift`` and takes the excess off the point, which leaves the
    noise the network removed out and brings a lagging point back within a few frames; each frame's
    deviation is then bounded softly by ``limit``. A point is left behind only while the face moves:
    on a still face (its motion, the moving average of how far the face's frame carries its landmarks
    from one frame to the next, well below ``still_speed`` of its width) both bounds are up to
    ``1 + still_gain`` times looser, by ``1 + still_gain * exp(-(speed / still_speed)^2)``.

    Chosen on the 16 real-motion *training* clips (``python benchmarks/deviation_guard.py``: offline on
    the unguarded network's tracks, ``drift`` 0.002-0.004 x ``rate`` 0.35-0.7 x ``limit`` 0.01-0.03):
    jitter error 0.387-0.390% over the plateau ``rate`` <= 0.5, ``limit`` <= 0.02, NRMSE within 0.5% of
    raw's, against 0.421% for the previous guard (a bound of 0.006 on each frame's deviation alone); of
    the plateau, the setting that held synthetic still faces best. Through the pipeline 0.405% against
    0.429%. Without any guard a head turn leaves jaw points behind for 40 frames (NRMSE 6.7% against
    raw's 4.1% on those clips). ``still_speed``: the face's motion per frame is 0.04-0.09% of its width
    on the synthetic still faces (10th-90th percentile; the flow's own noise) and 0.3-3.3% on those
    training clips, so 0.15% parts them; ``still_gain`` 3 (2 and 5 alike): still faces -47% -> -51%
    of raw jitter, the training clips' jitter error 0.4052% -> 0.4067% at NRMSE 4.093% -> 4.094%.
    """

    drift: float = 0.003
    rate: float = 0.35
    limit: float = 0.015
    still_speed: float = 0.0015
    still_gain: float = 3.0  # 0: the same bounds whether the face moves or not


DEVIATION = DeviationConfig()


def soft_bound(d: np.ndarray, bound: float) -> np.ndarray:
    """Each row of ``d`` (K, 2) shortened along itself to ``bound * tanh(|d| / bound)``: never longer than
    ``bound``, and a short one almost unchanged."""
    n = np.linalg.norm(d, axis=-1, keepdims=True)
    return d * np.where(n > 1e-12, bound * np.tanh(n / bound) / np.maximum(n, 1e-12), 1.0)


def limit_deviation(points: np.ndarray, raw: np.ndarray, limit: float | None) -> np.ndarray:
    """``points`` pulled towards ``raw`` wherever they stray more than ``limit`` x the face width:
    each point's deviation d becomes ``limit * width * tanh(|d| / (limit * width))`` along d (smooth, never
    larger than the bound; a small deviation passes almost unchanged). ``limit`` None or 0: unchanged."""
    if not limit:
        return points
    r = np.asarray(raw, np.float64)
    bound = limit * float(np.ptp(r, axis=0).max())
    if not bound > 0:  # raw points with no extent (or NaN): no face size to scale the bound by
        return points
    return (r + soft_bound(np.asarray(points, np.float64) - r, bound)).astype(np.asarray(points).dtype)


class DeviationGuard:
    """One track's ``DeviationConfig`` guard: ``guard(points, raw)`` -> the points it lets out."""

    def __init__(self, config: DeviationConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.mean: np.ndarray | None = None  # the moving average of (points - raw), source pixels
        self.speed: float | None = None  # the moving average of the face's motion, of its width per frame

    def __call__(self, points: np.ndarray, raw: np.ndarray, moved: float | None = None) -> np.ndarray:
        """``moved``: how far (source pixels, mean over the landmarks) the face's frame carried the face
        since the previous frame; None (the first frame, or not known) counts as moving."""
        cfg = self.config
        r = np.asarray(raw, np.float64)
        p = np.asarray(points, np.float64)
        width = float(np.ptp(r, axis=0).max()) if np.isfinite(r).all() else float("nan")
        if not (width > 0 and np.isfinite(p).all()):  # no face size to scale by: nothing to guard, start again
            self.reset()
            return points
        d = p - r
        self.mean = d if self.mean is None else cfg.rate * d + (1.0 - cfg.rate) * self.mean
        loose = 1.0
        if moved is not None and np.isfinite(moved):
            v = moved / width
            self.speed = v if self.speed is None else cfg.rate * v + (1.0 - cfg.rate) * self.speed
            if cfg.still_gain and cfg.still_speed > 0:
                loose += cfg.still_gain * float(np.exp(-(self.speed / cfg.still_speed) ** 2))
        excess = self.mean - soft_bound(self.mean, cfg.drift * width * loose)
        return (r + soft_bound(p - excess - r, cfg.limit * width * loose)).astype(np.asarray(points).dtype)


class ConvLSTMStabilizer:
    """The paper's stabilizer, in the face's own frame: ConvLSTM over the backbone heatmaps, then PDC.

    The state lives on the heatmap grid of the track's first crop (the *state frame*). Each
    frame: the raw landmarks give the face's filtered motion (``FaceMotion``); the input heatmaps
    are pulled into the state frame through that motion and the current crop (one exact bilinear
    warp of the K maps); the ConvLSTM steps; its output is decoded with PDC and carried back
    through the same motion to source pixels. The state itself is never resampled: crop moves
    and head motion only change the warp of the input. Last, the points are held near their raw
    ones (``deviation``: a ``DeviationConfig``; None: the network's output as it is).
    """

    def __init__(self, step: ConvLSTMStep, decoder: Decoder, motion: MotionConfig | None = None,
                 deviation: DeviationConfig | None = DEVIATION) -> None:
        self.step, self.decoder = step, decoder
        self.guard = DeviationGuard(deviation) if deviation is not None else None
        self.motion = FaceMotion(motion or step.motion)
        self.reset()

    def reset(self) -> None:
        self.h: np.ndarray | None = None
        self.c: np.ndarray | None = None
        self.ref: CropBox | None = None  # the state frame's crop
        self.motion.reset()
        self.last_motion: np.ndarray | None = None  # the previous frame's (for the guard: is the face still?)
        if self.guard is not None:
            self.guard.reset()

    def update(self, heatmaps: np.ndarray, crop: CropBox, timestamp_ms: float,
               image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        raw, scores = self._raw(heatmaps, crop)
        motion, o = self._input(raw, heatmaps, crop, timestamp_ms, image)
        s = self._step(o)
        return self._output(s, motion, raw), scores

    def _input(self, raw: np.ndarray, heatmaps: np.ndarray, crop: CropBox, timestamp_ms: float,
               image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The face's filtered motion (by image flow when ``image``, the crop's pixels, is given) and
        the input maps pulled into the state frame."""
        motion = self.motion.update(raw, timestamp_ms, crop.side, image, crop)
        return motion, grid.warp(heatmaps, self.state_to_input(crop, motion))

    def _raw(self, heatmaps: np.ndarray, crop: CropBox) -> tuple[np.ndarray, np.ndarray]:
        """Raw landmarks in source pixels (and their scores); the first call fixes the state frame."""
        if self.ref is None:
            self.ref = crop
        return self.decoder(heatmaps, crop)

    def state_to_input(self, crop: CropBox, motion: np.ndarray) -> np.ndarray:
        return state_to_input(self.ref, crop, motion, self.decoder.crop_size, self.decoder.stride)

    def _step(self, o: np.ndarray) -> np.ndarray:
        if self.h is None or self.c is None:  # a new track: primed as a face that has held still
            self.h, self.c = self.step.zeros(1)
            for _ in range(self.motion.config.prime_steps):
                _, self.h, self.c = self.step(o[None], self.h, self.c)
        s, self.h, self.c = self.step(o[None], self.h, self.c)
        return s[0]

    def _output(self, s: np.ndarray, motion: np.ndarray, raw: np.ndarray, q: np.ndarray | None = None) -> np.ndarray:
        """PDC of the stabilized maps (state frame), carried to source pixels by the face's motion
        (``q``: that PDC, already decoded in crop pixels), held near ``raw`` by the deviation guard."""
        if q is None:
            q, _ = self.decoder.decode(s)
        if self.step.output_offset is not None:
            q = q - self.step.output_offset
        out = apply_affine(motion, to_source(q, self.ref, self.decoder.crop_size)).astype(np.float32)
        if self.guard is None:
            return out
        moved = None  # how far the face's frame carried the face since the previous frame (is it still?)
        if self.last_motion is not None and self.motion.ref is not None:
            face = self.motion.ref
            moved = float(np.linalg.norm(apply_affine(motion, face) - apply_affine(self.last_motion, face), axis=-1).mean())
        self.last_motion = motion
        return self.guard(out, raw, moved)


def update_many(stabilizers: list[Stabilizer], heatmaps: np.ndarray, crops: list[CropBox],
                timestamp_ms: float, images: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[s.update(h, crop, timestamp_ms, image) ...]`` (``images``: the crops' pixels, or None) for the faces of one frame, with the same results,
    batched: ConvLSTM stabilizers that share a step model take one step call for all their faces
    (and one PDC decode of all their maps); the others update one by one."""
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(stabilizers)
    pixels = [None] * len(stabilizers) if images is None else images
    groups: dict[tuple[int, int], list[int]] = {}
    raw: dict[int, list[int]] = {}  # NoStabilizer faces by decoder: one PDC call for all their maps
    for i, s in enumerate(stabilizers):
        if isinstance(s, ConvLSTMStabilizer):
            groups.setdefault((id(s.step), id(s.decoder)), []).append(i)
        elif type(s) is NoStabilizer and isinstance(s.decoder, Decoder):  # (any callable decoder goes one by one)
            raw.setdefault(id(s.decoder), []).append(i)
        else:
            out[i] = s.update(heatmaps[i], crops[i], timestamp_ms) if pixels[i] is None else \
                s.update(heatmaps[i], crops[i], timestamp_ms, pixels[i])  # (a stabilizer may not take pixels)
    maps = np.asarray(heatmaps)
    for idx in raw.values():
        dec = stabilizers[idx[0]].decoder
        pts, scores = dec.decode(maps[idx] if len(idx) < len(maps) else maps)
        for j, i in enumerate(idx):
            out[i] = to_source(pts[j], crops[i], dec.crop_size).astype(np.float32), scores[j]
            stabilizers[i].follow(out[i][0], crops[i], timestamp_ms, pixels[i])
    for idx in groups.values():
        if len(idx) == 1:
            i = idx[0]
            out[i] = stabilizers[i].update(heatmaps[i], crops[i], timestamp_ms, pixels[i])
            continue
        stabs = [stabilizers[i] for i in idx]
        dec = stabs[0].decoder
        hm = np.stack([heatmaps[i] for i in idx])
        pts, scores = dec.decode(hm)  # the raw landmarks of every face at once (crop pixels)
        motions, os, raws = [], [], []
        for j, (s, i) in enumerate(zip(stabs, idx)):
            if s.ref is None:
                s.ref = crops[i]
            raw = to_source(pts[j], crops[i], dec.crop_size).astype(np.float32)
            m, o = s._input(raw, heatmaps[i], crops[i], timestamp_ms, pixels[i])
            motions.append(m)
            os.append(o)
            raws.append(raw)
        st = _step_many(stabs, np.stack(os))
        qs, _ = dec.decode(st)
        for j, (s, i) in enumerate(zip(stabs, idx)):
            out[i] = s._output(st[j], motions[j], raws[j], qs[j]), scores[j]
    return out  # type: ignore[return-value]


def _step_many(stabs: list[ConvLSTMStabilizer], o: np.ndarray) -> np.ndarray:
    """One ConvLSTM step for several faces in one call (new tracks are primed together first)."""
    step = stabs[0].step
    new = [j for j, s in enumerate(stabs) if s.h is None or s.c is None]
    for steps in sorted({stabs[j].motion.config.prime_steps for j in new}):
        js = [j for j in new if stabs[j].motion.config.prime_steps == steps]
        h, c = step.zeros(len(js))
        for _ in range(steps):
            _, h, c = step(o[js], h, c)
        for n, j in enumerate(js):
            stabs[j].h, stabs[j].c = h[n:n + 1], c[n:n + 1]
    s, h, c = step(o, np.concatenate([x.h for x in stabs]), np.concatenate([x.c for x in stabs]))
    for n, x in enumerate(stabs):
        x.h, x.c = h[n:n + 1], c[n:n + 1]
    return s


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
