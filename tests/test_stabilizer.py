import numpy as np
import pytest

from stableface.crop import CropBox
from stableface.grid import crop_change, warp
from stableface.stabilizer import OneEuro, convlstm_reference, fit_similarity


def test_one_euro_still_input_gives_still_output():
    f = OneEuro(1.0, 0.05)
    x = np.array([[3.0, 4.0]])
    outs = [f(x, t * 40.0) for t in range(10)]
    assert all(np.array_equal(o, x) for o in outs)


def test_one_euro_smooths_a_step_and_converges():
    f = OneEuro(min_cutoff=1.0, beta=0.0)
    f(np.zeros(1), 0.0)
    first = f(np.ones(1), 40.0)[0]
    # alpha = 1 / (1 + tau/dt), tau = 1/(2 pi), dt = 0.04
    assert first == pytest.approx(1 / (1 + (1 / (2 * np.pi)) / 0.04))
    for t in range(2, 200):
        last = f(np.ones(1), t * 40.0)[0]
    assert last == pytest.approx(1.0, abs=1e-6)


def test_one_euro_restarts_on_non_increasing_time():
    f = OneEuro()
    f(np.zeros(1), 100.0)
    assert f(np.ones(1), 100.0)[0] == 1.0


def test_warp_maps_identity_and_shift():
    maps = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    assert np.allclose(warp(maps, ident), maps)
    shift = np.array([[1.0, 0, 2], [0, 1.0, 0]])  # out[x] = in[x + 2]
    assert np.allclose(warp(maps, shift)[:, :, :6], maps[:, :, 2:])


def test_crop_change_maps_the_same_source_point():
    old, new = CropBox(100, 100, 64, 0.0), CropBox(108, 96, 72, 0.1)
    m = crop_change(old, new, 128, 4.0)
    from stableface.crop import to_crop, to_source

    q_new = np.array([[10.0, 20.0]])  # heatmap index coordinates in the new crop
    src = to_source((q_new + 0.5) * 4.0, new, 128)
    q_old = to_crop(src, old, 128) / 4.0 - 0.5
    assert np.allclose(q_new @ m[:, :2].T + m[:, 2], q_old)
    assert np.allclose(crop_change(old, old, 128, 4.0), [[1, 0, 0], [0, 1, 0]])


def test_batched_update_matches_one_face_at_a_time():
    """update_many (one ConvLSTM call for all faces, tracks starting at different frames) gives
    what each face's own update gives, frame by frame."""
    from stableface import codec
    from stableface.stabilizer import ConvLSTMStabilizer, ConvLSTMStep, Decoder, NoStabilizer, update_many
    from stableface.weights import resolve

    step = ConvLSTMStep(resolve().stabilizer, "cpu", 1)
    dec = Decoder(128, 4.0)
    rng = np.random.default_rng(3)
    faces = 3
    base = rng.uniform(30, 98, size=(faces, step.k, 2))
    starts = [0, 0, 2]  # the third face's track starts later: it is primed inside the batch
    # two raw faces too: decoded in one PDC call together
    one = [ConvLSTMStabilizer(step, dec) for _ in range(faces)] + [NoStabilizer(dec), NoStabilizer(dec)]
    many = [ConvLSTMStabilizer(step, dec) for _ in range(faces)] + [NoStabilizer(dec), NoStabilizer(dec)]
    for t in range(6):
        live = [i for i in range(faces) if t >= starts[i]] + [faces, faces + 1]
        a = 2 * np.pi * t / 10
        pts = [base[i % faces] + [6 * np.cos(a + i), 6 * np.sin(a + i)] for i in live]
        hm = np.stack([codec.encode(p, (32, 32), 4.0) + rng.normal(0, 0.02, (step.k, 32, 32)).astype(np.float32)
                       for p in pts])
        crops = [CropBox(300.0 + 100 * i + t, 200.0 - t, 180.0 + i, 0.05 * i) for i in live]
        want = [one[i].update(hm[j], crops[j], 40.0 * t) for j, i in enumerate(live)]
        got = update_many([many[i] for i in live], hm, crops, 40.0 * t)
        for (wp, ws), (gp, gs) in zip(want, got):
            assert np.abs(wp - gp).max() < 1e-4
            assert np.array_equal(ws, gs)


