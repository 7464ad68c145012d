"""``stableface finetune``: train the ConvLSTM stabilizer over a frozen ONNX backbone with the Jitter loss.

The backbone runs in onnxruntime (any heatmap model: K and heatmap size are read from it).
Sequences are synthesised from still annotated images (``sequences.py``); the backbone's
heatmaps for every frame are computed once and cached, then the ConvLSTM is trained on them,
state reset at every sequence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from stableface import codec, ibug
from stableface.metrics import sequence_metrics
from stableface.backbone import HeatmapBackbone
from stableface.stabilizer import ConvLSTMStabilizer
from stableface.training import data as D
from stableface.training.run import start_run
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
    motion_compensation: bool = True  # as at run time: the state follows the raw landmarks' median motion
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
    pixel_weight: float = 0.1
    sigma: float = codec.DEFAULT_SIGMA
    seed: int = 0
    limit: int = 0
    val_sequences: int = 1  # still + moving sequences per validation image
    val_length: int = 30
    device: str = "cpu"
    threads: int = 0


def _heatmaps(backbone: HeatmapBackbone, frames: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([backbone(frames[i:i + batch]) for i in range(0, len(frames), batch)]).astype(np.float16)


def build_cache(samples: list[D.Sample], backbone: HeatmapBackbone, spec: SequenceSpec, per_image: int, seed: int,
                progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Backbone heatmaps (N, T, K, H, W) float16, ground truth and raw PDC landmarks (N, T, K, 2) in crop pixels."""
    rng = np.random.default_rng(seed)
    hms, pts, kinds, raws = [], [], [], []
    total = len(samples) * per_image
    for i, s in enumerate(samples):
        for _ in range(per_image):
            frames, p, kind = make_sequence(s, spec, rng)
            hms.append(_heatmaps(backbone, frames))
            raws.append(codec.decode_pdc(hms[-1].astype(np.float32), backbone.stride)[0])
            pts.append(p)
            kinds.append(kind)
            if progress:
                progress(len(hms), total)
    return np.stack(hms), np.stack(pts), np.stack(raws)


def targets(points: torch.Tensor, size: int, stride: float, sigma: float) -> torch.Tensor:
    """Gaussian heatmaps (..., K, H, W) for points (..., K, 2) in crop pixels (same as codec.encode)."""
    c = points / stride - 0.5
    grid = torch.arange(size, dtype=points.dtype, device=points.device)
    gx = torch.exp(-((grid - c[..., 0:1]) ** 2) / (2 * sigma * sigma))
    gy = torch.exp(-((grid - c[..., 1:2]) ** 2) / (2 * sigma * sigma))
    return gy[..., :, None] * gx[..., None, :]


RT = ConvLSTMStabilizer


def shift_bilinear(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``out[b, :, q] = x[b, :, q - d[b]]`` (d (B, 2) in cells, (x, y)), bilinear, edges replicated:
    the runtime's ``shift_maps``."""
    b, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype, device=x.device),
                            torch.arange(w, dtype=x.dtype, device=x.device), indexing="ij")
    gx = (2 * (xs[None] - d[:, 0, None, None] + 0.5) / w) - 1
    gy = (2 * (ys[None] - d[:, 1, None, None] + 0.5) / h) - 1
    return F.grid_sample(x, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="border", align_corners=False)


