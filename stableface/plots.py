"""PNG plots for ``stableface evaluate --plot DIR`` (matplotlib, imported only here)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from stableface import ibug

COLOURS = {"none": "#d62728", "raw": "#d62728", "one-euro": "#ff7f0e", "convlstm": "#1f77b4", "pdc": "#1f77b4",
           "argmax": "#7f7f7f", "annotation": "#2ca02c"}


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(f"--plot needs matplotlib: pip install 'stableface[plot]' ({exc})") from None
    return plt


def save(fig, ax, path: Path, fontsize: float | None = None, grid: bool = True) -> Path:
    """The common end of every plot: grid, legend, tight layout, PNG written, figure closed."""
    if grid:
        ax.grid(alpha=0.3)
    ax.legend(fontsize=fontsize)
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)
    return path


def error_cdf(errors: dict[str, np.ndarray], path: Path, title: str = "", limit: float = 0.10) -> Path:
    """Cumulative error distribution: share of samples with NME <= x, x up to ``limit`` (fractions)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    xs = np.linspace(0, limit, 201)
    for name, e in errors.items():
        e = np.sort(np.asarray(e, dtype=np.float64)[np.isfinite(e)])
        ax.plot(xs * 100, np.searchsorted(e, xs, side="right") / max(len(e), 1), label=name, color=COLOURS.get(name))
    ax.set(xlabel="NME (% of normaliser)", ylabel="share of samples", ylim=(0, 1.01), xlim=(0, limit * 100),
           title=title or "cumulative error distribution")
    return save(fig, ax, path)


def trajectories(tracks: dict[str, np.ndarray], landmarks: list[int], path: Path, gt: np.ndarray | None = None,
                 fps: float = 25.0, title: str = "") -> Path:
    """x and y (pixels) over time of the chosen landmarks, one row per landmark, per stabilizer."""
    plt = _plt()
    fig, axes = plt.subplots(len(landmarks), 2, figsize=(10, 2.2 * len(landmarks)), dpi=110, sharex=True, squeeze=False)
    for r, k in enumerate(landmarks):
        for c, axis in enumerate("xy"):
            ax = axes[r, c]
            if gt is not None:
                t = np.arange(len(gt)) / fps
                ax.plot(t, gt[:, k, c], color=COLOURS["annotation"], lw=1.0, label="annotation")
            for name, tr in tracks.items():
                t = np.arange(len(tr)) / fps
                ax.plot(t, tr[:, k, c], color=COLOURS.get(name), lw=1.0 if name in ("none", "raw") else 1.4, label=name)
            ax.set_ylabel(f"point {k} {axis} (px)")
            ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    axes[-1, 1].set_xlabel("time (s)")
    fig.suptitle(title or "landmark trajectories")
    return save(fig, axes[0, 1], path, fontsize=8, grid=False)


def frame_jitter(tracks: dict[str, np.ndarray], path: Path, gt: np.ndarray | None = None, fps: float = 25.0,
                 title: str = "") -> Path:
    """Per frame, the mean landmark step |p_t - p_{t-1}| (or, with annotations, the jitter error
    |(p_t - p_{t-1}) - (g_t - g_{t-1})|), % of the inter-ocular distance."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=110)
    for name, tr in tracks.items():
        step = np.diff(tr, axis=0)
        if gt is not None:
            n = min(len(tr), len(gt))
            step = step[:n - 1] - np.diff(gt[:n], axis=0)
        ref = gt if gt is not None else tr
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            iod = float(np.nanmean(ibug.interocular(ref)))
        with warnings.catch_warnings():  # frames without a face or annotation are NaN gaps in the curve
            warnings.simplefilter("ignore", RuntimeWarning)
            per_frame = 100 * np.nanmean(np.linalg.norm(step, axis=-1), axis=-1) / iod
        ax.plot(np.arange(1, len(per_frame) + 1) / fps, per_frame, color=COLOURS.get(name), lw=1.0, label=name)
    ax.set(xlabel="time (s)", ylabel=("jitter error" if gt is not None else "mean step") + " (% IOD)",
           title=title or "per-frame jitter")
    return save(fig, ax, path)
