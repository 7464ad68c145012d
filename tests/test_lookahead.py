"""The fixed-lag smoother with planted tracks, the pipeline that delays frames with it, and the CLI."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from stableface.lookahead import Lookahead, default_sigma
from stableface.pipeline import Pipeline, PipelineConfig
from stableface.types import Face, Frame, FrameResult

from .conftest import shared_video
from .test_cli import run_cli

K = 68


def face(fid, pts, score=0.9):
    pts = np.asarray(pts, np.float32)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return Face(fid, (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), score, pts,
                np.linspace(0.5, 0.9, len(pts)).astype(np.float32))


def run(la, results):
    """Every result through ``la``, then the flush; asserts the buffer bound at every step."""
    out = []
    for r in results:
        out += la.update(r)
        assert len(la) <= 2 * la.n + 1 and la.pending <= la.n
    return out + la.flush()


def kernel(n, sigma=None, degree=2):
    """The equivalent kernel of the Gaussian-weighted local polynomial fit over a full window:
    e0^T (A^T W A)^-1 A^T W (for degree 0 and 1, the normalised Gaussian)."""
    s = default_sigma(n, "plain") if sigma is None else sigma
    k = np.arange(-n, n + 1, dtype=float)
    w = np.exp(-0.5 * (k / s) ** 2)
    a = np.vander(k, degree + 1, increasing=True)
    return np.linalg.solve((a.T * w) @ a, a.T * w)[0]


def still_track(t, centre, noise, rng, fid=0):
    base = rng.uniform(-40, 40, size=(K, 2)) + centre
    return base, [FrameResult(i, i * 40.0, (face(fid, base + rng.normal(0, noise, (K, 2))),)) for i in range(t)]


def track_of(results, fid=0):
    return np.stack([f.landmarks for r in results for f in r.faces if f.id == fid]).astype(np.float64)


def test_sigma_default_and_validation():
    assert Lookahead(4).sigma == 1.0 and Lookahead(8).sigma == 2.0 and Lookahead(1).sigma == 0.5
    assert Lookahead(4, sigma=2.5).sigma == 2.5
    for bad in ({"n": -1}, {"n": 1.5}, {"n": 3, "sigma": 0.0}, {"n": 3, "sigma": float("nan")}):
        with pytest.raises(ValueError):
            Lookahead(**bad)


def test_split_defaults_and_validation():
    la = Lookahead(8)
    assert la.mode == "split" and la.rigid_sigma == 1.25 and la.sigma == 2.0
    assert Lookahead(15).sigma == 2.0 and Lookahead(15, mode="plain").sigma == 3.75  # split widths are capped
    assert Lookahead(2).rigid_sigma == 0.5 and Lookahead(4).rigid_sigma == 1.0
    for bad in ({"n": 3, "mode": "wide"}, {"n": 3, "rigid_sigma": -1.0}):
        with pytest.raises(ValueError):
            Lookahead(**bad)


def test_split_smooths_motion_and_shape_with_their_own_widths(rng):
    """A still face whose every point shakes by one common shift per frame: the similarity takes
    all of it, so its noise shrinks by the motion kernel (rigid_sigma), not the shape kernel."""
    n, t = 8, 600
    base = rng.uniform(-40, 40, size=(K, 2)) + 300.0
    shake = rng.normal(0, 1.0, (t, 1, 2))
    results = [FrameResult(i, i * 40.0, (face(0, base + shake[i]),)) for i in range(t)]
    inner = slice(n, t - n)
    for la, sigma in ((Lookahead(n), 1.25), (Lookahead(n, mode="plain"), 2.0), (Lookahead(n, rigid_sigma=3.0), 3.0)):
        smooth = track_of(run(la, results))
        want = np.sqrt(np.sum(kernel(n, sigma) ** 2))
        got = np.std(smooth[inner] - base, axis=0).mean() / np.std(shake[inner], axis=0).mean()
        assert got == pytest.approx(want, rel=0.08), (la.mode, la.rigid_sigma)
    # independent noise on each point is mostly shape: it shrinks by about the shape kernel
    noisy = [FrameResult(i, i * 40.0, (face(0, base + rng.normal(0, 1.0, (K, 2))),)) for i in range(t)]
    smooth = track_of(run(Lookahead(n), noisy))
    got = np.std(smooth[inner] - base, axis=0).mean() / np.std(track_of(noisy)[inner] - base, axis=0).mean()
    assert got == pytest.approx(np.sqrt(np.sum(kernel(n, 2.0) ** 2)), rel=0.15)


def test_split_keeps_a_turning_growing_moving_face():
    """Rotation, scale and translation that change smoothly pass through the split fit unchanged."""
    n, t = 8, 60
    base = np.random.default_rng(7).uniform(-40, 40, size=(K, 2))
    k = np.arange(t, dtype=float)
    ang, sc = 0.01 * k, 1.0 + 0.004 * k
    tx, ty = 200 + 1.5 * k + 0.02 * k ** 2, 180 - 0.8 * k
    path = np.stack([np.stack([sc[i] * (np.cos(ang[i]) * base[:, 0] - np.sin(ang[i]) * base[:, 1]) + tx[i],
                               sc[i] * (np.sin(ang[i]) * base[:, 0] + np.cos(ang[i]) * base[:, 1]) + ty[i]], axis=1)
                     for i in range(t)])
    smooth = track_of(run(Lookahead(n), [FrameResult(i, i * 40.0, (face(0, path[i]),)) for i in range(t)]))
    assert np.abs(smooth - path).max() < 0.02


def test_zero_is_the_identity_with_no_buffer(rng):
    _, results = still_track(20, 200.0, 1.0, rng)
    la = Lookahead(0)
    for r in results:
        out = la.update(r)
        assert len(out) == 1 and out[0] is r and len(la) == 0
    assert la.flush() == []


def test_still_track_jitters_less_and_keeps_its_place(rng):
    n, noise, t = 8, 1.0, 600
    base, results = still_track(t, 300.0, noise, rng)
    out = run(Lookahead(n), results)
    raw, smooth = track_of(results), track_of(out)
    inner = slice(n, t - n)  # frames whose whole window lies inside the track
    # white noise through normalised weights w: its std shrinks by sqrt(sum w^2)
    want = np.sqrt(np.sum(kernel(n) ** 2))
    got = np.std(smooth[inner] - base, axis=0).mean() / np.std(raw[inner] - base, axis=0).mean()
    assert want < 0.6 and got == pytest.approx(want, rel=0.08)
    # no bias: the mean over the track stays the input's mean (to well under the noise's standard error)
    assert np.abs(smooth.mean(axis=0) - raw.mean(axis=0)).max() < 0.02
    # a noise-free still face keeps its place exactly, ends included
    exact = run(Lookahead(n), [FrameResult(i, i * 40.0, (face(0, base),)) for i in range(30)])
    assert np.allclose(track_of(exact), np.broadcast_to(base, (30, K, 2)), atol=1e-4, rtol=0)


def test_constant_speed_keeps_its_line_everywhere_ends_included():
    """Inside, the symmetric window keeps a line (zero phase); at the ends the window is one-sided
    and the local-linear term keeps it too: a weighted mean would be pulled inwards by
    v * sum(w_k k) / sum(w_k), more than half a pixel here."""
    n, t = 4, 40
    v = np.array([1.5, -0.75])
    start = np.random.default_rng(5).uniform(100, 200, size=(K, 2))
    line = start + np.arange(t)[:, None, None] * v
    results = [FrameResult(i, i * 40.0, (face(0, line[i]),)) for i in range(t)]
    smooth = track_of(run(Lookahead(n), results))
    assert np.allclose(smooth[n:t - n], line[n:t - n], atol=2e-3, rtol=0)  # zero phase: no lag
    w = np.exp(-0.5 * (np.arange(n + 1) / default_sigma(n)) ** 2)
    assert np.abs(v * (w * np.arange(n + 1)).sum() / w.sum()).min() > 0.35  # what a plain mean would lose
    assert np.allclose(smooth[-1], line[-1], atol=2e-3, rtol=0)
    assert np.allclose(smooth[0], line[0], atol=2e-3, rtol=0)
    assert np.allclose(smooth, line, atol=2e-3, rtol=0)
    smooth1 = track_of(run(Lookahead(1), results))  # N = 1: two-frame windows at the ends, still exact
    assert np.allclose(smooth1, line, atol=2e-3, rtol=0)


def test_a_bent_path_is_smoothed_towards_its_chord():
    """Not only lines pass: a zig-zag (noise on every other frame) is averaged away inside."""
    n, t = 8, 40
    x = np.full((t, K, 2), 100.0)
    x[::2] += 1.0
    smooth = track_of(run(Lookahead(n), [FrameResult(i, i * 40.0, (face(0, x[i]),)) for i in range(t)]))
    inside = smooth[n:t - n, 0, 0]
    assert np.ptp(inside) < 0.25 * np.ptp(x[n:t - n, 0, 0])


def test_no_recursion_the_impulse_response_is_the_kernel():
    n, t, at = 6, 40, 20
    x = np.zeros((t, K, 2))
    x[at] = 1.0
    smooth = track_of(run(Lookahead(n), [FrameResult(i, i * 40.0, (face(0, x[i] + 50),)) for i in range(t)])) - 50
    resp = smooth[:, 0, 0]
    assert np.allclose(resp[at - n: at + n + 1], kernel(n), atol=1e-5)  # symmetric: zero phase
    assert np.abs(np.delete(resp, np.arange(at - n, at + n + 1))).max() < 1e-5  # nothing beyond N frames


def test_only_landmarks_and_box_change(rng):
    _, results = still_track(12, 150.0, 2.0, rng)
    out = run(Lookahead(3), results)
    for r, o in zip(results, out):
        assert (o.frame, o.timestamp_ms) == (r.frame, r.timestamp_ms)
        a, b = r.faces[0], o.faces[0]
        assert (b.id, b.score) == (a.id, a.score) and b.landmark_scores is a.landmark_scores
        assert b.landmarks.dtype == a.landmarks.dtype and not np.array_equal(b.landmarks, a.landmarks)
        lo, hi = b.landmarks.min(axis=0), b.landmarks.max(axis=0)
        assert b.box == pytest.approx((lo[0], lo[1], hi[0], hi[1]))


def test_two_interleaved_ids_never_mix(rng):
    n, t = 5, 60
    _, solo = still_track(t, 100.0, 1.5, rng, fid=0)
    far = rng.uniform(-40, 40, size=(K, 2)) + 5000.0
    mixed = []
    for i, r in enumerate(solo):
        faces = r.faces
        if i % 7 not in (3, 4):  # id 1 comes and goes; id 0 stays
            faces = (face(1, far + rng.normal(0, 1.5, (K, 2))),) + faces if i % 2 else faces + (face(1, far),)
        mixed.append(FrameResult(r.frame, r.timestamp_ms, faces))
    out_mixed, out_solo = run(Lookahead(n), mixed), run(Lookahead(n), solo)
    # id 0 comes out bit for bit as if id 1 had never been there
    assert np.array_equal(track_of(out_mixed, 0), track_of(out_solo, 0))
    one = track_of(out_mixed, 1)
    assert one.min() > 4900 and track_of(out_mixed, 0).max() < 200
    assert [[f.id for f in o.faces] for o in out_mixed] == [[f.id for f in r.faces] for r in mixed]


def test_a_track_that_ends_or_restarts_starts_a_fresh_window():
    n = 5
    a, b, c = np.full((K, 2), 10.0), np.full((K, 2), 400.0), np.full((K, 2), 900.0)
    results = ([FrameResult(i, i * 40.0, (face(0, a),)) for i in range(10)]  # id 0 ends at frame 9
               + [FrameResult(i, i * 40.0, (face(1, b),)) for i in range(10, 14)]  # a new id begins
               + [FrameResult(14, 14 * 40.0, ())]  # id 1 is absent for a frame ...
               + [FrameResult(i, i * 40.0, (face(1, c),)) for i in range(15, 25)])  # ... and back elsewhere
    out = run(Lookahead(n), results)
    assert [o.frame for o in out] == list(range(25))
    got = {o.frame: o.faces[0].landmarks for o in out if o.faces}
    for i in range(10):
        assert np.array_equal(got[i], a)
    for i in range(10, 14):
        assert np.array_equal(got[i], b)
    for i in range(15, 25):
        assert np.array_equal(got[i], c)
    assert out[14].faces == ()


def test_a_gap_in_frame_indices_breaks_the_window():
    x = np.full((K, 2), 1.0)
    results = ([FrameResult(i, i * 40.0, (face(0, x),)) for i in range(5)]
               + [FrameResult(i, i * 40.0, (face(0, x + 100),)) for i in range(9, 14)])
    out = run(Lookahead(3), results)
    assert [o.frame for o in out] == [0, 1, 2, 3, 4, 9, 10, 11, 12, 13]
    assert all(np.array_equal(o.faces[0].landmarks, x if o.frame < 5 else x + 100) for o in out)


@pytest.mark.parametrize("n", [1, 2, 7, 15])
def test_every_frame_comes_out_once_in_order_with_the_lag(n, rng):
    t = 90
    results = []
    for i in range(t):
        faces = tuple(face(fid, rng.uniform(0, 300, size=(K, 2))) for fid in (0, 1, 2) if rng.random() < 0.6)
        results.append(FrameResult(i, 13.0 + 41.5 * i, faces))
    la = Lookahead(n)
    out = []
    for i, r in enumerate(results):
        got = la.update(r)
        assert len(got) == (1 if i >= n else 0)  # the output lags exactly N frames
        assert all(g.frame == i - n for g in got)
        out += got
        assert len(la) <= 2 * n + 1
    rest = la.flush()
    assert len(rest) == n and len(la) == 0
    out += rest
    assert [(o.frame, o.timestamp_ms) for o in out] == [(r.frame, r.timestamp_ms) for r in results]
    assert [[f.id for f in o.faces] for o in out] == [[f.id for f in r.faces] for r in results]


def test_n15_on_a_source_shorter_than_the_window(rng):
    _, results = still_track(9, 250.0, 1.0, rng)
    la = Lookahead(15)
    assert all(la.update(r) == [] for r in results)
    out = la.flush()
    assert [o.frame for o in out] == list(range(9))
    raw, smooth = track_of(results), track_of(out)
    assert np.abs(smooth - raw.mean(axis=0)).max() < np.abs(raw - raw.mean(axis=0)).max()


def test_flush_starts_afresh_and_indices_must_increase(rng):
    _, results = still_track(6, 250.0, 1.0, rng)
    la = Lookahead(2)
    first = run(la, results)
    again = run(la, results)  # a second source after the flush: frame 0 again, no leftovers
    assert all(np.array_equal(f.faces[0].landmarks, s.faces[0].landmarks) for f, s in zip(first, again))
    la.update(results[3])
    with pytest.raises(ValueError, match="frame indices must increase"):
        la.update(results[3])
    la.reset()
    assert la.update(results[0]) == [] and len(la) == 1


# -- the pipeline: delayed (frame, result) pairs, each with its own frame ----------------------------------


class _Backbone:
    size, stride, crop_scale, k = 64, 4.0, 1.3, K


class _Detector:
    def detect(self, image):
        return []


class Planted(Pipeline):
    """A pipeline whose per-frame results are planted (no models); the lookahead is the real one."""

    def __init__(self, lookahead, results):
        super().__init__(_Detector(), _Backbone(), PipelineConfig(stabilizer="none", lookahead=lookahead))
        self.planted = {r.frame: r for r in results}

    def update(self, frame, timestamp_ms=None):
        return self.planted[frame.index]


def frames_of(t):
    return [Frame(np.full((8, 8, 3), i, np.uint8), i, i * 40.0) for i in range(t)]


class Recorder:
    needs_image = True

    def __init__(self):
        self.got = []

    def write(self, result, image=None):
        self.got.append((result.frame, int(image[0, 0, 0])))


@pytest.mark.parametrize("n", [0, 4, 15])
def test_pipeline_stream_pairs_each_result_with_its_own_frame(n, rng):
    t = 30
    _, results = still_track(t, 200.0, 1.0, rng)
    pipe = Planted(n, results)
    pairs = list(pipe.stream(frames_of(t)))
    assert [(f.index, r.frame, int(f.image[0, 0, 0])) for f, r in pairs] == [(i, i, i) for i in range(t)]
    if n == 0:
        assert all(r is results[i] for i, (_, r) in enumerate(pairs))
    else:
        assert np.array_equal(track_of([r for _, r in pairs]), track_of(run(Lookahead(n), results)))
    rec = Recorder()
    assert [r.frame for r in pipe.track(frames_of(t), [rec])] == list(range(t))  # track: one result per frame
    assert rec.got == [(i, i) for i in range(t)]


def test_pipeline_track_writes_every_processed_frame_when_interrupted(rng):
    _, results = still_track(20, 200.0, 1.0, rng)

    def interrupted_source():
        yield from frames_of(12)
        raise KeyboardInterrupt

    rec = Recorder()
    pipe = Planted(5, results)
    with pytest.raises(KeyboardInterrupt):
        for _ in pipe.track(interrupted_source(), [rec]):
            pass
    assert rec.got == [(i, i) for i in range(12)]
    # a consumer that stops early: the held frames still reach the sinks, once
    rec = Recorder()
    for r in pipe.track(frames_of(20), [rec]):
        if r.frame == 3:
            break
    assert rec.got == [(i, i) for i in range(9)]  # frames 0..8 were processed (lag 5)
    # after an interrupted stream, drain gives what was held, each with its frame
    it = pipe.stream(frames_of(20))
    seen = [next(it)[1].frame for _ in range(2)]
    seen += [r.frame for _, r in pipe.drain()]
    assert seen == list(range(7))


# -- the CLI ---------------------------------------------------------------------------------------------


def short_clip(tmp_path, n):
    cap = cv2.VideoCapture(str(shared_video()))
    path = tmp_path / "short.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (512, 512))
    for _ in range(n):
        ok, f = cap.read()
        assert ok
        w.write(f)
    w.release()
    return path


def test_cli_lookahead_option_and_help():
    from stableface.cli import DEFAULT_LOOKAHEAD_FILES

    r = run_cli("webcam", "--help")
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "--lookahead N" in text and "Adds N frames of latency" in text and "[default: 0;" in text
    r = run_cli("track", "--help")
    text = " ".join(r.output.split())
    assert r.exit_code == 0 and "--lookahead N" in text and f"[default: {DEFAULT_LOOKAHEAD_FILES};" in text
    r = run_cli("track", "x.png", "--lookahead", "121")
    assert r.exit_code == 2 and "--lookahead" in r.output


def test_webcam_with_lookahead_flushes_when_the_stream_ends(tmp_path):
    from .mjpeg_server import MJPEGServer

    out = tmp_path / "live.jsonl"
    with MJPEGServer(fps=10, max_frames=6) as server:  # a stream shorter than the lookahead: all of it is the flush
        r = subprocess.run([sys.executable, "-m", "stableface", "webcam", "--camera", server.url, "--no-show", "-q",
                            "--stabilizer", "none", "--lookahead", "8", "-o", str(out), "-o", str(tmp_path / "live.json")],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    frames = [json.loads(x)["frame"] for x in out.read_text().splitlines()]
    # a live source may drop stale frames on a slow machine: the ones written are in order, none twice
    assert 1 <= len(frames) <= 6 and frames == sorted(set(frames)) and set(frames) <= set(range(6))
    doc = json.loads((tmp_path / "live.json").read_text())
    assert doc["lookahead"] == 8 and [f["frame"] for f in doc["frames"]] == frames


def test_constant_acceleration_is_kept_inside():
    """The quadratic term: a face accelerating uniformly keeps its path (a Gaussian mean would
    round it off by sigma^2 * a / 2 at every frame)."""
    n, t = 8, 40
    acc = np.array([0.2, -0.1])
    start = np.random.default_rng(6).uniform(100, 200, size=(K, 2))
    k = np.arange(t)[:, None, None]
    path = start + 0.5 * acc * k ** 2
    smooth = track_of(run(Lookahead(n), [FrameResult(i, i * 40.0, (face(0, path[i]),)) for i in range(t)]))
    assert np.allclose(smooth, path, atol=2e-3, rtol=0)
    mean = track_of(run(Lookahead(n, degree=0, mode="plain"), [FrameResult(i, i * 40.0, (face(0, path[i]),)) for i in range(t)]))
    assert np.abs(mean[n:t - n] - path[n:t - n]).max() > 0.2  # the plain mean does round it off


def test_pipeline_lookahead_smooths_the_raw_landmarks():
    """Under a lookahead the tracker's stabilizers are the raw decoder (no causal lag to smooth
    over), and output headers say so."""
    from stableface.pipeline import Pipeline, PipelineConfig
    from stableface.stabilizer import NoStabilizer

    pipe = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer="convlstm", lookahead=8))
    assert isinstance(pipe.new_stabilizer(), NoStabilizer) and pipe.step is None
    assert pipe.stabilizer_label == "none"
    live = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer="convlstm"))
    assert not isinstance(live.new_stabilizer(), NoStabilizer) and live.stabilizer_label == "convlstm"


def test_a_result_the_lookahead_never_returns_does_not_shift_the_pairing(rng):
    """A frame held whose result never comes back from the lookahead (a Ctrl-C inside its update, on
    a live stream): every later result is still paired with its own frame. (A parallel queue paired
    frame 7 with result 8 and stopped the run on an assertion.)"""
    _, results = still_track(20, 200.0, 1.0, rng)
    pipe = Planted(4, results)
    real = pipe.lookahead.update

    def update(result):
        return [] if result.frame == 7 else real(result)  # result 7 is lost inside the lookahead

    pipe.lookahead.update = update
    got = [(f.index, r.frame) for f, r in pipe.stream(frames_of(20))]
    assert all(a == b for a, b in got), got
    assert [b for _, b in got] == [i for i in range(20) if i != 7]


def test_a_repeated_frame_index_is_refused_and_the_held_frames_survive(rng):
    _, results = still_track(20, 200.0, 1.0, rng)
    pipe = Planted(4, results)
    from dataclasses import replace

    frames = list(frames_of(8))
    impostor = replace(frames[6], image=np.full_like(frames[6].image, 255))  # frame 6 again, another picture
    got = []
    with pytest.raises(ValueError, match="must increase"):
        for f, r in pipe.stream(frames + [impostor]):
            got.append((f.index, r.frame, int(f.image[0, 0, 0])))
    got += [(f.index, r.frame, int(f.image[0, 0, 0])) for f, r in pipe.drain()]
    assert got == [(i, i, i) for i in range(8)]  # each result with its own frame, the held frame 6 kept


def test_split_falls_back_to_the_plain_fit_beside_a_collapsed_frame():
    """A frame whose landmarks all sit on one point (a blank heatmap decodes so) has no similarity to
    invert: the frames around it are fitted as points, finite, never a division by zero."""
    n, t = 4, 12
    base = np.random.default_rng(8).uniform(100, 200, size=(K, 2))
    x = [base.copy() for _ in range(t)]
    x[6] = np.full((K, 2), 150.0)
    results = [FrameResult(i, i * 40.0, (face(0, x[i]),)) for i in range(t)]
    split = track_of(run(Lookahead(n), results))
    plain = track_of(run(Lookahead(n, mode="plain"), results))
    assert np.all(np.isfinite(split))
    assert np.allclose(split[2:11], plain[2:11], atol=1e-4)  # every window holding frame 6
    assert np.allclose(split[0], base, atol=1e-4)  # frames whose window misses it keep the split fit (exact here)


def _shaking(t):
    """A similarity that turns, scales and shifts fast (an 8-frame period): frame t's image of the face frame."""
    a = 0.2 * np.sin(2 * np.pi * t / 8)
    s = 1.0 + 0.1 * np.cos(2 * np.pi * t / 8)
    return np.array([[s * np.cos(a), -s * np.sin(a), 300 + 40 * np.sin(2 * np.pi * t / 8)],
                     [s * np.sin(a), s * np.cos(a), 200 + 25 * np.cos(2 * np.pi * t / 5)]])


