"""Fixed-lag smoothing of each track's landmarks over N frames ahead (and N behind).

    la = Lookahead(5)
    for result in results:            # FrameResults in frame order
        for out in la.update(result): # 0 or 1 results: the one from 5 frames back
            ...
    for out in la.flush():            # end of the source: the last 5
        ...

The result for frame t is emitted when frame t + N arrives: each face's landmarks become a
Gaussian-weighted local polynomial fit (quadratic by default), evaluated at frame t, of the same
face id's *input* landmarks over frames t - N .. t + N (no recursion: a pure fixed-lag smoother,
zero phase). The quadratic term lets a wider window average noise without rounding off
accelerations (speech, nods).

By default (``mode="split"``) the fit is split in two:

- the face's motion: a least-squares similarity from frame t's landmarks to each frame's, its
  four parameters fitted with sigma ``rigid_sigma`` (N / 4 frames, between 0.5 and 1.25);
- its shape in its own frame: each frame's landmarks carried back by that similarity, fitted
  with sigma ``sigma`` (N / 4 frames, between 0.5 and 2);

then put together again. Head motion is fast and is measured from all 68 points at once, so it
takes little smoothing; the shape (where the per-point noise is) takes more.

Where every face of the window carries its frame (``Face.frame``: the pipeline follows each face by
image flow, ``stabilizer.FaceMotion``), the motion is that frame's, measured in the image rather than
fitted to the noisy landmarks, and only the shape is smoothed, in it, with sigma ``flow_sigma``
(``default_flow_sigma``: 5N / 16 frames, at most 2.5). On the real-motion
benchmark this beats one fit of the points at any width (``benchmarks/real_motion.py --sweep``);
the widths were chosen on real-motion training clips, whose stills and motion the benchmark does
not use. ``mode="plain"`` is the single fit of the points (sigma N / 4), the previous release's.

The window stops where the id is absent from a frame, at a gap in the frame indices, and at the
ends of what was given (a track's start or end, the end of the source); the fit then uses what
remains, so a still face keeps its place exactly and a face moving at constant speed (or
constant acceleration) keeps its path everywhere, ends included.

Only ``landmarks`` change; ``box`` is the min/max of the smoothed landmarks; ``id``, ``score``,
``landmark_scores``, the frame index and the timestamp stay. Memory is O(N): at most 2N + 1
results are held. N = 0 is the identity: no buffering, the same objects come out.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from stableface.crop import invert
from stableface.grid import h3
from stableface.stabilizer import apply_affine, fit_similarity
from stableface.types import Face, FrameResult


MODES = ("split", "plain")


def default_sigma(n: int, mode: str = "split") -> float:
    """Kernel width in frames for a window of N frames on each side (in ``split`` mode: of the shape).

    N / 4, at least 0.5; in ``split`` mode at most 2 frames, the width chosen on the real-motion
    training clips (wider rounds off speech: N = 12 or 15 then smooths as N = 8 does)."""
    return min(max(n / 4.0, 0.5), 2.0 if mode == "split" else float("inf"))


def default_rigid_sigma(n: int) -> float:
    """Kernel width in frames of the face's motion in ``split`` mode: N / 4, between 0.5 and 1.25
    (chosen on the real-motion training clips: head motion is fast and measured from all points)."""
    return min(max(n / 4.0, 0.5), 1.25)


def default_flow_sigma(n: int) -> float:
    """Kernel width in frames of the shape in the face's frame followed by image flow: 5N / 16, between
    0.5 and 2.5 (2.5 at N = 8; chosen on the real-motion training clips, where 2, 2.5, 3 and 3.5 gave
    jitter errors of 0.338, 0.335, 0.341 and 0.349%: with the head's motion measured in the image, the
    shape alone is smoothed, and it takes a wider kernel than ``default_sigma``)."""
    return min(max(5.0 * n / 16.0, 0.5), 2.5)


def _relative(frames: np.ndarray) -> np.ndarray:
    """(M, 2, 3) similarities ``frames[j] @ frames[0]^-1``: the first frame's coordinates -> each frame's."""
    return frames @ h3(invert(frames[0]))


def similarities(ref: np.ndarray, pts: np.ndarray) -> np.ndarray | None:
    """The least-squares similarities (M, 2, 3) mapping ``ref`` (K, 2) onto each of ``pts`` (M, K, 2)
    (``stabilizer.fit_similarity``). None when ``ref`` has no extent, or when a frame's scale against
    it is outside (0.5, 2) (collapsed landmarks, an outlier): the caller then fits the points."""
    if float(((ref - ref.mean(axis=0)) ** 2).sum()) <= 1e-9:
        return None
    m = fit_similarity(ref, pts)
    scale = np.hypot(m[:, 0, 0], m[:, 1, 0])
    if not np.all((scale > 0.5) & (scale < 2.0)):  # a collapsed or wild frame in the window: no face frame to share
        return None
    return m


def invert_similarity(m: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Points ``x`` (M, K, 2) through the inverse of each similarity ``m`` (M, 2, 3): R^-1 (x - t),
    with R^-1 = R^T / s^2 for a similarity."""
    r = m[:, :, :2]
    return (x - m[:, None, :, 2]) @ r / (r[:, 0, 0] ** 2 + r[:, 1, 0] ** 2)[:, None, None]


