import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from stableface import metrics as M


def face(iod=100.0):
    rng = np.random.default_rng(0)
    g = rng.uniform(0, 200, size=(68, 2))
    g[36], g[45] = [50, 100], [50 + iod, 100]
    return g


def test_known_shift_gives_known_nme():
    g = face(100.0)
    assert M.nme(g + [3.0, 4.0], g) == pytest.approx(0.05)  # 5 px over an IOD of 100
    assert M.nrmse(g + [3.0, 4.0], g) == pytest.approx(0.05)


def test_nrmse_weighs_outliers_more_than_nme():
    g = face(100.0)
    p = g.copy()
    p[0] += [68.0, 0.0]  # one point off by 68 px: NME 1%, NRMSE sqrt(68) %
    assert M.nme(p, g) == pytest.approx(0.01)
    assert M.nrmse(p, g) == pytest.approx(np.sqrt(68) / 100)


def test_failure_rate_and_auc():
    e = np.array([0.01, 0.05, 0.09, 0.2])
    assert M.failure_rate(e, 0.08) == 0.5 and M.failure_rate(e, 0.10) == 0.25
    assert M.auc(np.zeros(10)) == pytest.approx(1.0, abs=1e-3)
    assert M.auc(np.full(10, 0.5)) == 0.0
    assert M.auc(np.full(4, 0.05)) == pytest.approx(0.5, abs=2e-3)


def test_still_track_has_zero_jitter_and_allan():
    still = np.repeat(face()[None], 20, axis=0)
    assert M.allan_deviation(still) == 0.0
    assert M.jitter_error(still, still) == 0.0
    assert M.cvar(still) == pytest.approx(0.0, abs=1e-12)


def test_allan_of_alternating_track():
    a = 1.5
    track = np.zeros((11, 1, 2)) + 10.0
    track[1::2, 0, 0] += a
    track[0::2, 0, 0] -= a
    # every step is 2a: sum (2a)^2 over T-1 steps / (2 (T-1)) = 2 a^2
    assert M.allan_variance(track)[0] == pytest.approx(2 * a * a)
    assert M.allan_deviation(track) == pytest.approx(np.sqrt(2) * a)
    assert M.allan_deviation(track, norm=10.0) == pytest.approx(np.sqrt(2) * a / 10)


def test_jitter_error_ignores_true_motion():
    g = np.stack([face() + [t * 2.0, 0] for t in range(6)])
    assert M.jitter_error(g + 5.0, g) == pytest.approx(0.0)  # a constant bias is not jitter
    p = g.copy()
    p[3] += [10.0, 0]  # one frame off by 10 px: two wrong steps of 10 px in 5
    assert M.jitter_error(p, g) == pytest.approx(2 * 10 / 5 / 100)


def test_mcv_planted():
    t = np.array([[[1.0, 2.0]], [[3.0, 2.0]]])  # x: mean 2, std 1.414; y constant
    assert M.cvar(t) == pytest.approx(np.sqrt(2) / 2 / 2)
    assert M.mcv([t, t * 0 + 1]) == pytest.approx(np.sqrt(2) / 8)


@settings(max_examples=50, deadline=None)
@given(dx=st.floats(-50, 50), dy=st.floats(-50, 50))
def test_translation_invariance_of_stability_metrics(dx, dy):
    rng = np.random.default_rng(1)
    track = rng.normal(100, 2, size=(15, 68, 2))
    assert M.allan_deviation(track + [dx, dy]) == pytest.approx(M.allan_deviation(track), rel=1e-9, abs=1e-9)
    g = track * 0 + face()
    assert M.jitter_error(track + [dx, dy], g) == pytest.approx(M.jitter_error(track, g), rel=1e-9, abs=1e-12)


def test_sequence_metrics_planted():
    gt = np.zeros((2, 6, 68, 2))
    gt[:, :, 45, 0] = 100.0  # IOD 100 px
    still_offset = gt + [3.0, 4.0]  # 5 px everywhere, never moving
    m = M.sequence_metrics(still_offset, gt)
    assert m["nme"] == pytest.approx(5.0) and m["jitter"] == pytest.approx(0.0) and m["jitter_error"] == pytest.approx(0.0)
    flicker = gt + np.array([1.0, 0.0]) * np.array([1, -1, 1, -1, 1, -1])[None, :, None, None]  # +-1 px each frame
    m = M.sequence_metrics(flicker, gt)
    assert m["nme"] == pytest.approx(1.0) and m["jitter"] == pytest.approx(1.0) and m["jitter_error"] == pytest.approx(2.0)
