"""Accuracy and stability metrics over landmark tracks, pure numpy.

Shapes: a track is (T, K, 2) (frames, landmarks, xy); a set of still images is (N, K, 2).
Normalisation is the inter-ocular distance (outer eye corners, iBUG 36 and 45) of the ground
truth, or a given per-sample ``norm``; the metrics taken from a paper (NMJ, FHR's time delay and
second difference) keep that paper's own normalisation. The video metrics below ``jitter_error``
skip frames with a non-finite value: only the frame pairs (or triples) finite throughout count.
"""

from __future__ import annotations

import numpy as np

from stableface import ibug


def _norm(gt: np.ndarray, norm: np.ndarray | float | None) -> np.ndarray:
    if norm is None:
        if gt.shape[-2] != ibug.K:
            raise ValueError("inter-ocular normalisation needs 68-point iBUG landmarks; pass norm=")
        return ibug.interocular(gt)
    return np.broadcast_to(np.asarray(norm, dtype=np.float64), gt.shape[:-2])


def nme(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray | float | None = None) -> np.ndarray:
    """Per-sample normalised mean error: mean_k ||p_k - g_k|| / norm. (..., K, 2) -> (...)."""
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=-1) / _norm(gt, norm)


def nrmse(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray | float | None = None) -> np.ndarray:
    """Per-frame normalised root-mean-squared error: sqrt(mean_k ||p_k - g_k||^2) / norm."""
    return np.sqrt((np.sum((pred - gt) ** 2, axis=-1)).mean(axis=-1)) / _norm(gt, norm)


def failure_rate(errors: np.ndarray, threshold: float) -> float:
    return float(np.mean(np.asarray(errors) > threshold))


def auc(errors: np.ndarray, limit: float = 0.10, steps: int = 1000) -> float:
    """Area under the cumulative error curve up to ``limit``, normalised to [0, 1]."""
    e = np.sort(np.asarray(errors))
    xs = np.linspace(0, limit, steps + 1)
    ys = np.searchsorted(e, xs, side="right") / max(len(e), 1)
    return float(np.trapezoid(ys, xs) / limit)


def jitter_error(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray | float | None = None) -> float:
    """mean_t,k ||(p_t - p_{t-1}) - (g_t - g_{t-1})|| / norm over a track (T, K, 2)."""
    d = np.linalg.norm(np.diff(pred, axis=0) - np.diff(gt, axis=0), axis=-1)  # (T-1, K)
    n = _norm(gt, norm)
    n = n[1:, None] if np.ndim(n) else n
    return float((d / n).mean())


def _finite(*tracks: np.ndarray) -> np.ndarray:
    """(T,) True where every value of every (T, K, 2) track is finite."""
    return np.logical_and.reduce([np.isfinite(t).all(axis=(-1, -2)) for t in tracks])


def _span(box: np.ndarray) -> np.ndarray:
    """Sides (x, y) of each frame's bounding box over its finite points, (T, K, 2) -> (T, 2); NaN if none."""
    return np.fmax.reduce(box, axis=-2) - np.fmin.reduce(box, axis=-2)


def nmj(pred: np.ndarray, gt: np.ndarray, box: np.ndarray | None = None) -> float:
    """Normalised mean jitter of LDEQ (Micaelli et al., "Recurrence without Recurrence", CVPR 2023),
    as their evaluation computes it (github.com/polo5/LDEQ_RwR, utils/loss_function.py, video_NMJ)::

        s_t     = sqrt(w_t h_t) / 256        w_t, h_t: sides of the box of the annotation at frame t
        j_{t,k} = 100 ||(g_t - p_t) - (g_{t-1} - p_{t-1})|| / s_t
        NMJ     = RMS_t RMS_k j_{t,k}

    Units: hundredths of a pixel on a face scaled to a 256 px box (sqrt of its area). ``box``
    (T, M, 2): the points whose box gives s_t (LDEQ: all annotated points; default ``gt``; NaN
    points ignored). Pairs with a non-finite prediction or annotation, or an empty box, are
    skipped; NaN when none is left.
    """
    box = gt if box is None else box
    wh = _span(box)
    s = np.sqrt(wh[:, 0] * wh[:, 1]) / 256.0
    ok = _finite(pred, gt) & (np.nan_to_num(s) > 0)
    pair = ok[1:] & ok[:-1]
    if not pair.any():
        return float("nan")
    j = 100 * np.linalg.norm(np.diff(gt - pred, axis=0)[pair], axis=-1) / s[1:][pair, None]  # (pairs, K)
    return float(np.sqrt(np.mean(np.sqrt(np.mean(j ** 2, axis=1)) ** 2)))