def local_fit(k: np.ndarray, w: np.ndarray, x: np.ndarray, degree: int) -> np.ndarray:
    """Weighted least-squares polynomial of ``degree`` through samples ``x`` (M, D) at offsets ``k`` (M,),
    evaluated at offset 0 (its constant term). That value is linear in ``x``: ``fit_coefficients(k, w, degree) @ x``."""
    return fit_coefficients(k, w, degree) @ x


def fit_coefficients(k: np.ndarray, w: np.ndarray, degree: int) -> np.ndarray:
    """The (M,) weights that give ``local_fit``'s value from its samples (its constant term is linear in them)."""
    a = np.vander(k, degree + 1, increasing=True)  # (M, degree + 1)
    aw = a.T * w
    gram = aw @ a
    if np.linalg.cond(gram) > 1e10:  # too few distinct offsets for this degree
        return fit_coefficients(k, w, degree - 1) if degree else w / w.sum()
    return np.linalg.solve(gram, aw)[0]


class Lookahead:
    """Per-track fixed-lag smoother (Gaussian-weighted local polynomial); ``update(result) -> [result N frames back]``."""

    def __init__(self, n: int, sigma: float | None = None, degree: int = 2, mode: str = "split",
                 rigid_sigma: float | None = None, flow_sigma: float | None = None) -> None:
        if int(n) != n or n < 0:
            raise ValueError(f"lookahead must be a whole number of frames >= 0, got {n}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.n, self.mode = int(n), mode
        self.sigma = default_sigma(self.n, mode) if sigma is None else float(sigma)
        self.rigid_sigma = default_rigid_sigma(self.n) if rigid_sigma is None else float(rigid_sigma)
        self.flow_sigma = default_flow_sigma(self.n) if flow_sigma is None else float(flow_sigma)
        for name, v in (("sigma", self.sigma), ("rigid_sigma", self.rigid_sigma), ("flow_sigma", self.flow_sigma)):
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number of frames, got {v}")
        if degree not in (0, 1, 2):
            raise ValueError(f"degree must be 0, 1 or 2, got {degree}")
        self.degree = degree
        offsets = np.arange(-self.n, self.n + 1, dtype=np.float64)
        self._weights = np.exp(-0.5 * (offsets / self.sigma) ** 2)  # index k + n for offset k
        self._rigid_weights = np.exp(-0.5 * (offsets / self.rigid_sigma) ** 2)
        self._flow_weights = np.exp(-0.5 * (offsets / self.flow_sigma) ** 2)
        # fit_coefficients per (kernel, window offsets, degree): a window is a run of offsets, so a
        # track's windows take at most (N + 1)^2 shapes (full, or cut short at its ends)
        self._coefficients: dict[tuple[bool | str, bytes, int], np.ndarray] = {}
        # each result, with its faces' landmarks by id as float64 (None where they are not all finite)
        # and their frames by id (``Face.frame``, None where the face is not followed)
        self._buf: deque[tuple[FrameResult, dict[int, np.ndarray | None], dict[int, np.ndarray | None]]] = deque()
        self._next = 0  # position in _buf of the oldest result not yet emitted
        self._last_frame: int | None = None

    def reset(self) -> None:
        """Forget everything held (call between unrelated sources)."""
        self._buf.clear()
        self._next = 0
        self._last_frame = None

    def __len__(self) -> int:
        """Results held (inputs kept as context plus those not yet emitted); at most 2N + 1."""
        return len(self._buf)

    @property
    def pending(self) -> int:
        """Results taken in but not yet emitted (at most N between calls)."""
        return len(self._buf) - self._next

    def update(self, result: FrameResult) -> list[FrameResult]:
        """Take the next frame's result; returns the smoothed result of N frames back, once there is one."""
        if self._last_frame is not None and result.frame <= self._last_frame:
            raise ValueError(f"frame indices must increase: got frame {result.frame} after {self._last_frame} "
                             "(call flush() or reset() before starting another source)")
        self._last_frame = result.frame
        if self.n == 0:
            return [result]
        self._buf.append((result, {f.id: _points(f) for f in result.faces}, {f.id: f.frame for f in result.faces}))
        return [self._emit()] if self.pending > self.n else []

    def flush(self) -> list[FrameResult]:
        """The results not yet emitted, smoothed with what there is; then start afresh (as after ``reset()``)."""
        out = []
        while self.pending:
            out.append(self._emit())
        self.reset()
        return out

    def pop(self) -> FrameResult | None:
        """One step of ``flush()``: the oldest result not yet emitted, or None when none is held."""
        if not self.pending:
            self.reset()
            return None
        return self._emit()

    def _emit(self) -> FrameResult:
        i = self._next
        result = self._buf[i][0]
        faces = tuple(self._smooth(i, f) for f in result.faces)
        self._next += 1
        while self._next > self.n:  # keep N results behind the next one to emit
            self._buf.popleft()
            self._next -= 1
        if all(a is b for a, b in zip(faces, result.faces)):
            return result
        return FrameResult(result.frame, result.timestamp_ms, faces)

    def _usable(self, j: int, prev: int, face_id: int, step: int) -> np.ndarray | None:
        """The landmarks (float64) of face ``face_id`` in ``_buf[j]`` when it continues the run from ``_buf[prev]``."""
        res, by_id, _ = self._buf[j]
        if res.frame != self._buf[prev][0].frame + step:  # a gap in the frame indices ends the run
            return None
        return by_id.get(face_id)

    def _fit(self, k: np.ndarray, at: np.ndarray, degree: int, kernel: bool | str) -> np.ndarray:
        """``fit_coefficients`` of offsets ``k`` (window positions ``at``) with the shape (False), the motion
        (True) or the followed shape's (``"flow"``) kernel, cached."""
        key = (kernel, at.tobytes(), degree)
        c = self._coefficients.get(key)
        if c is None:
            w = self._flow_weights if kernel == "flow" else self._rigid_weights if kernel else self._weights
            c = self._coefficients[key] = fit_coefficients(k, w[at], degree)
        return c

    def _smooth(self, i: int, face: Face) -> Face:
        """Gaussian-weighted local polynomial fit over the face's run around ``_buf[i]``, at offset 0.

        With a full window and degree 0 or 1 this is the weighted mean; degree 2 also keeps
        accelerations. Where the run is cut short (a track's first or last frames, the end of the
        source) the fit uses what remains, so a moving face is not pulled towards the side that has frames.
        """
        own = self._buf[i][1].get(face.id)
        if own is None:  # (landmarks not all finite)
            return face
        n = self.n
        ks, pts, frames = [0.0], [own], [self._buf[i][2].get(face.id)]
        for step in (-1, 1):
            j = i
            for k in range(1, n + 1):
                if not 0 <= j + step < len(self._buf):
                    break
                x = self._usable(j + step, j, face.id, step)
                if x is None:
                    break
                j += step
                ks.append(float(step * k))
                pts.append(x)
                frames.append(self._buf[j][2].get(face.id))
        if len(ks) == 1:  # alone in its window: nothing to average
            return face
        k = np.array(ks)
        at = (k + n).astype(int)
        deg = min(self.degree, len(ks) - 1)
        x = np.stack(pts)
        followed = self.mode == "split" and all(f is not None for f in frames)
        sims = similarities(x[0], x) if self.mode == "split" and not followed else None
        if followed:
            # followed by image flow: the shape alone is fitted, in the face's frame; its motion is measured
            local = invert_similarity(_relative(np.stack(frames)), x).reshape(len(ks), -1)
            fit = (self._fit(k, at, deg, "flow") @ local).reshape(face.landmarks.shape)
        elif sims is None:
            fit = (self._fit(k, at, deg, False) @ x.reshape(len(ks), -1)).reshape(face.landmarks.shape)
        else:  # the motion and the shape in the face's frame, each with its own width, then together again
            shape = (self._fit(k, at, deg, False) @ invert_similarity(sims, x).reshape(len(ks), -1)).reshape(face.landmarks.shape)
            # the six entries of a similarity are linear in its four parameters: their fit is one
            motion = (self._fit(k, at, deg, True) @ sims.reshape(len(ks), 6)).reshape(2, 3)
            fit = apply_affine(motion, shape)
        pts = fit.astype(face.landmarks.dtype)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        return Face(face.id, (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), face.score, pts,
                    face.landmark_scores)


def _points(face: Face) -> np.ndarray | None:
    """A face's landmarks as float64, or None where they are not all finite (such a face is not smoothed)."""
    x = face.landmarks.astype(np.float64)
    return x if np.isfinite(x).all() else None