torch = pytest.importorskip("torch")


def test_numpy_torch_onnx_parity_over_steps(tmp_path):
    from stableface.stabilizer import ConvLSTMStep
    from stableface.training.convlstm import ConvLSTM, export

    torch.manual_seed(0)
    k, hid, size = 5, 2, 12
    model = ConvLSTM(k, hid)
    with torch.no_grad():  # leave the identity start: random weights exercise every term
        for p in model.parameters():
            p.normal_(0, 0.5)
    export(model, tmp_path / "s.onnx", size)
    step = ConvLSTMStep(tmp_path / "s.onnx", device="cpu")
    assert (step.k, step.hidden, step.heatmap_size) == (k, hid, size)
    params = model.numpy_params()
    rng = np.random.default_rng(0)
    th, tc = model.zeros(1, size)
    nh, nc = th[0].numpy(), tc[0].numpy()
    oh, oc = step.zeros(1)
    for _ in range(4):
        o = rng.random((k, size, size), dtype=np.float32)
        with torch.no_grad():
            ts, th, tc = model(torch.from_numpy(o)[None], th, tc)
        ns, nh, nc = convlstm_reference(o, nh, nc, **params)
        os_, oh, oc = step(o[None], oh, oc)
        assert np.abs(ts[0].numpy() - ns).max() < 1e-5
        assert np.abs(os_[0] - ns).max() < 1e-5
        assert np.abs(oh[0] - nh).max() < 1e-5 and np.abs(oc[0] - nc).max() < 1e-5


def test_fresh_convlstm_is_the_identity():
    from stableface.training.convlstm import ConvLSTM

    m = ConvLSTM(3, 2)
    o = torch.rand(2, 3, 8, 8)
    h, c = m.zeros(2, 8)
    s, _, _ = m(o, h, c)
    assert torch.allclose(s, o)


def test_ema_initialisation_averages_heatmaps():
    from stableface import codec
    from stableface.training.convlstm import ConvLSTM

    torch.manual_seed(0)
    m = ConvLSTM(1, 2, init="ema", alpha=0.4)
    a = torch.from_numpy(codec.encode(np.array([[62.0, 64.0]]), (32, 32), 4))[None]
    b = torch.from_numpy(codec.encode(np.array([[66.0, 64.0]]), (32, 32), 4))[None]
    h, c = m.zeros(1, 32)
    xs = []
    with torch.no_grad():
        for t in range(40):  # a landmark jittering +-2 px around x = 64
            s, h, c = m(a if t % 2 else b, h, c)
            xs.append(codec.decode_pdc(s[0].numpy(), 4, 0.2)[0][0, 0])
    late = np.array(xs[20:])
    assert abs(late.mean() - 64.0) < 0.3
    assert np.abs(np.diff(late)).mean() < 0.5 * 4.0  # the raw input jumps 4 px every frame


def _ema_step(tmp_path, k=3):
    from stableface.stabilizer import ConvLSTMStep
    from stableface.training.convlstm import ConvLSTM, export

    torch.manual_seed(0)
    export(ConvLSTM(k, 2, init="ema", alpha=0.4), tmp_path / "ema.onnx", 32)
    return ConvLSTMStep(tmp_path / "ema.onnx", device="cpu")


def test_motion_compensation_removes_lag_on_a_moving_face(tmp_path):
    from stableface import codec
    from stableface.stabilizer import ConvLSTMStabilizer, Decoder, MotionConfig

    step = _ema_step(tmp_path)
    box = CropBox(64.0, 64.0, 128.0)  # crop coordinates = source coordinates
    base = np.array([[40.0, 50.0], [60.0, 70.0], [80.0, 50.0]])
    errors = {}
    for comp in (False, True):
        stab = ConvLSTMStabilizer(step, Decoder(128, 4.0), MotionConfig(enabled=comp), deviation=None)
        for t in range(25):  # the face moves 1.5 px per frame to the right
            truth = base + [1.5 * t, 0.0]
            pts, _ = stab.update(codec.encode(truth, (32, 32), 4), box, t * 40.0)
        errors[comp] = float(np.abs(pts - truth)[:, 0].mean())
    assert errors[False] > 1.5  # a plain moving average trails the face
    assert errors[True] < 0.5


