"""``stableface finetune``: train the ConvLSTM stabilizer over a frozen ONNX backbone with the Jitter loss.

The backbone runs in onnxruntime (any heatmap model: K and heatmap size are read from it).
Sequences are synthesised from still annotated images (``sequences.py``); the backbone's
heatmaps for every frame are computed once and cached, then the ConvLSTM is trained on them,
state reset at every sequence.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from stableface import codec, ibug
from stableface.grid import compose
from stableface.metrics import sequence_metrics
from stableface.backbone import HeatmapBackbone
from stableface.crop import CropBox
from stableface.stabilizer import FaceMotion, MotionConfig, fit_similarity, state_to_input
from stableface.training import data as D
from stableface.training.run import cosine_lr, load_resume, save_atomic, set_lr, start_run
from stableface.training.convlstm import ConvLSTM, export
from stableface.training.losses import geman_mcclure, jitter_loss, pdc
from stableface.training.sequences import SequenceSpec, make_sequence


@dataclass
class FinetuneConfig:
    data: str
    backbone: str
    out: str
    hidden: int = 1  # per landmark; 2 measured the same on every validation set, at 1.6x the step time
    init: str = "ema"
    init_alpha: float = 0.3
    motion: dict | None = None  # MotionConfig fields (None: the defaults); stored in the export's metadata
    sequences: str = "both"  # synthetic (stills moved in a fixed crop), real-motion (stableface.realmotion) or both
    videos: str = "../shared/videos"  # clips whose motion drives the real-motion sequences
    real_motion_images: int = 0  # training stills rendered with real motion (0: all)
    tune_motion: bool = True  # pick the motion filter on the training sequences before training
    tune_sequences: int = 300  # training sequences the motion filter is chosen on
    sequences_per_image: int = 1
    min_length: int = 5
    max_length: int = 8
    burn_in: int = 8  # up to this many frames run without gradient first, so longer-lived states are trained too
    noise: tuple[float, float] = (0.0, 20.0)
    val_images: int = 100
    epochs: int = 4
    batch: int = 12
    lr: float = 2e-3
    loss: str = "jitter"  # or "l2" (ablation)
    theta: float = 1.0
    xi: float = 1.0  # crop pixels: about the per-frame jitter of the raw backbone
    pdc_threshold: float = codec.DEFAULT_PDC_THRESHOLD
    pdc_mode: str = codec.DEFAULT_PDC_MODE
    pixel_weight: float = 0.1
    sigma: float = codec.DEFAULT_SIGMA
    seed: int = 0
    flow_error: float = 0.0  # the image flow's stand-in strays from the truth by this x the runtime's measured error
    limit: int = 0
    val_sequences: int = 1  # still + moving sequences per validation image
    val_length: int = 30
    device: str = "cpu"
    threads: int = 0


def _heatmaps(backbone: HeatmapBackbone, frames: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([backbone(frames[i:i + batch]) for i in range(0, len(frames), batch)]).astype(np.float16)


def build_cache(samples: list[D.Sample], backbone: HeatmapBackbone, spec: SequenceSpec, per_image: int, seed: int,
                progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Backbone heatmaps (N, T, K, H, W) float16 and ground truth (N, T, K, 2) in crop pixels of
    synthetic sequences from stills (``sequences.py``)."""
    rng = np.random.default_rng(seed)
    hms, pts = [], []
    total = len(samples) * per_image
    for s in samples:
        for _ in range(per_image):
            frames, p, _ = make_sequence(s, spec, rng)
            hms.append(_heatmaps(backbone, frames))
            pts.append(p)
            if progress:
                progress(len(hms), total)
    return np.stack(hms), np.stack(pts)


