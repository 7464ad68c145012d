"""Pipeline.track, the one loop from frames to sinks: reader and writer threads, order, bounded
queues, errors raised in the consumer, the batched faces, and a profile whose stages add up."""

import time

import cv2
import numpy as np
import pytest

import stableface.pipeline as P
from stableface.pipeline import Pipeline, PipelineConfig
from stableface.sinks import SinkError
from stableface.video import open_source

from .conftest import shared_video
from .test_lookahead import Planted, Recorder, frames_of, still_track


def clip(tmp_path, n, faces=1):
    """The first ``n`` frames of shared clips as an MJPG file: one clip, or ``faces`` clips side by side."""
    names = ["WDA_KatieHill_000.mp4", "WDA_BobMenendez_000.mp4", "RD_Radio2_000.mp4", "WDA_EdMarkey0_000.mp4"]
    caps = [cv2.VideoCapture(str(shared_video(nm))) for nm in names[:faces]]
    path = tmp_path / f"clip{faces}.avi"
    w = None
    for _ in range(n):
        frame = np.hstack([c.read()[1] for c in caps])
        if w is None:
            w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, frame.shape[1::-1])
        w.write(frame)
    w.release()
    return path


def landmarks(results):
    return [(r.frame, [(f.id, f.landmarks) for f in r.faces]) for r in results]


def assert_same(a, b, tol=1e-4):
    assert [(fr, [i for i, _ in fs]) for fr, fs in a] == [(fr, [i for i, _ in fs]) for fr, fs in b]
    for (_, fa), (_, fb) in zip(a, b):
        for (_, pa), (_, pb) in zip(fa, fb):
            assert np.abs(pa - pb).max() <= tol


@pytest.fixture(scope="module")
def real_pipe():
    return {n: Pipeline.from_weights(device="cpu", config=PipelineConfig(lookahead=n)) for n in (0, 4)}


@pytest.mark.parametrize("lookahead", [0, 4])
def test_threaded_track_gives_the_serial_loops_landmarks(tmp_path, real_pipe, lookahead):
    """The reader/writer threads change nothing: the same landmarks as decoding, tracking and
    writing one after the other in one thread (the previous loop), every frame, in order."""
    path = clip(tmp_path, 30)
    pipe = real_pipe[lookahead]
    with open_source(str(path)) as src:
        serial = [r for _, r in pipe.stream(src)]
    rec = Recorder()
    threaded = list(pipe.track(str(path), [rec]))
    assert [r.frame for r in threaded] == list(range(30)) and [f for f, _ in rec.got] == list(range(30))
    assert sum(len(r.faces) for r in threaded) == 30
    assert_same(landmarks(serial), landmarks(threaded))
    inline = list(pipe.track(str(path), overlap=False))
    assert_same(landmarks(serial), landmarks(inline))


def test_faces_batched_in_one_call_give_the_per_face_landmarks(tmp_path, monkeypatch):
    """Two faces side by side: one backbone and one ConvLSTM call for both, against each face's own
    stabilizer update (the previous path), frame by frame."""
    path = clip(tmp_path, 20, faces=2)
    pipe = Pipeline.from_weights(device="cpu", config=PipelineConfig(max_faces=2, lookahead=0))
    calls = []
    step = pipe.step.session.run
    pipe.step.session.run = lambda out, feeds: calls.append(len(feeds["o"])) or step(out, feeds)
    batched = list(pipe.track(str(path)))
    assert all(len(r.faces) == 2 for r in batched)
    assert 2 in calls and all(n <= 2 for n in calls)
    monkeypatch.setattr(P, "update_many", lambda stabs, hm, crops, ts, images: [s.update(h, c, ts, im) for s, h, c, im in zip(stabs, hm, crops, images)])
    one_by_one = list(pipe.track(str(path)))
    assert_same(landmarks(batched), landmarks(one_by_one))