def test_a_followed_face_frame_keeps_fast_rigid_motion_exactly_and_smooths_the_shape(rng):
    """Faces that carry their frame (the pipeline's image flow): the shape is smoothed in it, the motion is
    the frame's own. A shape that holds still under fast shaking comes out where it is (the split fit,
    without frames, rounds the shaking off), and the shape's noise is smoothed away as in a still face."""
    from stableface.stabilizer import apply_affine

    shape = rng.uniform(-50, 50, size=(K, 2))
    frames = [_shaking(t) for t in range(60)]
    truth = [apply_affine(f, shape) for f in frames]
    exact = [FrameResult(t, 40.0 * t, (Face(0, (0, 0, 1, 1), 0.9, truth[t].astype(np.float32),
                                            np.ones(K, np.float32), frames[t]),)) for t in range(60)]
    out = track_of(run(Lookahead(8), exact))
    assert np.abs(out - np.stack(truth)).max() < 1e-3
    plain = track_of(run(Lookahead(8), [FrameResult(r.frame, r.timestamp_ms, (face(0, r.faces[0].landmarks),)) for r in exact]))
    assert np.abs(plain - np.stack(truth)).max() > 0.5  # the split fit (no frames) cannot follow it exactly
    noisy = [FrameResult(t, 40.0 * t, (Face(0, (0, 0, 1, 1), 0.9, (truth[t] + rng.normal(0, 1.0, (K, 2))).astype(np.float32),
                                            np.ones(K, np.float32), frames[t]),)) for t in range(60)]
    err = np.linalg.norm(track_of(run(Lookahead(8), noisy))[10:-10] - np.stack(truth)[10:-10], axis=-1).mean()
    raw = np.linalg.norm(np.stack([r.faces[0].landmarks for r in noisy])[10:-10] - np.stack(truth)[10:-10], axis=-1).mean()
    assert err < 0.5 * raw, (err, raw)


def test_the_pipeline_follows_faces_for_the_lookahead(tmp_path):
    """With a lookahead the raw faces carry their frame (image flow); with ``flow=False`` they do not."""
    video = shared_video()
    if video is None:
        pytest.skip("no shared clip")
    pipe = Pipeline.from_weights(device="cpu", config=PipelineConfig(lookahead=4))
    cap = cv2.VideoCapture(str(video))
    images = [cap.read()[1] for _ in range(6)]
    cap.release()
    res = [pipe.update(Frame(im, i, 40.0 * i)) for i, im in enumerate(images)]
    frames = [f.frame for r in res for f in r.faces]
    assert frames and all(f is not None and f.shape == (2, 3) for f in frames)
    off = Pipeline.from_weights(device="cpu", config=PipelineConfig(lookahead=4, flow=False))
    assert all(f.frame is None for i, im in enumerate(images) for f in off.update(Frame(im, i, 40.0 * i)).faces)
