"""Accuracy and stability metrics over landmark tracks, pure numpy.

Shapes: a track is (T, K, 2) (frames, landmarks, xy); a set of still images is (N, K, 2).
Normalisation is the inter-ocular distance (outer eye corners, iBUG 36 and 45) of the ground
truth, or a given per-sample ``norm``.
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