def test_profile_stages_add_up_to_the_wall_time(tmp_path, real_pipe):
    """A consistency check on a real short run (not a speed figure): the tracking thread's stages,
    none counted twice, account for its wall time within 10%, and the wall time is the loop's."""
    path = clip(tmp_path, 40)
    pipe = real_pipe[4]
    pipe.clear_profile()
    rec = Recorder()
    t0 = time.perf_counter()
    n = sum(1 for _ in pipe.track(str(path), [rec]))
    wall = time.perf_counter() - t0
    prof = pipe.profile()
    assert n == prof["frames"] == 40
    assert abs(prof["wall_seconds"] - wall) <= 0.1 * wall
    stages = prof["stages"]
    for name in ("read", "detect", "crop", "backbone", "stabilizer", "pdc", "lookahead", "write", "caller"):
        assert name in stages, name
    counted = sum(v["seconds"] for k, v in stages.items() if k != "other")
    assert abs(counted - prof["wall_seconds"]) <= 0.1 * prof["wall_seconds"], stages
    assert abs(sum(v["seconds"] for v in stages.values()) - prof["wall_seconds"]) < 1e-3
    assert set(prof["background"]) == {"decode", "ahead", "write"} and prof["background"]["decode"]["calls"] == 41
    assert prof["background"]["ahead"]["calls"] == 40  # the shot test's thumbnails and re-detections, in the reader thread


def test_reader_stays_a_bounded_queue_ahead():
    """A slow sink never lets the reader run far ahead (memory stays flat), and nothing is dropped."""
    made = []

    def source():
        for f in frames_of(60):
            made.append(f.index)
            yield f

    ahead = []

    class Slow(Recorder):
        def write(self, result, image=None):
            ahead.append(len(made) - result.frame)
            time.sleep(0.002)
            super().write(result, image)

    _, results = still_track(60, 200.0, 1.0, np.random.default_rng(0))
    rec = Slow()
    out = [r.frame for r in Planted(0, results).track(source(), [rec], queue_size=3)]
    assert out == list(range(60)) and rec.got == [(i, i) for i in range(60)]
    assert max(ahead) <= 3 + 3 + 2  # the reader's queue, the writer's queue, the frames in hand


def test_a_sink_error_in_the_writer_thread_reaches_the_consumer():
    _, results = still_track(40, 200.0, 1.0, np.random.default_rng(0))
    footers = []

    class Broken(Recorder):
        def write(self, result, image=None):
            if result.frame == 5:
                raise SinkError("out.json: disk full")
            super().write(result, image)

        def footer(self, unreadable, dropped):
            footers.append(1)

    rec = Broken()
    got = []
    with pytest.raises(SinkError, match="disk full"):
        for r in Planted(3, results).track(frames_of(40), [rec]):
            got.append(r.frame)
    assert rec.got == [(i, i) for i in range(5)]  # nothing after the error, and no footer
    assert not footers and len(got) < 40


def test_a_reader_error_reaches_the_consumer_and_the_sinks_keep_every_processed_frame():
    _, results = still_track(20, 200.0, 1.0, np.random.default_rng(0))
    footers = []

    class Rec(Recorder):
        def footer(self, unreadable, dropped):
            footers.append(unreadable)

    def source():
        yield from frames_of(12)
        raise OSError("decoder died")

    rec = Rec()
    with pytest.raises(OSError, match="decoder died"):
        for _ in Planted(5, results).track(source(), [rec]):
            pass
    assert rec.got == [(i, i) for i in range(12)] and footers == [[]]


def test_live_sources_are_not_read_ahead(monkeypatch):
    """A live source keeps its own newest-frame reader: no second queue that would hold stale frames."""
    started = []
    real = P._Reader
    monkeypatch.setattr(P, "_Reader", lambda *a: started.append(1) or real(*a))

    class Live(list):
        class info:
            live, name = True, "cam"

    _, results = still_track(5, 200.0, 1.0, np.random.default_rng(0))
    assert [r.frame for r in Planted(0, results).track(Live(frames_of(5)))] == list(range(5))
    assert not started
    assert [r.frame for r in Planted(0, results).track(frames_of(5))] == list(range(5)) and started


