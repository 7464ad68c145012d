import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from stableface import codec


def test_centre_of_mass_round_trip_is_exact(rng):
    pts = rng.uniform(24, 104, size=(68, 2)).astype(np.float32)  # crop pixels, away from the border
    hm = codec.encode(pts, (32, 32), stride=4)
    got, scores = codec.decode_pdc(hm, stride=4, threshold=0.0)
    assert np.abs(got - pts).max() < 0.01
    assert scores.shape == (68,) and np.all(scores > 0.8)


def test_pdc_threshold_bias_is_bounded(rng):
    # Zeroing values below 0.2 truncates the discrete Gaussian unevenly: PDC on an ideal
    # target is off by at most ~0.1 heatmap cell (0.4 crop px at stride 4). The trained
    # backbone learns to cancel it (its coordinate loss decodes with PDC).
    pts = rng.uniform(16, 112, size=(500, 2)).astype(np.float32)
    got, _ = codec.decode_pdc(codec.encode(pts, (32, 32), 4), 4, 0.2)
    err = np.abs(got - pts)
    assert err.max() < 0.45 and err.mean() < 0.2


def test_argmax_is_within_half_a_cell(rng):
    pts = rng.uniform(8, 120, size=(10, 2))
    got, _ = codec.decode_argmax(codec.encode(pts, (32, 32), 4), 4)
    assert np.abs(got - pts).max() <= 2.0 + 1e-6


def test_cell_centre_convention():
    # a peak exactly on cell (r=3, c=5) is the crop point ((5+0.5)*4, (3+0.5)*4)
    hm = np.zeros((1, 8, 8), np.float32)
    hm[0, 3, 5] = 1.0
    pts, _ = codec.decode_pdc(hm, stride=4)
    assert pts[0].tolist() == [22.0, 14.0]


def test_threshold_ignores_background_noise():
    hm = codec.encode(np.array([[40.0, 60.0]]), (32, 32), 4)
    noisy = hm.copy()
    noisy[0, 0:4, 28:32] += 0.15  # a far-away blob below the threshold
    clean, _ = codec.decode_pdc(hm, 4, 0.2)
    got, _ = codec.decode_pdc(noisy, 4, 0.2)
    assert np.allclose(got, clean)
    shifted, _ = codec.decode_pdc(noisy, 4, 0.0)  # without threshold the blob pulls the centre
    assert np.linalg.norm(shifted - clean) > 1.0


def test_weak_and_empty_maps_still_decode():
    weak = codec.encode(np.array([[66.0, 66.0]]), (32, 32), 4) * 0.1  # peak below the threshold
    pts, score = codec.decode_pdc(weak, 4, 0.2)
    assert np.abs(pts - 66).max() < 0.01 and score[0] == pytest.approx(0.1, rel=1e-4)
    empty, _ = codec.decode_pdc(np.zeros((1, 32, 32), np.float32), 4, 0.2)
    assert empty[0].tolist() == [64.0, 64.0]


def test_batched_shapes():
    hm = np.zeros((2, 3, 5, 16, 16), np.float32)
    pts, scores = codec.decode_pdc(hm, 2)
    assert pts.shape == (2, 3, 5, 2) and scores.shape == (2, 3, 5)


@settings(max_examples=60, deadline=None)
@given(x=st.floats(32, 96), y=st.floats(32, 96), sigma=st.floats(1.0, 2.5))
def test_round_trip_property(x, y, sigma):
    hm = codec.encode(np.array([[x, y]]), (32, 32), 4, sigma)
    got, _ = codec.decode_pdc(hm, 4, 0.0)
    assert abs(got[0, 0] - x) < 0.05 and abs(got[0, 1] - y) < 0.05