def shift_whole(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``out[b, :, q] = x[b, :, q - n[b]]`` for whole cells n (B, 2), edges replicated (exact copy)."""
    b, c, h, w = x.shape
    ys = (torch.arange(h, device=x.device)[None] - n[:, 1, None]).clamp(0, h - 1)  # (B, H)
    xs = (torch.arange(w, device=x.device)[None] - n[:, 0, None]).clamp(0, w - 1)
    x = x.gather(2, ys[:, None, :, None].expand(b, c, h, w))
    return x.gather(3, xs[:, None, None, :].expand(b, c, h, w))


def compensate(hs: torch.Tensor, cs: torch.Tensor, raw: torch.Tensor, anchor: torch.Tensor, stride: float,
               since: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Torch twin of the runtime's motion compensation. The median raw-landmark displacement since
    the last shift, when above ``min_shift`` heatmap cells (``min_shift_still`` once ``since`` (B,),
    the frames since the last shift, reaches ``still_after``), is added to ``offset`` (B, 2), the
    state frame's lag behind the crop; whole cells of it move the state (an exact copy)."""
    d = torch.quantile(raw - anchor, 0.5, dim=1) / stride  # (B, 2) cells, like numpy's median
    limit = torch.where(since < RT.still_after, RT.min_shift, RT.min_shift_still).to(d.dtype)
    move = torch.linalg.vector_norm(d, dim=1) > limit
    since = torch.where(move, torch.zeros_like(since), since + 1)
    if not bool(move.any()):
        return hs, cs, anchor, since, offset
    offset = offset + d * move[:, None].to(d.dtype)
    whole = torch.round(offset)
    if bool((whole != 0).any()):
        n = whole.to(torch.long)
        hs, cs = shift_whole(hs, n), shift_whole(cs, n)
        offset = offset - whole
    anchor = torch.where(move[:, None, None], raw, anchor)
    return hs, cs, anchor, since, offset


def run_sequences(model: ConvLSTM, hms: torch.Tensor, state: tuple | None = None, raw: torch.Tensor | None = None,
                  stride: float = 4.0, return_state: bool = False):
    """Stabilized heatmaps (B, T, K, H, W) for (B, T, K, H, W) inputs, from ``state`` (None: a new
    sequence), and the offsets (B, T, 2) of their frames in heatmap cells: landmarks in the crop are
    ``pdc(s) + offset * stride`` (``landmarks``).

    With ``raw`` (B, T, K, 2), the raw landmarks in crop pixels, the state is motion-compensated
    before every step as at run time (the input is shifted into the state's frame).
    """
    b, t, k, h, w = hms.shape
    if state is None:  # a new sequence: primed like the runtime primes a new track
        hs, cs = model.zeros(b, h, hms.device)
        with torch.no_grad():
            for _ in range(RT.prime_steps):
                _, hs, cs = model(hms[:, 0], hs, cs)
        anchor = None
        since = torch.full((b,), RT.still_after, dtype=torch.long, device=hms.device)
        offset = hms.new_zeros(b, 2)
    else:
        hs, cs, anchor, since, offset = state
    out, offsets = [], []
    for i in range(t):
        o = hms[:, i]
        if raw is not None:
            if anchor is None:
                anchor = raw[:, i]
            else:
                hs, cs, anchor, since, offset = compensate(hs, cs, raw[:, i], anchor, stride, since, offset)
            if bool((offset != 0).any()):
                o = shift_bilinear(o, -offset)
        s, hs, cs = model(o, hs, cs)
        out.append(s)
        offsets.append(offset)
    stacked, offs = torch.stack(out, dim=1), torch.stack(offsets, dim=1)
    return (stacked, offs, (hs, cs, anchor, since, offset)) if return_state else (stacked, offs)


def landmarks(s: torch.Tensor, offset: torch.Tensor, threshold: float, stride: float) -> torch.Tensor:
    """Landmarks (B, T, K, 2) in crop pixels from ``run_sequences``' output."""
    return pdc(s, threshold, stride) + offset[..., None, :] * stride


def sequence_loss(cfg: FinetuneConfig, s: torch.Tensor, offset: torch.Tensor, gt: torch.Tensor, stride: float) -> torch.Tensor:
    """Jitter loss (or L2) of ``run_sequences``' output; heatmap targets are placed in the state's frame."""
    size = s.shape[-1]
    tgt = targets(gt - offset[..., None, :] * stride, size, stride, cfg.sigma)
    if cfg.loss == "l2":
        return ((s - tgt) ** 2).mean()
    u = landmarks(s, offset, cfg.pdc_threshold, stride)
    loss = s.new_zeros(())
    for t in range(1, s.shape[1]):
        loss = loss + jitter_loss(s[:, t], tgt[:, t], u[:, t], u[:, t - 1], gt[:, t], gt[:, t - 1], cfg.theta, cfg.xi)
    loss = loss / (s.shape[1] - 1)
    if cfg.pixel_weight:
        loss = loss + cfg.pixel_weight * geman_mcclure(s, tgt, cfg.theta).mean()
    return loss


@torch.no_grad()
def validate(model: ConvLSTM, val: dict[str, tuple], stride: float, threshold: float,
             device: str, compensate_motion: bool = True) -> dict[str, float]:
    model.eval()
    out: dict[str, float] = {}
    for name, (hms, gt, rp) in val.items():
        raw, stab = [], []
        for i in range(0, len(hms), 16):
            x = torch.from_numpy(hms[i:i + 16].astype(np.float32)).to(device)
            r = torch.from_numpy(rp[i:i + 16]).to(device) if compensate_motion else None
            stab.append(landmarks(*run_sequences(model, x, raw=r, stride=stride), threshold, stride).cpu().numpy())
            raw.append(codec.decode_pdc(hms[i:i + 16].astype(np.float32), stride, threshold)[0])
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
    if cache:
        hms, gts, raws, val = cache["train"], cache["gt"], cache["raw"], cache["val"]
    else:
        hms, gts, raws, val = _build_all(cfg, backbone, train_set, val_set, spec, on_step, t0)
        if cache is not None:
            cache.update(train=hms, gt=gts, raw=raws, val=val)
    log(f"cached backbone heatmaps for {len(hms)} training sequences and {sum(len(v[0]) for v in val.values())} "
        f"validation sequences in {time.perf_counter() - t0:.0f} s")

    model = ConvLSTM(backbone.k, cfg.hidden, init=cfg.init, alpha=cfg.init_alpha).to(cfg.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps_per_epoch = math.ceil(len(hms) / cfg.batch)
    total = cfg.epochs * steps_per_epoch
    start_epoch, history = 0, []
    last = out / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location=cfg.device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start_epoch, history = ck["epoch"], ck["history"]
        log(f"resumed from {last} at epoch {start_epoch}")
    if start_epoch == 0:
        m0 = validate(model, val, backbone.stride, cfg.pdc_threshold, cfg.device, cfg.motion_compensation)
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
            r = torch.from_numpy(raws[idx, :burn + length]).to(cfg.device) if cfg.motion_compensation else None
            state = None
            if burn:
                with torch.no_grad():
                    _, _, state = run_sequences(model, torch.from_numpy(hms[idx, :burn].astype(np.float32)).to(cfg.device),
                                             raw=None if r is None else r[:, :burn], stride=backbone.stride,
                                             return_state=True)
            step = epoch * steps_per_epoch + b
            for grp in opt.param_groups:
                grp["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            out_s, offs = run_sequences(model, x, state, raw=None if r is None else r[:, burn:], stride=backbone.stride)
            loss = sequence_loss(cfg, out_s, offs, g, backbone.stride)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
            run += float(loss.detach()) * len(idx)
            if on_step:
                on_step(step + 1, total, {"epoch": epoch + 1, "loss": run / seen, "seq_s": seen / (time.perf_counter() - t_ep)})
        metrics = validate(model, val, backbone.stride, cfg.pdc_threshold, cfg.device, cfg.motion_compensation)
        metrics.update(epoch=epoch + 1, loss=run / seen)
        history.append(metrics)
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "history": history,
                 "config": asdict(cfg), "k": backbone.k, "heatmap_size": backbone.heatmap_size}
        torch.save(state, out / "last.tmp")
        (out / "last.tmp").replace(last)
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {run / seen:.5f}: " + _summary(metrics))
    return history[-1] if history else {}


def _build_all(cfg: FinetuneConfig, backbone: HeatmapBackbone, train_set: list, val_set: list, spec: SequenceSpec,
               on_step: Callable[[int, int, dict], None] | None, t0: float) -> tuple:
    hms, gts, raws = build_cache(train_set, backbone, spec, cfg.sequences_per_image, cfg.seed,
                                 (lambda i, n: on_step(0, 1, {"epoch": 0, "loss": 0.0, "seq_s": i / (time.perf_counter() - t0)}))
                                 if on_step else None)
    val = {}
    for kind, noise in (("still", (10.0, 10.0)), ("drift", (5.0, 5.0))):
        vspec = SequenceSpec(length=cfg.val_length, size=backbone.size, crop_scale=backbone.crop_scale, noise=noise, blur=0.0,
                             motion=kind, max_speed=1.0)
        val[kind] = build_cache(val_set, backbone, vspec, cfg.val_sequences, cfg.seed + 999)
    return hms, gts, raws, val


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
    meta = {"loss": cfg["loss"], "theta": cfg["theta"], "xi": cfg["xi"], "pdc_threshold": cfg["pdc_threshold"],
            "validation": ck["history"][-1] if ck.get("history") else {}}
    diff = export(model, out, ck["heatmap_size"], meta)
    return {"max_abs_diff": diff, "path": str(out)}
