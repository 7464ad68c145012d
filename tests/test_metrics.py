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


def box_face(w=64.0, h=256.0, k=68):
    """k points spread over a w x h box (so the box is known exactly)."""
    g = np.random.default_rng(2).uniform(0, 1, size=(k, 2)) * [w, h]
    g[0], g[1] = [0, 0], [w, h]
    return g + 40.0


def wave(t=80, k=68):
    """A face moving on a smooth, non-linear path (so shifts in time are told apart)."""
    s = np.arange(t)[:, None]
    path = np.hstack([20 * np.sin(s / 5), 10 * np.cos(s / 7)])
    return box_face(k=k)[None] + path[:, None, :]


def delayed(g, d):
    """p_t = g_{t-d} (d < 0: ahead), NaN where that frame does not exist."""
    p = np.full_like(g, np.nan)
    if d >= 0:
        p[d:] = g[:len(g) - d]
    else:
        p[:d] = g[-d:]
    return p


def test_nmj_planted_scale_and_rms():
    g = np.repeat(box_face(64.0, 256.0)[None], 9, axis=0)  # box 64 x 256: s = sqrt(64 * 256) / 256 = 0.5
    assert M.nmj(g, g) == 0.0
    e = np.array([0, 1, 4, 5, 8, 9, 12, 13, 16], dtype=float)  # error jumps 1, 3, 1, 3, ... px along x
    p = g + e[:, None, None] * [1.0, 0.0]
    assert M.nmj(p, g) == pytest.approx(100 / 0.5 * np.sqrt((1 + 9) / 2))  # RMS over frames, not the mean (400)
    assert M.nmj(p + [7.0, -3.0], g + [7.0, -3.0]) == pytest.approx(M.nmj(p, g))
    assert M.nmj(p, g, box=g * 2) == pytest.approx(M.nmj(p, g) / 2)  # the box sets the scale
    q = p.copy()
    q[0] = np.nan  # drops the first jump (1 px): left 3, 1, 3, 1, 3, 1, 3
    assert M.nmj(q, g) == pytest.approx(200 * np.sqrt((3 * 1 + 4 * 9) / 7))
    assert np.isnan(M.nmj(q[:2], g[:2]))  # no pair with both frames finite
    grow = np.stack([g[0], 40.0 + 2 * (g[0] - 40.0)])  # the box doubles: s 0.5, then 1
    assert M.nmj(grow + [[[0.0, 0.0]], [[1.0, 0.0]]], grow) == pytest.approx(100.0)  # scaled by the later frame


def test_nmj_of_white_noise():
    g = np.repeat(box_face(64.0, 256.0)[None], 400, axis=0)
    sigma = 0.5
    p = g + np.random.default_rng(3).normal(0, sigma, g.shape)
    # the error's step has variance 2 sigma^2 per coordinate: E||step||^2 = 4 sigma^2, s = 0.5
    assert M.nmj(p, g) == pytest.approx(100 / 0.5 * 2 * sigma, rel=0.02)


def test_fhr_time_delay_planted():
    t = np.arange(30)[:, None, None]
    g = box_face()[None] + t * np.array([2.0, 0.5])  # constant velocity
    assert M.fhr_time_delay(g, g) == 0.0
    assert M.fhr_time_delay(delayed(g, 3), g) == pytest.approx(3.0)
    assert M.fhr_time_delay(delayed(g, -2), g) == pytest.approx(-2.0)
    v = np.array([2.0, 0.5])
    assert M.fhr_time_delay(g - 1.5 * v, g) == pytest.approx(1.5)  # an offset back along the motion
    assert M.fhr_time_delay(g + 4.0 * np.array([-0.5, 2.0]), g) == pytest.approx(0.0)  # across it: no delay
    two = g.copy()
    two[:, 34:] = box_face()[None, 34:] + t * np.array([6.0, 1.5])  # half the points 3x as fast
    # pooled over points: an offset of 1.5 v_slow back gives (1.5 |v|^2 + 4.5 |v|^2) / (|v|^2 + 9 |v|^2)
    assert M.fhr_time_delay(two - 1.5 * v, two) == pytest.approx(0.6)
    stops = g.copy()
    stops[15:] = stops[15]  # the face stops: those pairs have no motion to measure a delay against
    p = delayed(stops, 3)
    assert M.fhr_time_delay(p, stops) == pytest.approx(3.0)  # pairs 4..15 only (3 frames behind, constant speed)
    assert np.isnan(M.fhr_time_delay(stops[15:], stops[15:]))


