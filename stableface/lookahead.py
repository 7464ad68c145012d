"""Fixed-lag smoothing of each track's landmarks over N frames ahead (and N behind).

    la = Lookahead(5)
    for result in results:            # FrameResults in frame order
        for out in la.update(result): # 0 or 1 results: the one from 5 frames back
            ...
    for out in la.flush():            # end of the source: the last 5
        ...

The result for frame t is emitted when frame t + N arrives: each face's landmarks become a
Gaussian-weighted local polynomial fit (quadratic by default, sigma = N / 4 frames, at least
0.5), evaluated at frame t, of the same face id's *input* landmarks over frames t - N .. t + N
(no recursion: a pure fixed-lag smoother, zero phase). The quadratic term lets a wider window
average noise without rounding off accelerations (speech, nods): on the real-motion benchmark
it beats a Gaussian mean of any width (``benchmarks/real_motion.py --sweep``). The window stops
where the id is absent from a frame, at a gap in the frame indices, and at the ends of what was
given (a track's start or end, the end of the source); the fit then uses what remains, so a
still face keeps its place exactly and a face moving at constant speed (or constant
acceleration) keeps its path everywhere, ends included.

Only ``landmarks`` change; ``box`` is the min/max of the smoothed landmarks; ``id``, ``score``,
``landmark_scores``, the frame index and the timestamp stay. Memory is O(N): at most 2N + 1
results are held. N = 0 is the identity: no buffering, the same objects come out.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from stableface.types import Face, FrameResult


def default_sigma(n: int) -> float:
    """Kernel width in frames for a window of N frames on each side."""
    return max(n / 4.0, 0.5)


def local_fit(k: np.ndarray, w: np.ndarray, x: np.ndarray, degree: int) -> np.ndarray:
    """Weighted least-squares polynomial of ``degree`` through samples ``x`` (M, D) at offsets ``k`` (M,),
    evaluated at offset 0 (its constant term)."""
    a = np.vander(k, degree + 1, increasing=True)  # (M, degree + 1)
    aw = a.T * w
    gram = aw @ a
    if np.linalg.cond(gram) > 1e10:  # too few distinct offsets for this degree
        return local_fit(k, w, x, degree - 1) if degree else (w @ x) / w.sum()
    return np.linalg.solve(gram, aw @ x)[0]


class Lookahead:
    """Per-track fixed-lag smoother (Gaussian-weighted local polynomial); ``update(result) -> [result N frames back]``."""

    def __init__(self, n: int, sigma: float | None = None, degree: int = 2) -> None:
        if int(n) != n or n < 0:
            raise ValueError(f"lookahead must be a whole number of frames >= 0, got {n}")
        self.n = int(n)
        self.sigma = default_sigma(self.n) if sigma is None else float(sigma)
        if not (np.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a positive number of frames, got {sigma}")
        if degree not in (0, 1, 2):
            raise ValueError(f"degree must be 0, 1 or 2, got {degree}")
        self.degree = degree
        offsets = np.arange(-self.n, self.n + 1, dtype=np.float64)
        self._weights = np.exp(-0.5 * (offsets / self.sigma) ** 2)  # index k + n for offset k
        self._buf: deque[tuple[FrameResult, dict[int, Face]]] = deque()
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
        self._buf.append((result, {f.id: f for f in result.faces}))
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
        result, _ = self._buf[i]
        faces = tuple(self._smooth(i, f) for f in result.faces)
        self._next += 1
        while self._next > self.n:  # keep N results behind the next one to emit
            self._buf.popleft()
            self._next -= 1
        if all(a is b for a, b in zip(faces, result.faces)):
            return result
        return FrameResult(result.frame, result.timestamp_ms, faces)

    def _usable(self, j: int, prev: int, face_id: int, step: int) -> Face | None:
        """The face ``face_id`` in ``_buf[j]`` when it continues the run from ``_buf[prev]``."""
        res, by_id = self._buf[j]
        if res.frame != self._buf[prev][0].frame + step:  # a gap in the frame indices ends the run
            return None
        f = by_id.get(face_id)
        return f if f is not None and np.all(np.isfinite(f.landmarks)) else None

    def _smooth(self, i: int, face: Face) -> Face:
        """Gaussian-weighted local polynomial fit over the face's run around ``_buf[i]``, at offset 0.

        With a full window and degree 0 or 1 this is the weighted mean; degree 2 also keeps
        accelerations. Where the run is cut short (a track's first or last frames, the end of the
        source) the fit uses what remains, so a moving face is not pulled towards the side that has frames.
        """
        if not np.all(np.isfinite(face.landmarks)):
            return face
        n, w = self.n, self._weights
        ks, pts = [0.0], [face.landmarks.astype(np.float64)]
        for step in (-1, 1):
            j = i
            for k in range(1, n + 1):
                if not 0 <= j + step < len(self._buf):
                    break
                f = self._usable(j + step, j, face.id, step)
                if f is None:
                    break
                j += step
                ks.append(float(step * k))
                pts.append(f.landmarks.astype(np.float64))
        if len(ks) == 1:  # alone in its window: nothing to average
            return face
        k = np.array(ks)
        x = np.stack(pts).reshape(len(ks), -1)
        fit = local_fit(k, w[(k + n).astype(int)], x, min(self.degree, len(ks) - 1)).reshape(face.landmarks.shape)
        pts = fit.astype(face.landmarks.dtype)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        return Face(face.id, (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), face.score, pts,
                    face.landmark_scores)
