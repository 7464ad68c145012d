import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stableface import codec  # noqa: E402
from stableface.training.losses import geman_mcclure, jitter_loss, jitter_psi, pdc  # noqa: E402


def test_geman_mcclure_planted():
    p, t = torch.tensor([0.0, 1.0, 3.0]), torch.zeros(3)
    assert torch.allclose(geman_mcclure(p, t, 1.0), torch.tensor([0.0, 0.5, 0.9]))
    assert torch.allclose(geman_mcclure(p, t, 2.0), torch.tensor([0.0, 0.2, 9 / 13]))


def test_psi_planted_values():
    g0, g1 = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])  # ground truth moved by 5
    # prediction error changed by (0.5, 0) -> |e_t - e_{t-1}| = 0.5 ; psi = 0.5 / (5 + xi)
    u0, u1 = g0.clone(), g1 + torch.tensor([[0.5, 0.0]])
    assert jitter_psi(u1, u0, g1, g0, theta=1.0, xi=0.0).item() == pytest.approx(0.1)
    # a still face (c = 0) whose prediction jumps: capped at Theta
    assert jitter_psi(torch.tensor([[1.0, 0.0]]), g0, g0, g0, theta=1.5, xi=0.01).item() == pytest.approx(1.5)
    # consistent prediction (same error twice) has no jitter
    assert jitter_psi(g1 + 2, g0 + 2, g1, g0).item() == 0.0


def test_jitter_loss_is_psi_times_pixel_loss():
    s = torch.zeros(1, 1, 4, 4)
    tgt = torch.zeros(1, 1, 4, 4)
    tgt[0, 0, 0, 0] = 1.0  # mean pixel loss = 0.5 / 16
    g0, g1 = torch.zeros(1, 1, 2), torch.tensor([[[4.0, 0.0]]])
    u0, u1 = g0.clone(), torch.tensor([[[5.0, 0.0]]])  # psi = 1 / 4
    got = jitter_loss(s, tgt, u1, u0, g1, g0, theta=1.0, xi=0.0)
    assert got.item() == pytest.approx(0.25 * 0.5 / 16)


def test_differentiable_pdc_matches_numpy_codec(rng):
    pts = rng.uniform(20, 100, size=(6, 2))
    hm = codec.encode(pts, (32, 32), 4) * rng.uniform(0.5, 1.0, size=(6, 1, 1)).astype(np.float32)
    ref, _ = codec.decode_pdc(hm, 4, 0.2)
    x = torch.from_numpy(hm).requires_grad_(True)
    got = pdc(x, 0.2, 4.0)
    assert np.allclose(got.detach().numpy(), ref, atol=1e-4)
    got.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_theta_zero_switches_the_jitter_loss_off_without_nans():
    s = torch.zeros(1, 2, 4, 4, requires_grad=True)  # exactly the target where the target is 0
    tgt = torch.zeros(1, 2, 4, 4)
    tgt[0, :, 1, 1] = 1.0
    g0, g1 = torch.zeros(1, 2, 2), torch.ones(1, 2, 2)
    loss = jitter_loss(s, tgt, g1 + 0.5, g0, g1, g0, theta=0.0, xi=1.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(s.grad).all() and s.grad.abs().sum() == 0
    assert geman_mcclure(torch.tensor([0.0, 0.5]), torch.zeros(2), 0.0).tolist() == [0.0, 1.0]


def test_theta_zero_pixel_loss_has_no_gradient_even_near_the_target():
    s = torch.tensor([1e-8, 0.3, 0.0], requires_grad=True)
    loss = geman_mcclure(s, torch.zeros(3), 0.0).sum()
    loss.backward()
    assert loss.item() == 2.0 and s.grad.abs().sum() == 0