def test_motion_compensation_survives_crop_moves(tmp_path):
    """A face moving 1.5 px a frame while the crop jumps after it every 6 frames: the state stays in
    its own frame and only the input's warp changes, so the landmarks keep up (a sign error in the
    crop change would leave them several px off)."""
    from stableface import codec
    from stableface.crop import to_crop
    from stableface.stabilizer import ConvLSTMStabilizer, Decoder

    stab = ConvLSTMStabilizer(_ema_step(tmp_path), Decoder(128, 4.0))
    base = np.array([[140.0, 150.0], [160.0, 170.0], [180.0, 150.0]])  # source pixels
    errors = []
    for t in range(30):
        truth = base + [1.5 * t, 0.5 * t]
        box = CropBox(160.0 + 9.0 * (t // 6), 160.0 + 3.0 * (t // 6), 128.0)
        hm = codec.encode(to_crop(truth, box, 128), (32, 32), 4)
        pts, _ = stab.update(hm, box, t * 40.0)
        errors.append(float(np.abs(pts - truth).max()))
    assert max(errors[8:]) < 0.6, errors


def test_rotating_and_zooming_face_is_followed(tmp_path):
    """The state frame follows a similarity, not only a shift: a face that rolls 1 degree and grows
    0.5% a frame stays within half a pixel once the motion filter has caught up."""
    from stableface import codec
    from stableface.stabilizer import ConvLSTMStabilizer, Decoder

    stab = ConvLSTMStabilizer(_ema_step(tmp_path), Decoder(128, 4.0))
    box = CropBox(64.0, 64.0, 128.0)
    base = np.array([[44.0, 54.0], [64.0, 80.0], [84.0, 54.0]]) - 64.0
    errors = []
    for t in range(30):
        a, z = np.deg2rad(1.0 * t), 1.0 + 0.005 * t
        rot = z * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        truth = base @ rot.T + 64.0
        pts, _ = stab.update(codec.encode(truth, (32, 32), 4), box, t * 40.0)
        errors.append(float(np.abs(pts - truth).max()))
    assert max(errors[12:]) < 0.5, errors


def test_limit_deviation_bounds_the_stray_and_keeps_the_small():
    from stableface.stabilizer import limit_deviation

    raw = np.array([[0.0, 0.0], [100.0, 0.0], [50.0, 80.0]])  # face width 100 px
    pts = raw + [[0.05, 0.0], [0.0, -0.3], [30.0, 40.0]]  # small, middling, far (50 px)
    out = limit_deviation(pts, raw, 0.01)  # bound 1 px
    d = np.linalg.norm(out - raw, axis=1)
    assert d[0] == pytest.approx(0.05, rel=1e-3) and d[1] == pytest.approx(np.tanh(0.3), rel=1e-6)
    assert d[2] == pytest.approx(1.0, rel=1e-6)
    assert np.allclose((out - raw)[2] / d[2], [0.6, 0.8])  # along the deviation
    assert limit_deviation(pts, raw, None) is pts and limit_deviation(pts, raw, 0.0) is pts


def test_a_landmark_that_moves_in_the_face_frame_is_not_left_behind(tmp_path):
    """One point jumps 10 px while the rest hold still (a jaw point under a head turn): the slow
    state trails it by pixels; the deviation guard keeps every output within its per-frame bound of raw."""
    from stableface import codec
    from stableface.stabilizer import DEVIATION, ConvLSTMStabilizer, Decoder

    step = _ema_step(tmp_path)
    box = CropBox(64.0, 64.0, 128.0)
    base = np.array([[34.0, 54.0], [64.0, 90.0], [94.0, 54.0]])
    errs = {}
    for guard in (None, DEVIATION):
        stab = ConvLSTMStabilizer(step, Decoder(128, 4.0), deviation=guard)
        errs[guard] = []
        for t in range(24):
            truth = base + ([[0.0, 0.0], [0.0, 10.0], [0.0, 0.0]] if t >= 8 else 0.0)
            pts, _ = stab.update(codec.encode(truth, (32, 32), 4), box, t * 40.0)
            raw, _ = stab.decoder(codec.encode(truth, (32, 32), 4), box)
            errs[guard].append(float(np.linalg.norm(pts - raw, axis=1).max()))
    width = 60.0  # the face's width, px
    assert max(errs[None][8:]) > 2.0
    assert max(errs[DEVIATION][8:]) <= DEVIATION.limit * width + 1e-4  # (the drift bound: the test below)


def test_deviation_guard_keeps_the_smoothing_and_takes_off_a_lasting_deviation():
    """Planted: the stabilized point flickers +-0.5 px about raw (the noise the network removed) and
    one point sits 5 px off, frame after frame (left behind). The flicker passes unchanged on
    average, the lasting deviation comes down to the drift bound; a bound on each frame's deviation
    alone (the previous guard) shrank the flicker too."""
    from stableface.stabilizer import DeviationConfig, DeviationGuard, limit_deviation

    cfg = DeviationConfig(drift=0.003, rate=0.35, limit=0.015)
    raw = np.array([[0.0, 0.0], [100.0, 0.0], [50.0, 80.0]])  # face width 100 px: drift bound 0.3 px, limit 1.5 px
    guard = DeviationGuard(cfg)
    flicker, lasting, old = [], [], []
    for t in range(40):
        pts = raw + [[0.5 * (-1) ** t, 0.0], [0.0, 5.0], [0.0, 0.0]]
        out = guard(pts, raw)
        flicker.append(abs((out - raw)[0, 0]))
        lasting.append(float(np.linalg.norm((out - raw)[1])))
        old.append(abs((limit_deviation(pts, raw, 0.006) - raw)[0, 0]))
    assert np.mean(flicker[10:]) == pytest.approx(0.5, abs=0.03)
    assert np.mean(old[10:]) < 0.45  # the previous guard took a fifth of the flicker back towards raw
    assert lasting[0] <= cfg.limit * 100 + 1e-9 and max(lasting[10:]) <= cfg.drift * 100 + 1e-6
    guard.reset()
    assert guard.mean is None
    nan = raw.copy()
    nan[0] = np.nan
    assert guard(raw + 1.0, nan) is not None and guard.mean is None  # no face size: passed through, restarted


def test_fit_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, size=(68, 2))
    a, z = 0.3, 1.7
    m = np.array([[z * np.cos(a), -z * np.sin(a), 5.0], [z * np.sin(a), z * np.cos(a), -3.0]])
    dst = src @ m[:, :2].T + m[:, 2]
    assert np.abs(fit_similarity(src, dst) - m).max() < 1e-9


def test_grid_warp_is_exact_bilinear():
    """``grid.warp`` samples exactly (float weights), unlike OpenCV's fixed-point warpAffine."""
    rng = np.random.default_rng(3)
    maps = rng.random((2, 12, 16)).astype(np.float32)
    a = 0.2
    m = np.array([[np.cos(a), -np.sin(a), 1.37], [np.sin(a), np.cos(a), -0.71]])
    got = warp(maps, m)
    want = np.zeros_like(maps)
    for y in range(12):
        for x in range(16):
            sx, sy = m @ [x, y, 1.0]
            sx, sy = np.clip(sx, 0, 15), np.clip(sy, 0, 11)
            x0, y0 = min(int(np.floor(sx)), 14), min(int(np.floor(sy)), 10)
            fx, fy = sx - x0, sy - y0
            want[:, y, x] = ((1 - fy) * ((1 - fx) * maps[:, y0, x0] + fx * maps[:, y0, x0 + 1])
                             + fy * ((1 - fx) * maps[:, y0 + 1, x0] + fx * maps[:, y0 + 1, x0 + 1]))
    assert np.abs(got - want).max() < 1e-5


def test_training_twin_matches_the_runtime(tmp_path):
    """The torch twin used in finetune gives the runtime's stabilized landmarks on a moving, rolling,
    noisy face: both use the same precomputed motion (``training.finetune.motion_plan``)."""
    from stableface import codec
    from stableface.stabilizer import ConvLSTMStabilizer, ConvLSTMStep, Decoder
    from stableface.training.convlstm import ConvLSTM, export
    from stableface.training.finetune import motion_plan, run_sequences, state_landmarks_to_crop

    torch.manual_seed(0)
    model = ConvLSTM(3, 2, init="ema", alpha=0.4)
    export(model, tmp_path / "m.onnx", 32)
    step = ConvLSTMStep(tmp_path / "m.onnx", device="cpu")
    base = np.array([[40.0, 50.0], [60.0, 70.0], [80.0, 50.0]]) - 60.0
    rng = np.random.default_rng(0)
    truth = []
    for t in range(14):
        a = np.deg2rad(0.8 * t)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        truth.append(base @ rot.T + [60.0 + 1.2 * t, 64.0 - 0.7 * t] + rng.normal(0, 0.3, size=(3, 2)))
    hms = np.stack([codec.encode(p, (32, 32), 4) for p in truth]).astype(np.float32)
    dec = Decoder(128, 4.0)
    box = CropBox(64.0, 64.0, 128.0)
    stab = ConvLSTMStabilizer(step, dec, deviation=None)  # the twin is the network; the limit is a runtime guard
    runtime = np.stack([stab.update(h, box, t * 40.0)[0] for t, h in enumerate(hms)])
    raw = codec.decode_pdc(hms, 4.0)[0]
    pull, push = motion_plan(raw[None], 128, 4.0, step.motion)
    with torch.no_grad():
        s = run_sequences(model, torch.from_numpy(hms)[None], torch.from_numpy(pull), prime_steps=step.motion.prime_steps)
    trained = state_landmarks_to_crop(s, torch.from_numpy(push), 0.2, 4.0)[0].numpy()
    assert np.abs(runtime - trained).max() < 1e-3


def test_shipped_stabilizer_holds_a_still_noise_free_face_still():
    """A new track is primed near the ConvLSTM's fixed point: identical frames give (almost) identical
    landmarks from the first frame on, instead of a start-up drift."""
    pytest.importorskip("skimage")
    from stableface import ibug
    from stableface.demo import load_photo
    from stableface.pipeline import Pipeline, PipelineConfig

    photo = load_photo()
    pipe = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer="convlstm"))
    pts = np.stack([pipe.update(photo, 40.0 * t).faces[0].landmarks for t in range(12)])
    drift = np.linalg.norm(pts - pts[-1], axis=-1).mean(-1).max() / ibug.interocular(pts[-1])
    assert drift < 0.002, drift  # fraction of IOD; 4 priming steps left a start-up drift of 0.004