def test_cli_profile_writes_the_stage_table(tmp_path):
    import json

    from .test_cli import run_cli

    path = clip(tmp_path, 12)
    prof, out = tmp_path / "prof.json", tmp_path / "out.json"
    r = run_cli("track", str(path), "-o", str(out), "--profile", str(prof), "-v", "--lookahead", "2")
    assert r.exit_code == 0, r.output
    doc = json.loads(prof.read_text())
    assert doc["stableface_profile"] == 1 and doc["sources"] == 1 and doc["frames"] == 12
    assert len(json.loads(out.read_text())["frames"]) == 12
    assert {"read", "backbone", "stabilizer", "pdc", "write", "other"} <= set(doc["stages"])
    assert abs(sum(v["seconds"] for v in doc["stages"].values()) - doc["wall_seconds"]) < 1e-3
    assert doc["fps"] == pytest.approx(12 / doc["wall_seconds"], rel=1e-3)
    assert "per frame (ms):" in r.output and "overlapped" in r.output
    r = run_cli("track", str(path), str(path), "--out-dir", str(tmp_path / "d"), "--jobs", "2", "--profile", str(prof))
    assert r.exit_code == 2 and "--profile needs --engine local --jobs 1" in r.output


@pytest.mark.parametrize("rgb", [True, False])
def test_backbone_input_is_the_flip_transpose_and_normalisation(rgb):
    """The channel-by-channel normalisation gives exactly what the broadcast arithmetic gave."""
    from stableface.backbone import HeatmapBackbone
    from stableface.weights import resolve

    bb = HeatmapBackbone(resolve().backbone, "cpu", 1)
    bb.rgb = rgb
    bb.mean = np.array([120.5, 110.25, 100.0], np.float32).reshape(1, 3, 1, 1)
    bb.std = np.array([58.0, 57.5, 3.0], np.float32).reshape(1, 3, 1, 1)
    crops = np.random.default_rng(1).integers(0, 256, (3, bb.size, bb.size, 3), dtype=np.uint8)
    x = crops[..., ::-1] if rgb else crops
    want = (x.transpose(0, 3, 1, 2).astype(np.float32) - bb.mean) / bb.std
    got = bb.prepare(crops)
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_sessions_leave_one_cpu_to_the_reader_and_writer(monkeypatch):
    """onnxruntime gets every CPU the process may use but one unless threads are asked for (read back
    from the live sessions); never fewer than one."""
    from stableface import onnx_util
    from stableface.weights import resolve

    path = resolve().backbone
    for cpus, expected in ((2, 1), (8, 7), (1, 1)):
        monkeypatch.setattr(onnx_util.os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)), raising=False)
        assert onnx_util.default_threads() == expected
        assert onnx_util.session(path, "cpu").get_session_options().intra_op_num_threads == expected
    assert onnx_util.session(path, "cpu", threads=3).get_session_options().intra_op_num_threads == 3


def test_the_reader_thread_runs_the_redetections_ahead_and_nothing_changes(tmp_path):
    """With a reader thread, every re-detection runs there (one model in turn, by block of frames), and
    the results are the serial loop's, which runs the same re-detections in the tracking thread."""
    import threading

    path = clip(tmp_path, 40)
    pipe = Pipeline.from_weights(device="cpu", config=PipelineConfig(lookahead=0, redetect_every=10))
    calls, redetect = [], pipe.detector.redetect

    def spy(image, turn=None):
        calls.append((threading.current_thread() is threading.main_thread(), turn))
        return redetect(image, turn)

    pipe.detector.redetect = spy
    with open_source(str(path)) as src:
        serial = [r for _, r in pipe.stream(src)]
    assert calls == [(True, 1), (True, 2), (True, 3)]  # frames 10, 20, 30: the models in turn
    calls.clear()
    threaded = list(pipe.track(str(path)))
    assert sorted(calls) == [(False, 1), (False, 2), (False, 3)]  # (at frame 0 it searches: none is run ahead)
    assert_same(landmarks(serial), landmarks(threaded), tol=0.0)


def test_jobs_workers_share_the_cpus():
    from stableface.batch import worker_threads

    assert [worker_threads(j, 16) for j in (1, 2, 4, 16, 32)] == [16, 8, 4, 1, 1]
    assert worker_threads(2, 2) == 1 and worker_threads(3, 2) == 1
