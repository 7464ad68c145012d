"""``stableface demo``: a handheld-camera clip made from a public-domain photo, tracked raw and stabilized.

The photo is scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain). Each frame is the
photo under a known smooth similarity motion (drift, sway, a little zoom and roll) plus
Gaussian pixel noise. Because the motion is known, every tracked landmark can be mapped back
to the still photo, where the truth does not move: the spread of the mapped-back points over
time is the jitter, measured the same way for every stabilizer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from pathlib import Path

import cv2
import numpy as np

from stableface import ibug
from stableface.crop import apply, invert
from stableface.pipeline import Pipeline, PipelineConfig
from stableface.sinks import JsonSink, VideoSink, partial_path
from stableface.types import Frame
from stableface.video import SourceInfo

FPS = 25.0
OUTPUTS = ("demo.mp4", "demo.json", "demo_jitter.json", "demo_trajectories.png")  # what run_demo writes in its folder


def load_photo() -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise SystemExit("stableface: error: the demo needs scikit-image: pip install 'stableface[demo]'") from None
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def motion(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, 2, 3) smooth handheld-like similarity transforms, photo -> frame."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    def smooth_walk(scale: float) -> np.ndarray:
        w = np.cumsum(rng.normal(0, 1, n))
        w = np.convolve(w, np.ones(9) / 9, mode="same")
        return scale * (w - w.mean()) / (np.abs(w - w.mean()).max() + 1e-9)
    dx = smooth_walk(14) + 6 * np.sin(2 * np.pi * 0.35 * t)
    dy = smooth_walk(10) + 4 * np.sin(2 * np.pi * 0.5 * t + 1)
    rot = np.deg2rad(smooth_walk(3))
    zoom = 1.0 + smooth_walk(0.04)
    c = size / 2
    out = np.zeros((n, 2, 3))
    for i in range(n):
        a = zoom[i] * np.array([[np.cos(rot[i]), -np.sin(rot[i])], [np.sin(rot[i]), np.cos(rot[i])]])
        out[i, :, :2] = a
        out[i, :, 2] = np.array([c + dx[i], c + dy[i]]) - a @ np.array([c, c])
    return out


def make_clip(n: int, noise: float, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    photo = load_photo()
    size = photo.shape[0]
    ms = motion(n, size, seed)
    rng = np.random.default_rng(seed + 1)
    frames = []
    for m in ms:
        cv_m = m.copy()
        cv_m[:, 2] = m[:, 2] + m[:, :2] @ np.array([0.5, 0.5]) - 0.5  # continuous -> OpenCV pixel centres
        img = cv2.warpAffine(photo, cv_m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        img = np.clip(img.astype(np.float32) + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
        frames.append(img)
    return frames, ms


def jitter(tracks: np.ndarray, ms: np.ndarray) -> dict[str, float]:
    """Landmarks (T, K, 2) mapped back to the still photo: RMS spread about their mean (px and % IOD)."""
    back = np.stack([apply(invert(m), p) for m, p in zip(ms, tracks)])
    spread = np.sqrt(((back - back.mean(axis=0)) ** 2).sum(-1).mean())
    iod = float(ibug.interocular(back.mean(axis=0))) if back.shape[1] == ibug.K else float("nan")
    step = np.linalg.norm(np.diff(back, axis=0), axis=-1).mean()
    return {"jitter_px": float(spread), "jitter_pct_iod": float(100 * spread / iod), "frame_to_frame_px": float(step)}


def run_demo(out_dir: str | Path, n_frames: int = 120, noise: float = 8.0, device: str = "auto",
             echo: Callable[[str], None] = print) -> str:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    echo(f"making a {n_frames}-frame handheld clip of the astronaut photo (noise sigma {noise})")
    frames, ms = make_clip(n_frames, noise)
    h, w = frames[0].shape[:2]
    info = SourceInfo("astronaut (scikit-image, public domain), handheld motion", "demo", w, h, FPS, n_frames, False)
    tracks: dict[str, np.ndarray] = {}
    for kind in ("none", "one-euro", "convlstm"):
        pipe = Pipeline.from_weights(device=device, config=PipelineConfig(stabilizer=kind))
        pts = []
        sinks = []
        if kind == "convlstm":
            sinks = [JsonSink(out / "demo.json", info, pipe.scheme, kind), VideoSink(out / "demo.mp4", info)]
        with ExitStack() as stack:  # an error drops the outputs, an interrupt closes them (sinks.py)
            for s in sinks:
                stack.enter_context(s)
            for res in pipe.track((Frame(img, i, i * 1000.0 / FPS) for i, img in enumerate(frames)), sinks):
                pts.append(res.faces[0].landmarks if res.faces else np.full((pipe.backbone.k, 2), np.nan, np.float32))
        tracks[kind] = np.stack(pts)
        echo(f"  tracked with stabilizer={kind}")
    found = {k: bool(np.isfinite(v).all()) for k, v in tracks.items()}
    if not all(found.values()):
        return f"stableface demo: the face was lost in some frames ({found}); see {out}"
    stats = {k: jitter(v, ms) for k, v in tracks.items()}
    with _atomic(out / "demo_jitter.json") as tmp:
        tmp.write_text(json.dumps(stats, indent=2))
    with _atomic(out / "demo_trajectories.png") as tmp:
        _plot(tracks, ms, tmp)
    raw = stats["none"]["jitter_pct_iod"]
    lines = [f"wrote {out / 'demo.mp4'}, {out / 'demo.json'}, {out / 'demo_trajectories.png'}",
             "jitter (spread of landmarks mapped back to the still photo, % of inter-ocular distance):"]
    for k, s in stats.items():
        change = 100 * (s["jitter_pct_iod"] / raw - 1)
        rel = "" if k == "none" else f"  ({abs(change):.0f}% {'lower' if change < 0 else 'higher'} than raw)"
        lines.append(f"  {k:9s} {s['jitter_pct_iod']:.2f}%  ({s['jitter_px']:.2f} px){rel}")
    return "\n".join(lines)


@contextmanager
def _atomic(path: Path):
    """A partial name beside ``path`` (same extension), renamed to it once written; removed on error."""
    tmp = partial_path(path, keep_suffix=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _plot(tracks: dict[str, np.ndarray], ms: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(ms)) / FPS
    fig, axes = plt.subplots(2, 2, figsize=(11, 6), sharex=True)
    for col, (idx, name) in enumerate([(30, "nose tip (30)"), (36, "outer eye corner (36)")]):
        back = {k: np.stack([apply(invert(m), p) for m, p in zip(ms, v)]) for k, v in tracks.items()}
        for row, axis in enumerate("xy"):
            ax = axes[row, col]
            for k, style in (("none", "-"), ("one-euro", "--"), ("convlstm", "-")):
                ax.plot(t, back[k][:, idx, row], style, lw=1.2 if k != "none" else 0.8, label=k if k != "none" else "raw")
            ax.set_ylabel(f"{axis} in the still photo (px)")
            ax.set_title(f"{name}, {axis}") if row == 0 else None
            ax.grid(alpha=0.3)
    axes[1, 0].set_xlabel("time (s)")
    axes[1, 1].set_xlabel("time (s)")
    axes[0, 0].legend()
    fig.suptitle("Landmarks mapped back to the still photo: a perfect tracker draws flat lines")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