def test_fhr_second_diff_planted():
    g = np.repeat(box_face(200.0, 100.0)[None], 12, axis=0)  # still; longer box side 200 px: w = 2
    a = np.where(np.arange(68) < 34, 1.0, 3.0)[None, :, None] * [1.0, 0.0]  # amplitude 1 or 3 px
    sign = np.array([1, -1] * 6, dtype=float)[:, None, None]
    p = g + sign * a  # p_t - (p_{t-1} + p_{t+1}) / 2 = +-2 a
    assert M.fhr_second_diff(p, g) == pytest.approx(2 * np.sqrt((1 + 9) / 2) / 2)  # RMS over points, % of 200 px
    t = np.arange(12)[:, None, None]
    assert M.fhr_second_diff(g + t * np.array([3.0, 1.0]), g) == pytest.approx(0.0, abs=1e-12)  # a straight line
    q = p.copy()
    q[5] = np.nan  # drops the triples around frame 5; the rest are the same
    assert M.fhr_second_diff(q, g) == pytest.approx(M.fhr_second_diff(p, g))
    # FHR's term looks at the prediction alone: a perfect prediction of an accelerating face scores
    acc = g + 0.5 * t ** 2 * np.array([1.0, 0.0])  # second difference 1 px along x
    assert M.fhr_second_diff(acc, acc) == pytest.approx(0.5 / 2)
    assert M.second_diff_error(acc, acc, 1.0) == 0.0


def test_second_diff_error_planted():
    g = wave(40)
    assert M.second_diff_error(g, g, 1.0) == 0.0
    p = g.copy()
    p[10] += [10.0, 0.0]  # one frame off by 10 px: second differences +10, -20, +10 in 38 triples
    assert M.second_diff_error(p, g, 5.0) == pytest.approx((10 + 20 + 10) / 38 / 5)
    assert M.second_diff_error(p + 3.0, g, 5.0) == pytest.approx((10 + 20 + 10) / 38 / 5)  # a bias is not acceleration
    p[30] = np.nan  # three more triples gone
    assert M.second_diff_error(p, g, 5.0) == pytest.approx(40 / 35 / 5)
    face68 = np.repeat(face(100.0)[None], 5, axis=0)
    assert M.second_diff_error(face68 + [[[0, 0]], [[0, 0]], [[4, 0]], [[0, 0]], [[0, 0]]], face68) == \
        pytest.approx((4 + 8 + 4) / 3 / 100)  # default norm: the inter-ocular distance


def test_second_diff_error_of_white_noise():
    g = wave(400)
    sigma = 0.5
    p = g + np.random.default_rng(4).normal(0, sigma, g.shape)
    # n_{t+1} - 2 n_t + n_{t-1}: variance 6 sigma^2 per coordinate, a Rayleigh norm of mean sqrt(6 pi / 2) sigma
    assert M.second_diff_error(p, g, 1.0) == pytest.approx(np.sqrt(3 * np.pi) * sigma, rel=0.02)


def test_lag_frames_planted_and_sign():
    g = wave()
    assert M.lag_frames(g, g) == 0.0
    assert M.lag_frames(delayed(g, 3), g, refine=False) == 3.0
    assert M.lag_frames(delayed(g, 3), g) == pytest.approx(3.0, abs=0.02)
    assert M.lag_frames(delayed(g, -2), g, refine=False) == -2.0  # ahead of the annotation: negative
    half = delayed(g, 2)
    half[3:] = (g[1:-2] + g[:-3]) / 2  # 2.5 frames behind
    assert M.lag_frames(half, g, refine=False) in (2.0, 3.0)
    assert M.lag_frames(half, g) == pytest.approx(2.5, abs=0.05)
    holes = delayed(g, 4)
    holes[[20, 41, 42]] = np.nan
    assert M.lag_frames(holes, g, refine=False) == 4.0
    assert M.lag_frames(delayed(g, 6), g, max_lag=3, refine=False) == 3.0  # clipped to the range searched
    c = M.lag_costs(delayed(g, 3), g, 5)
    assert c.shape == (11,) and c[8] == 0.0 and (np.delete(c, 8) > 0.1).all()


def test_lag_frames_undefined_without_telling_motion():
    t = np.arange(30)[:, None, None]
    lin = box_face()[None] + t * np.array([2.0, 0.5])
    assert np.isnan(M.lag_frames(delayed(lin, 3), lin))  # constant velocity: every shift fits
    still = np.repeat(box_face()[None], 10, axis=0)
    assert np.isnan(M.lag_frames(still, still))
    assert np.isnan(M.lag_frames(np.full((5, 68, 2), np.nan), still[:5]))