def _fhr_width(box: np.ndarray) -> np.ndarray:
    """FHR's face size (Width.m): the longer side of the annotation's box / 100, (T, K, 2) -> (T,)."""
    return _span(box).max(axis=-1) / 100.0


def fhr_time_delay(pred: np.ndarray, gt: np.ndarray, box: np.ndarray | None = None) -> float:
    """Time delay of FHR (Tai et al., "Towards Highly Accurate and Stable Face Alignment for
    High-Resolution Videos", AAAI 2019), term e1 of their evaluation code
    (github.com/tyshiwo/FHR_alignment, testing_code/loss_stable.m)::

        q_t = <p_t - g_t, g_{t-1} - g_t> / ||g_{t-1} - g_t||^2     (sums over all points and x, y)
        time delay = mean_t q_t

    The error projected on the step back along the true motion. Units: frames; on a track moving
    at constant velocity, p_t = g_{t-d} gives d (negative: ahead). Pairs count where both frames
    are finite and the annotation box is longer than 1 px (their ``w > .01``); pairs where the
    annotation does not move are skipped (the original divides by zero there). NaN when none is left.
    """
    box = gt if box is None else box
    ok = _finite(pred, gt) & (np.nan_to_num(_fhr_width(box)) > 0.01)
    back = gt[:-1] - gt[1:]  # g_{t-1} - g_t
    moved = (back ** 2).sum(axis=(-1, -2))
    pair = ok[1:] & ok[:-1] & (np.nan_to_num(moved) > 0)
    if not pair.any():
        return float("nan")
    err = (pred - gt)[1:]
    return float(np.mean((err * back).sum(axis=(-1, -2))[pair] / moved[pair]))


def fhr_second_diff(pred: np.ndarray, gt: np.ndarray, box: np.ndarray | None = None) -> float:
    """Second-difference (smoothness) error of FHR (Tai et al., AAAI 2019), term e3 of their
    evaluation code (github.com/tyshiwo/FHR_alignment, testing_code/loss_stable.m; ``sta1`` in
    test_300VW.m)::

        e_t = sqrt(mean_k ||p_t - (p_{t-1} + p_{t+1}) / 2||^2) / w_t,   w_t: FHR's face size at t
        error = mean_t e_t

    p_t - (p_{t-1} + p_{t+1}) / 2 is minus half the second difference of the prediction; the
    annotation only sets the scale, so true acceleration counts too (see ``second_diff_error``).
    Units: % of the longer side of the annotation box. Triples count where all three frames are
    finite and their boxes longer than 1 px; NaN when none is left.
    """
    box = gt if box is None else box
    w = _fhr_width(box)
    ok = _finite(pred, gt) & (np.nan_to_num(w) > 0.01)
    mid = ok[:-2] & ok[1:-1] & ok[2:]
    if not mid.any():
        return float("nan")
    dev = pred[1:-1] - (pred[:-2] + pred[2:]) / 2
    e = np.sqrt((dev ** 2).sum(axis=-1).mean(axis=-1)) / w[1:-1]
    return float(e[mid].mean())


def second_diff_error(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray | float | None = None) -> float:
    """mean_t,k ||(p_{t+1} - 2 p_t + p_{t-1}) - (g_{t+1} - 2 g_t + g_{t-1})|| / norm_t over (T, K, 2).

    The second-order counterpart of ``jitter_error``: acceleration the annotation does not have.
    Units: a fraction of ``norm`` at the middle frame. Triples count where all three frames and
    the norm are finite; NaN when none is left.
    """
    n = np.broadcast_to(_norm(gt, norm), gt.shape[:1])
    ok = _finite(pred, gt) & np.isfinite(n)
    mid = ok[:-2] & ok[1:-1] & ok[2:]
    if not mid.any():
        return float("nan")
    d = np.linalg.norm(np.diff(pred, 2, axis=0) - np.diff(gt, 2, axis=0), axis=-1)  # (T-2, K)
    return float((d[mid] / n[1:-1][mid, None]).mean())