def real_motion_cache(samples: list[D.Sample], backbone: HeatmapBackbone, videos: Path, length: int, per_image: int,
                      seed: int, progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sequences with real head and face motion (``realmotion.training_sequences``: the motion of the
    shared clips held out of the benchmark, applied to training stills, rendered through H.264, one
    tracker-like crop per sequence). Heatmaps (N, T, K, H, W) float16, ground truth (N, T, K, 2)."""
    from stableface import realmotion as R

    hms, pts = [], []
    for crops, gt in R.training_sequences(samples, backbone, videos, length, per_image, seed, progress):
        hms.append(_heatmaps(backbone, crops))
        pts.append(gt)
    return np.stack(hms), np.stack(pts)


def raw_points(hms: np.ndarray, stride: float, threshold: float, mode: str, offset: np.ndarray | None) -> np.ndarray:
    """Raw landmarks (..., T, K, 2) in crop pixels of heatmaps (..., T, K, H, W): PDC plus the
    backbone's calibration ``offset``, as the runtime's ``Decoder`` gives them."""
    raw = np.stack([codec.decode_pdc(h.astype(np.float32), stride, threshold, mode)[0] for h in hms])
    return raw + offset if offset is not None else raw


def offset_tensor(backbone: HeatmapBackbone, device: str) -> torch.Tensor | None:
    return None if backbone.offset is None else torch.from_numpy(backbone.offset).to(device)


def with_plan(hms: np.ndarray, gts: np.ndarray, backbone: HeatmapBackbone, motion: MotionConfig,
              threshold: float, mode: str, flow_error: float = 0.0, seed: int = 0) -> tuple[np.ndarray, ...]:
    """(heatmaps, ground truth, pull, push): the runtime's motion plan from the raw landmarks."""
    raw = raw_points(hms, backbone.stride, threshold, mode, backbone.offset)
    pull, push = motion_plan(raw, backbone.size, backbone.stride, motion, truth=gts, flow_error=flow_error, seed=seed)
    return hms, gts, pull, push


# How far the runtime's image flow (LK, 11 px window, 2 levels) strays from the ground truth's
# frame-to-frame similarity, measured on the 16 real-motion training clips (2378 frames, the
# shipped stabilizer's runtime; `python benchmarks/flow_error.py`): the standard deviation of the error at the face's centroid, x and
# y in inter-ocular distances, of the relative scale and of the roll (rad), and its frame-to-frame
# correlation (the error is slow: LK follows the skin's texture, the similarity of the 68 points
# includes the jaw contour, which slides over the face as the head turns).
FLOW_ERROR_STD = (0.0019, 0.0007, 0.0013, 0.0012)
FLOW_ERROR_CORRELATION = 0.77


def flow_errors(rng: np.random.Generator, b: int, t: int, scale: float) -> np.ndarray:
    """(B, T, 4) AR(1) errors (x, y, scale, roll) of the measured size x ``scale``, one series per sequence."""
    r = FLOW_ERROR_CORRELATION
    n = rng.standard_normal((b, t, 4)) * np.asarray(FLOW_ERROR_STD) * scale
    e = np.empty_like(n)
    e[:, 0] = n[:, 0]
    for j in range(1, t):
        e[:, j] = r * e[:, j - 1] + np.sqrt(1 - r * r) * n[:, j]
    return e


def _perturbed(m: np.ndarray, at: np.ndarray, iod: float, err: np.ndarray) -> np.ndarray:
    """Similarity ``m`` followed by the error ``err`` (x, y in IOD, scale, roll) about the point ``at``."""
    dx, dy, ds, dr = err
    c, s_ = (1 + ds) * np.cos(dr), (1 + ds) * np.sin(dr)
    rot = np.array([[c, -s_], [s_, c]])
    e = np.concatenate([rot, (at - rot @ at + np.array([dx, dy]) * iod)[:, None]], axis=1)
    return compose(e, m)


def targets(points: torch.Tensor, size: int, stride: float, sigma: float) -> torch.Tensor:
    """Gaussian heatmaps (..., K, H, W) for points (..., K, 2) in crop pixels (same as codec.encode)."""
    c = points / stride - 0.5
    grid = torch.arange(size, dtype=points.dtype, device=points.device)
    gx = torch.exp(-((grid - c[..., 0:1]) ** 2) / (2 * sigma * sigma))
    gy = torch.exp(-((grid - c[..., 1:2]) ** 2) / (2 * sigma * sigma))
    return gy[..., :, None] * gx[..., None, :]


def motion_plan(raw: np.ndarray, crop_size: int, stride: float, motion: MotionConfig,
                fps: float = 25.0, truth: np.ndarray | None = None, flow_error: float = 0.0,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The runtime's face motion for sequences seen through one fixed crop, precomputed in numpy.

    raw (B, T, K, 2): raw PDC landmarks in crop pixels. Returns ``pull`` (B, T, 2, 3), the state
    frame's grid index -> the input's grid index (what the runtime warps the input heatmaps with),
    and ``push`` (B, T, 2, 3), state-frame crop pixels -> crop pixels (what carries the decoded
    landmarks back). Both call ``stabilizer.state_to_input`` and ``FaceMotion``. With ``truth``
    (B, T, K, 2) and ``motion.flow``, the runtime's image flow (the frame-to-frame similarity) is
    stood in for by the ground truth's: the flow measures the face's true motion closely (on the
    real-motion benchmark the previous network reached 0.367% of jitter error with the first flow
    settings, 0.353% with the exact motion), and the sequences here are heatmaps, not images. Otherwise the motion depends
    only on the raw landmarks, as at run time without the crop's pixels. ``flow_error``: the stand-in
    strays from the truth as the runtime's flow does (``FLOW_ERROR_STD`` x ``flow_error``, slow AR(1)
    errors; 0: the exact truth).
    """
    box = CropBox(crop_size / 2, crop_size / 2, float(crop_size))  # crop pixels = source pixels
    b, t = raw.shape[:2]
    pull, push = np.zeros((b, t, 2, 3)), np.zeros((b, t, 2, 3))
    errors = flow_errors(np.random.default_rng(seed), b, t, flow_error) if flow_error and truth is not None else None
    for i in range(b):
        fm = FaceMotion(motion)
        for j in range(t):
            moved = None
            if truth is not None and motion.flow and j:
                moved = fit_similarity(truth[i, j - 1], truth[i, j])
                if errors is not None:
                    g = truth[i, j]
                    iod = float(ibug.interocular(g)) if len(g) == 68 else float(np.ptp(g, axis=0).max()) / 2
                    moved = _perturbed(moved, g.mean(0), iod, errors[i, j])
            m = fm.update(raw[i, j], j * 1000.0 / fps, box.side, moved=moved)
            pull[i, j] = state_to_input(box, box, m, crop_size, stride)
            push[i, j] = m
    return pull.astype(np.float32), push.astype(np.float32)


def warp(x: torch.Tensor, pull: torch.Tensor) -> torch.Tensor:
    """``out[b, :, q] = x[b, :, pull[b] @ q]`` (grid indices), bilinear, edges replicated: ``grid.warp``."""
    b, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype, device=x.device),
                            torch.arange(w, dtype=x.dtype, device=x.device), indexing="ij")
    q = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # (H, W, 3)
    src = torch.einsum("bij,hwj->bhwi", pull, q)  # (B, H, W, 2) input grid index
    gx = (2 * src[..., 0] + 1) / w - 1
    gy = (2 * src[..., 1] + 1) / h - 1
    return F.grid_sample(x, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="border", align_corners=False)


def run_sequences(model: ConvLSTM, hms: torch.Tensor, pull: torch.Tensor, state: tuple | None = None,
                  prime_steps: int = MotionConfig.prime_steps, return_state: bool = False):
    """Stabilized heatmaps (B, T, K, H, W) in the state frame for inputs (B, T, K, H, W) warped by
    ``pull`` (B, T, 2, 3, from ``motion_plan``), from ``state`` (None: a new track, primed as at run time)."""
    b, t = hms.shape[:2]
    hs = cs = None
    if state is not None:
        hs, cs = state
    out = []
    for i in range(t):
        o = warp(hms[:, i], pull[:, i])
        if hs is None:
            hs, cs = model.zeros(b, hms.shape[-1], hms.device)
            with torch.no_grad():
                for _ in range(prime_steps):
                    _, hs, cs = model(o, hs, cs)
        s, hs, cs = model(o, hs, cs)
        out.append(s)
    stacked = torch.stack(out, dim=1)
    return (stacked, (hs, cs)) if return_state else stacked


def state_landmarks_to_crop(s: torch.Tensor, push: torch.Tensor, threshold: float, stride: float,
                            mode: str = codec.DEFAULT_PDC_MODE, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Landmarks (B, T, K, 2) in crop pixels from ``run_sequences``' output (the runtime's ``_output``;
    ``offset``: the backbone's calibration, (K, 2) crop pixels)."""
    q = pdc(s, threshold, stride, mode)
    if offset is not None:
        q = q + offset
    return torch.einsum("btij,btkj->btki", push[..., :2], q) + push[..., None, :, 2]


def to_state(points: torch.Tensor, push: torch.Tensor) -> torch.Tensor:
    """Crop pixels -> state-frame crop pixels (the inverse of ``push``)."""
    a, t = push[..., :2], push[..., 2]
    return torch.einsum("btij,btkj->btki", torch.linalg.inv(a), points - t[..., None, :])


def sequence_loss(cfg: FinetuneConfig, s: torch.Tensor, push: torch.Tensor, gt: torch.Tensor, stride: float,
                  offset: torch.Tensor | None = None) -> torch.Tensor:
    """Jitter loss (or L2) of ``run_sequences``' output; heatmap targets are placed in the state frame,
    in the backbone's convention (``offset``, its calibration, is taken off them: the stabilizer has no
    shift to learn)."""
    size = s.shape[-1]
    where = to_state(gt, push)
    tgt = targets(where - offset if offset is not None else where, size, stride, cfg.sigma)
    if cfg.loss == "l2":
        return ((s - tgt) ** 2).mean()
    u = state_landmarks_to_crop(s, push, cfg.pdc_threshold, stride, cfg.pdc_mode, offset)
    loss = s.new_zeros(())
    for t in range(1, s.shape[1]):
        loss = loss + jitter_loss(s[:, t], tgt[:, t], u[:, t], u[:, t - 1], gt[:, t], gt[:, t - 1], cfg.theta, cfg.xi)
    loss = loss / (s.shape[1] - 1)
    if cfg.pixel_weight:
        loss = loss + cfg.pixel_weight * geman_mcclure(s, tgt, cfg.theta).mean()
    return loss


@torch.no_grad()
def validate(model: ConvLSTM, val: dict[str, tuple], stride: float, threshold: float, mode: str, device: str,
             prime_steps: int, offset: np.ndarray | None = None) -> dict[str, float]:
    model.eval()
    out: dict[str, float] = {}
    off = None if offset is None else torch.from_numpy(offset).to(device)
    for name, (hms, gt, pull, push) in val.items():
        raw, stab = [], []
        for i in range(0, len(hms), 16):
            x = torch.from_numpy(hms[i:i + 16].astype(np.float32)).to(device)
            s = run_sequences(model, x, torch.from_numpy(pull[i:i + 16]).to(device), prime_steps=prime_steps)
            stab.append(state_landmarks_to_crop(s, torch.from_numpy(push[i:i + 16]).to(device), threshold, stride, mode,
                                                off).cpu().numpy())
            raw.append(raw_points(hms[i:i + 16], stride, threshold, mode, offset))
        for tag, pred in (("raw", np.concatenate(raw)), ("stab", np.concatenate(stab))):
            for k, v in sequence_metrics(pred, gt).items():
                out[f"{name}_{tag}_{k}"] = v
    model.train()
    return out


def train(cfg: FinetuneConfig, resume: bool = False, log: Callable[[str], None] = print,
          on_step: Callable[[int, int, dict], None] | None = None, cache: dict | None = None) -> dict[str, float]:
    """Train, checkpointing every epoch; returns the last validation metrics.

    ``cache``: a dict shared by runs with the same backbone, data and sequence settings
    (ablations): the first run fills it with the backbone heatmaps, the others reuse them.
    """
    out = start_run(cfg.out, cfg.threads, cfg.seed)
    backbone = HeatmapBackbone(cfg.backbone, device="auto")
    if backbone.k != ibug.K:
        log(f"backbone gives K={backbone.k} heatmaps; annotations must have the same K")
    train_files, val_files = ibug.training_split(cfg.data, cfg.limit)
    log(f"backbone {cfg.backbone}: K={backbone.k}, heatmaps {backbone.heatmap_size}x{backbone.heatmap_size}, "
        f"crop {backbone.size}px; {len(train_files)} training / {len(val_files)} validation images")
    train_set, val_set = D.load(train_files), D.load(val_files[:cfg.val_images] if cfg.val_images else val_files)
    size = backbone.size
    spec = SequenceSpec(length=cfg.max_length + cfg.burn_in, size=size, crop_scale=backbone.crop_scale, noise=cfg.noise,
                        max_speed=1.0)
    t0 = time.perf_counter()
    motion = MotionConfig(**cfg.motion) if cfg.motion else MotionConfig()
    key = json.dumps({k: getattr(cfg, k) for k in ("data", "backbone", "limit", "sequences", "videos", "real_motion_images",
                                                    "sequences_per_image", "min_length", "max_length", "burn_in", "noise",
                                                    "val_images", "val_sequences", "val_length", "seed", "pdc_threshold",
                                                    "pdc_mode")}, sort_keys=True, default=str)
    stored = out / "sequences.npz"
    if cache:
        train_seq, val = cache["train"], cache["val"]
    elif stored.exists() and str(np.load(stored)["key"]) == key:  # a rerun or --resume: no second rendering
        z = np.load(stored)
        hms_, gts_ = z["hms"], z["gts"]
        train_seq = with_plan(hms_, gts_, backbone, motion, cfg.pdc_threshold, cfg.pdc_mode, cfg.flow_error, cfg.seed)
        val = {k: with_plan(z[f"{k}_hms"], z[f"{k}_gts"], backbone, motion, cfg.pdc_threshold, cfg.pdc_mode, cfg.flow_error,
                            cfg.seed + 1) for k in ("still", "drift")}
        log(f"loaded the cached sequences from {stored}")
    else:
        train_seq, val = _build_all(cfg, backbone, train_set, val_set, spec, motion, on_step, t0)
        if cache is not None:
            cache.update(train=train_seq, val=val)
        tmp = out / "sequences.tmp.npz"
        np.savez(tmp, key=key, hms=train_seq[0], gts=train_seq[1], **{f"{k}_hms": v[0] for k, v in val.items()},
                 **{f"{k}_gts": v[1] for k, v in val.items()})
        tmp.replace(stored)
    hms, gts, pulls, pushes = train_seq
    log(f"cached backbone heatmaps for {len(hms)} training sequences and {sum(len(v[0]) for v in val.values())} "
        f"validation sequences in {time.perf_counter() - t0:.0f} s")

    model = ConvLSTM(backbone.k, cfg.hidden, init=cfg.init, alpha=cfg.init_alpha).to(cfg.device)
    if cfg.tune_motion and not (resume and (out / "last.pt").exists()):
        motion, table = tune_motion(model, hms, gts, backbone, motion, cfg)
        for row in table:
            log("motion filter " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        log(f"chosen: min_cutoff {motion.min_cutoff}, beta {motion.beta}")
        cfg.motion = asdict(motion)
        _, _, pulls, pushes = with_plan(hms, gts, backbone, motion, cfg.pdc_threshold, cfg.pdc_mode, cfg.flow_error, cfg.seed)
        val = {k: with_plan(v[0], v[1], backbone, motion, cfg.pdc_threshold, cfg.pdc_mode, cfg.flow_error, cfg.seed + 1)
               for k, v in val.items()}
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    offset = offset_tensor(backbone, cfg.device)  # the backbone's calibration, for the loss
    steps_per_epoch = math.ceil(len(hms) / cfg.batch)
    total = cfg.epochs * steps_per_epoch
    start_epoch, history = 0, []
    last = out / "last.pt"
    ck = load_resume(last, cfg.device) if resume else None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start_epoch, history = ck["epoch"], ck["history"]
        log(f"resumed from {last} at epoch {start_epoch}")
    if start_epoch == 0:
        m0 = validate(model, val, backbone.stride, cfg.pdc_threshold, cfg.pdc_mode, cfg.device, motion.prime_steps,
                      backbone.offset)
        log(f"before training ({cfg.init} initialisation): " + _summary(m0))
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng(cfg.seed * 1000 + epoch)
        order = rng.permutation(len(hms))
        t_ep, seen, run = time.perf_counter(), 0, 0.0
        for b in range(steps_per_epoch):
            idx = np.sort(order[b * cfg.batch:(b + 1) * cfg.batch])
            length = int(rng.integers(cfg.min_length, cfg.max_length + 1))
            burn = int(rng.integers(0, cfg.burn_in + 1))
            x = torch.from_numpy(hms[idx, burn:burn + length].astype(np.float32)).to(cfg.device)
            g = torch.from_numpy(gts[idx, burn:burn + length]).to(cfg.device)
            pull = torch.from_numpy(pulls[idx, :burn + length]).to(cfg.device)
            push = torch.from_numpy(pushes[idx, burn:burn + length]).to(cfg.device)
            state = None
            if burn:
                with torch.no_grad():
                    _, state = run_sequences(model, torch.from_numpy(hms[idx, :burn].astype(np.float32)).to(cfg.device),
                                             pull[:, :burn], prime_steps=motion.prime_steps, return_state=True)
            step = epoch * steps_per_epoch + b
            set_lr(opt, cosine_lr(step, total, cfg.lr))
            out_s = run_sequences(model, x, pull[:, burn:], state, prime_steps=motion.prime_steps)
            loss = sequence_loss(cfg, out_s, push, g, backbone.stride, offset)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
            run += float(loss.detach()) * len(idx)
            if on_step:
                on_step(step + 1, total, {"epoch": epoch + 1, "loss": run / seen, "seq_s": seen / (time.perf_counter() - t_ep)})
        metrics = validate(model, val, backbone.stride, cfg.pdc_threshold, cfg.pdc_mode, cfg.device, motion.prime_steps,
                           backbone.offset)
        metrics.update(epoch=epoch + 1, loss=run / seen)
        history.append(metrics)
        save_atomic({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "history": history,
                     "config": asdict(cfg), "k": backbone.k, "heatmap_size": backbone.heatmap_size}, last)
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {run / seen:.5f}: " + _summary(metrics))
    if cfg.tune_motion and history and not history[-1].get("motion_tuned"):
        # once more with the trained network: the filter the export will carry
        motion, table = tune_motion(model, hms, gts, backbone, motion, cfg)
        for row in table:
            log("motion filter (trained) " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        log(f"chosen for the export: min_cutoff {motion.min_cutoff}, beta {motion.beta}")
        cfg.motion = asdict(motion)
        history[-1]["motion_tuned"] = True
        ck = load_resume(last, cfg.device)
        ck.update(config=asdict(cfg), history=history)
        save_atomic(ck, last)
    return history[-1] if history else {}


MOTION_GRID = [(mc, beta) for mc in (1.0, 2.0, 4.0, 8.0, 16.0, 1000.0) for beta in (0.3, 1.0)]  # 1000 Hz: unfiltered


@torch.no_grad()
def tune_motion(model: ConvLSTM, hms: np.ndarray, gts: np.ndarray, backbone: HeatmapBackbone, base: MotionConfig,
                cfg: FinetuneConfig, grid: list[tuple[float, float]] | None = None) -> tuple[MotionConfig, list[dict]]:
    """The motion filter (min_cutoff, beta) with the lowest jitter error of ``model`` on the last
    ``cfg.tune_sequences`` training sequences (the real-motion ones), at an NME within 1% of raw's;
    the table of every candidate."""
    from dataclasses import replace

    model.eval()
    # the real-motion sequences (they come last) when there are any: the motion filter is for real heads
    n = cfg.tune_sequences
    hms, gts = (hms[-n:], gts[-n:]) if cfg.sequences != "synthetic" else (hms[:n], gts[:n])
    raw = raw_points(hms, backbone.stride, cfg.pdc_threshold, cfg.pdc_mode, backbone.offset)
    offset = offset_tensor(backbone, cfg.device)
    base_m = sequence_metrics(raw, gts)
    table, best, best_je = [], base, float("inf")
    for mc, beta in grid or MOTION_GRID:
        motion = replace(base, min_cutoff=mc, beta=beta)
        pull, push = motion_plan(raw, backbone.size, backbone.stride, motion)
        pred = []
        for i in range(0, len(hms), 32):
            x = torch.from_numpy(hms[i:i + 32].astype(np.float32)).to(cfg.device)
            s = run_sequences(model, x, torch.from_numpy(pull[i:i + 32]).to(cfg.device), prime_steps=motion.prime_steps)
            pred.append(state_landmarks_to_crop(s, torch.from_numpy(push[i:i + 32]).to(cfg.device), cfg.pdc_threshold,
                                                backbone.stride, cfg.pdc_mode, offset).cpu().numpy())
        m = sequence_metrics(np.concatenate(pred), gts)
        table.append({"min_cutoff": mc, "beta": beta, "nme": m["nme"], "jitter_error": m["jitter_error"],
                      "raw_nme": base_m["nme"], "raw_jitter_error": base_m["jitter_error"]})
        if m["nme"] <= base_m["nme"] * 1.01 and m["jitter_error"] < best_je:  # NME within 1% (relative) of raw
            best, best_je = motion, m["jitter_error"]
    model.train()
    return best, table


def _build_all(cfg: FinetuneConfig, backbone: HeatmapBackbone, train_set: list, val_set: list, spec: SequenceSpec,
               motion: MotionConfig, on_step: Callable[[int, int, dict], None] | None, t0: float) -> tuple:
    tick = (lambda i, n: on_step(0, 1, {"epoch": 0, "loss": 0.0, "seq_s": i / (time.perf_counter() - t0)})) if on_step else None
    parts = []
    if cfg.sequences in ("synthetic", "both"):
        parts.append(build_cache(train_set, backbone, spec, cfg.sequences_per_image, cfg.seed, tick))
    if cfg.sequences in ("real-motion", "both"):
        parts.append(real_motion_cache(train_set[:cfg.real_motion_images or None], backbone, Path(cfg.videos), spec.length,
                                       cfg.sequences_per_image, cfg.seed + 7, tick))
    hms = np.concatenate([p[0] for p in parts])
    gts = np.concatenate([p[1] for p in parts])
    train_seq = with_plan(hms, gts, backbone, motion, cfg.pdc_threshold, cfg.pdc_mode, cfg.flow_error, cfg.seed)
    val = {}
    for kind, noise in (("still", (10.0, 10.0)), ("drift", (5.0, 5.0))):
        vspec = SequenceSpec(length=cfg.val_length, size=backbone.size, crop_scale=backbone.crop_scale, noise=noise, blur=0.0,
                             motion=kind, max_speed=1.0)
        val[kind] = with_plan(*build_cache(val_set, backbone, vspec, cfg.val_sequences, cfg.seed + 999), backbone, motion,
                              cfg.pdc_threshold, cfg.pdc_mode, cfg.flow_error, cfg.seed + 1)
    return train_seq, val


def _summary(m: dict[str, float]) -> str:
    return (f"still jitter {m['still_raw_jitter']:.2f}% -> {m['still_stab_jitter']:.2f}%, "
            f"still NME {m['still_raw_nme']:.2f}% -> {m['still_stab_nme']:.2f}%, "
            f"drift NME {m['drift_raw_nme']:.2f}% -> {m['drift_stab_nme']:.2f}%, "
            f"drift jitter error {m['drift_raw_jitter_error']:.2f}% -> {m['drift_stab_jitter_error']:.2f}%")


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> dict:
    ck = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    cfg = ck["config"]
    model = ConvLSTM(ck["k"], cfg["hidden"])
    model.load_state_dict(ck["model"])
    motion = MotionConfig(**cfg["motion"]) if cfg.get("motion") else MotionConfig()
    meta = {"loss": cfg["loss"], "theta": cfg["theta"], "xi": cfg["xi"], "pdc_threshold": cfg["pdc_threshold"],
            "pdc_mode": cfg.get("pdc_mode", "hard"), "motion": asdict(motion), "sequences": cfg.get("sequences", "synthetic"),
            "validation": ck["history"][-1] if ck.get("history") else {}}
    diff = export(model, out, ck["heatmap_size"], meta)
    return {"max_abs_diff": diff, "path": str(out)}