def test_pipeline_config_sets_the_deviation_guard():
    """``PipelineConfig.deviation`` reaches every new ConvLSTM stabilizer: the shipped guard by default,
    another config as given, none with None."""
    from stableface.pipeline import Pipeline, PipelineConfig
    from stableface.stabilizer import DEVIATION, DeviationConfig

    other = DeviationConfig(drift=0.01, rate=0.5, limit=0.05)
    guards = [Pipeline.from_weights(device="cpu", config=PipelineConfig(deviation=d)).new_stabilizer().guard
              for d in (DEVIATION, other, None)]
    assert guards[0].config == DEVIATION and guards[1].config == other and guards[2] is None


def test_deviation_guard_is_looser_on_a_still_face():
    """A lasting 0.8 px deviation on a face 100 px wide: while the face moves 2% of its width a frame
    it comes down to the drift bound (0.3 px); while it holds still (the flow's noise, 0.05%) the
    bounds are 1 + still_gain times looser and it stays; with still_gain 0 it comes down either way."""
    from stableface.stabilizer import DeviationConfig, DeviationGuard

    raw = np.array([[0.0, 0.0], [100.0, 0.0], [50.0, 80.0]])
    pts = raw + [[0.0, 0.8], [0.0, 0.0], [0.0, 0.0]]

    def lasting(cfg: DeviationConfig, moved: float | None) -> float:
        guard = DeviationGuard(cfg)
        for _ in range(30):
            out = guard(pts, raw, moved)
        return float(np.linalg.norm((out - raw)[0]))

    cfg = DeviationConfig(drift=0.003, rate=0.35, limit=0.015, still_speed=0.0015, still_gain=3.0)
    assert lasting(cfg, 2.0) <= 0.3 + 1e-6 and lasting(cfg, None) <= 0.3 + 1e-6
    assert lasting(cfg, 0.05) > 2 * 0.3  # (the soft bound of 1.2 px still shortens it a little: 0.68 px)
    assert lasting(DeviationConfig(still_gain=0.0), 0.05) <= 0.3 + 1e-6