def lag_costs(pred: np.ndarray, gt: np.ndarray, max_lag: int) -> np.ndarray:
    """c(tau) = mean_t,k ||(p_t - p_{t-1}) - (g_{t-tau} - g_{t-tau-1})|| in px for tau = -max_lag..max_lag.

    Each tau averages over its own finite step pairs; NaN where it has none. (2 max_lag + 1,).
    """
    dp, dg = np.diff(pred, axis=0), np.diff(gt, axis=0)
    okp, okg = _finite(dp), _finite(dg)
    i = np.arange(len(dp))
    out = np.full(2 * max_lag + 1, np.nan)
    for c, tau in enumerate(range(-max_lag, max_lag + 1)):
        j = i - tau
        keep = (j >= 0) & (j < len(dg))
        a, b = i[keep], j[keep]
        m = okp[a] & okg[b]
        if m.any():
            out[c] = np.linalg.norm(dp[a[m]] - dg[b[m]], axis=-1).mean()
    return out


def lag_frames(pred: np.ndarray, gt: np.ndarray, max_lag: int = 10, refine: bool = True) -> float:
    """Lag of the predicted motion behind the annotated one, in frames: the tau in [-max_lag,
    max_lag] minimising ``lag_costs`` (pooled over landmarks); positive: the prediction trails
    (p_t = g_{t-3} gives 3). Ties (within 1e-9 of the mean step) go to the smallest |tau|.
    ``refine``: a parabola through c(tau-1), c(tau), c(tau+1) moves it by up to half a frame.
    NaN when no tau has a pair, or when all costs tie (a still or constant-velocity annotation
    does not tell shifts apart).
    """
    c = lag_costs(pred, gt, max_lag)
    if not np.isfinite(c).any():
        return float("nan")
    steps = np.linalg.norm(np.diff(gt, axis=0), axis=-1)
    tol = 1e-9 * max(float(np.nanmean(steps)) if np.isfinite(steps).any() else 0.0, 1e-12)
    if np.nanmax(c) - np.nanmin(c) <= tol:
        return float("nan")
    taus = np.arange(-max_lag, max_lag + 1)
    best = np.flatnonzero(c <= np.nanmin(c) + tol)
    k = int(best[np.argmin(np.abs(taus[best]))])
    tau = float(taus[k])
    if refine and 0 < k < len(c) - 1 and np.isfinite(c[k - 1]) and np.isfinite(c[k + 1]):
        curve = c[k - 1] - 2 * c[k] + c[k + 1]
        if curve > 0:
            tau += float(np.clip(0.5 * (c[k - 1] - c[k + 1]) / curve, -0.5, 0.5))
    return tau


def allan_variance(track: np.ndarray) -> np.ndarray:
    """Eq. 11 per landmark: sum_t ||u_{t+1} - u_t||^2 / (2 (T - 1)). (T, K, 2) -> (K,)."""
    t = track.shape[0]
    if t < 2:
        raise ValueError("Allan variance needs at least 2 frames")
    return (np.diff(track, axis=0) ** 2).sum(axis=-1).sum(axis=0) / (2.0 * (t - 1))


def allan_deviation(track: np.ndarray, norm: float | None = None) -> float:
    """Mean over landmarks of sqrt(Allan variance); divided by ``norm`` when given."""
    dev = float(np.sqrt(allan_variance(track)).mean())
    return dev / norm if norm else dev


def cvar(track: np.ndarray) -> float:
    """Eq. 9 averaged over landmarks and coordinates: std (N-1) / mean of each coordinate over time."""
    mean = track.mean(axis=0)
    std = track.std(axis=0, ddof=1)
    return float(np.mean(std / mean))


def mcv(tracks: list[np.ndarray]) -> float:
    """Eq. 10: the mean CVar over videos."""
    return float(np.mean([cvar(t) for t in tracks]))


def sequence_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """pred, gt (N, T, K, 2): NME, jitter (std over time of the error) and jitter error, all % IOD."""
    n = gt.shape[0]
    iod = ibug.interocular(gt.mean(axis=1)).reshape(n, 1, 1) if gt.shape[2] == ibug.K else np.ones((n, 1, 1))
    err = pred - gt
    nme = (np.linalg.norm(err, axis=-1) / iod).mean()  # (N, T, K) / (N, 1, 1)
    dev = err - err.mean(axis=1, keepdims=True)
    std = np.sqrt((dev ** 2).sum(-1).mean(axis=1))  # (N, K): std over time of the error
    jit = (std / iod[:, 0]).mean()
    step = np.linalg.norm(np.diff(pred, axis=1) - np.diff(gt, axis=1), axis=-1)
    jerr = (step / iod).mean()
    return {"nme": float(nme * 100), "jitter": float(jit * 100), "jitter_error": float(jerr * 100)}
