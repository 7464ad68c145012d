"""Torch losses: heatmap regression, differentiable PDC, and the paper's Jitter loss (Eq. 2-4, 7)."""

from __future__ import annotations

import torch


def pdc(heatmaps: torch.Tensor, threshold: float = 0.2, stride: float = 1.0, mode: str = "continuous") -> torch.Tensor:
    """Differentiable PDC, the twin of ``stableface.codec.decode_pdc``: cell weights
    ``max(phi - threshold, 0)`` (``continuous``) or ``phi * (phi >= threshold)`` (``hard``, Algorithm 1),
    then the centre of mass.

    heatmaps (..., K, H, W) -> points (..., K, 2) in crop space (same convention as
    ``stableface.codec.decode_pdc``; ``stride=1`` gives heatmap-cell units + 0.5).
    Maps with nothing above the threshold fall back to the positive part of the map.
    """
    h, w = heatmaps.shape[-2:]
    pos = heatmaps.clamp(min=0)
    if mode == "continuous":
        kept = (heatmaps - threshold).clamp(min=0)
    elif mode == "hard":
        kept = torch.where(heatmaps >= threshold, heatmaps, torch.zeros_like(heatmaps))
    else:
        raise ValueError(f"unknown PDC mode {mode!r}: continuous or hard")
    mass = kept.sum(dim=(-2, -1), keepdim=True)
    kept = torch.where(mass > 1e-12, kept, pos)
    mass = kept.sum(dim=(-2, -1)).clamp(min=1e-12)
    xs = torch.arange(w, dtype=heatmaps.dtype, device=heatmaps.device)
    ys = torch.arange(h, dtype=heatmaps.dtype, device=heatmaps.device)
    cx = (kept.sum(dim=-2) * xs).sum(dim=-1) / mass
    cy = (kept.sum(dim=-1) * ys).sum(dim=-1) / mass
    return (torch.stack([cx, cy], dim=-1) + 0.5) * stride


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, fg_weight: float = 10.0) -> torch.Tensor:
    """MSE with pixels near a landmark (target > 0.1) weighted ``fg_weight`` times."""
    weight = 1.0 + (fg_weight - 1.0) * (target > 0.1).to(pred.dtype)
    return (weight * (pred - target) ** 2).mean()


def geman_mcclure(pred: torch.Tensor, target: torch.Tensor, theta: float = 1.0) -> torch.Tensor:
    """Eq. 7, per pixel: d^2 / (d^2 + Theta^2). Theta = 0 is its limit: 1 wherever d != 0, no gradient."""
    d2 = (pred - target) ** 2
    if theta == 0:
        return d2 * 0 + (d2 > 0).to(d2.dtype)  # stays in the graph, with a zero gradient
    return d2 / (d2 + theta * theta)


def jitter_psi(u_t: torch.Tensor, u_prev: torch.Tensor, g_t: torch.Tensor, g_prev: torch.Tensor,
               theta: float = 1.0, xi: float = 1e-2) -> torch.Tensor:
    """Eq. 3-4 per landmark: min(||e_t - e_{t-1}|| / (||c_{t-1,t}|| + xi), Theta).

    u_* predicted, g_* ground-truth landmarks (..., K, 2). Returns (..., K).
    """
    e_t, e_prev = u_t - g_t, u_prev - g_prev
    num = torch.linalg.vector_norm(e_t - e_prev, dim=-1)
    den = torch.linalg.vector_norm(g_t - g_prev, dim=-1) + xi
    return torch.clamp(num / den, max=theta)


def jitter_loss(s_t: torch.Tensor, target_t: torch.Tensor, u_t: torch.Tensor, u_prev: torch.Tensor,
                g_t: torch.Tensor, g_prev: torch.Tensor, theta: float = 1.0, xi: float = 1e-2,
                pixel_theta: float | None = None) -> torch.Tensor:
    """Eq. 2: Psi * L_pixel, with Psi per landmark and L_pixel the mean Geman-McClure of its map.

    s_t, target_t: (..., K, H, W) stabilized heatmaps and their ground truth.
    Psi is a modulation: it is applied as computed (gradients flow through it too, as in Eq. 8).
    """
    pix = geman_mcclure(s_t, target_t, theta if pixel_theta is None else pixel_theta).mean(dim=(-2, -1))
    psi = jitter_psi(u_t, u_prev, g_t, g_prev, theta, xi)
    return (psi * pix).mean()
