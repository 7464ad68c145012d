"""Scaffolding shared by both trainers (``train_backbone``, ``finetune``): the run folder, the
device, the cosine schedule, atomic checkpoints and ``--resume``."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def start_run(out: str | Path, threads: int, seed: int) -> Path:
    """The checkpoint folder (created), torch threads and seed of a training run."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return path


def pick_device(device: str) -> str:
    """``auto``: CUDA when torch sees an NVIDIA GPU, else the CPU; ``cuda`` without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch sees no CUDA GPU (use --device auto or cpu)")
    return device


def cosine_lr(step: int, total: int, base: float, warmup: int = 0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``base`` to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def save_atomic(state: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary name beside ``path``, then rename: never a half-written checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_resume(path: str | Path, device: str) -> dict | None:
    """The checkpoint at ``path`` if there is one (``--resume``), else None."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location=device, weights_only=False)
