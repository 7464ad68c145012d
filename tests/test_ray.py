"""`track --engine ray` against a real Ray cluster (CI: `ray start --head --num-cpus 2` on 127.0.0.1,
RAY_ADDRESS exported by .ci/run), and `--skip-existing` for both engines.

The Ray tests skip when Ray is not installed or RAY_ADDRESS names no cluster; CI installs the
`ray` extra and starts one, so there they run.
"""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from .test_faults import files_in, noise_video


def stableface(*args, timeout=240, **kw):
    return subprocess.run([sys.executable, "-m", "stableface", "track", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.fixture(scope="module")
def cluster():
    """RAY_ADDRESS of a running cluster (the tests join it: no cluster is started per test)."""
    pytest.importorskip("ray")
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        pytest.skip("RAY_ADDRESS is not set: start a cluster (ray start --head --num-cpus 2) and export it")
    return address


def face_clip(path, n=16, seed=0):
    """The demo's handheld-camera clip of a face (scikit-image's astronaut), as an MJPG .avi."""
    pytest.importorskip("skimage")
    from stableface.demo import make_clip

    frames, _ = make_clip(n, noise=4.0, seed=seed)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, frames[0].shape[1::-1])
    for f in frames:
        w.write(f)
    w.release()
    return path


def frames_of(path):
    return [f["frame"] for f in json.loads(path.read_text())["frames"]]


def test_ray_gives_the_local_results(tmp_path, cluster):
    """Planted answer: the local run's JSON. Same frames, same ids, landmarks within 0.01 px, faces in
    every frame (so that the comparison compares something)."""
    srcs = [face_clip(tmp_path / f"clip{i}.avi", seed=i) for i in range(3)]
    local = stableface(*srcs, "--out-dir", tmp_path / "local", "-q")
    assert local.returncode == 0, local.stderr
    r = stableface(*srcs, "--out-dir", tmp_path / "ray", "--engine", "ray", "-q")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert files_in(tmp_path / "ray") == ["clip0.json", "clip1.json", "clip2.json"]
    for name in files_in(tmp_path / "local"):
        a, b = (json.loads((tmp_path / d / name).read_text()) for d in ("local", "ray"))
        assert a["source"] == b["source"] and len(a["frames"]) == len(b["frames"]) == 16
        assert {k: v for k, v in a.items() if k != "frames"} == {k: v for k, v in b.items() if k != "frames"}
        for fa, fb in zip(a["frames"], b["frames"]):
            assert fa["frame"] == fb["frame"] and fa["timestamp_ms"] == fb["timestamp_ms"]
            assert [f["id"] for f in fa["faces"]] == [f["id"] for f in fb["faces"]] == [0]
            for x, y in zip(fa["faces"], fb["faces"]):
                assert np.abs(np.subtract(x["landmarks"], y["landmarks"])).max() < 0.01
                assert np.abs(np.subtract(x["box"], y["box"])).max() < 0.01


def test_ray_a_bad_source_fails_alone_and_the_summary_names_it(tmp_path, cluster):
    good = [noise_video(tmp_path / f"{c}.avi", n=20, seed=i) for i, c in enumerate("ac")]
    bad = tmp_path / "b.mp4"
    bad.write_text("not a video")
    out = tmp_path / "out"
    r = stableface(good[0], bad, good[1], "--out-dir", out, "--engine", "ray", "-q", "--stabilizer", "none")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.splitlines()[-2] == "stableface: 1 of 3 sources failed:"
    assert r.stderr.splitlines()[-1].startswith(f"  - {bad}: ")
    assert files_in(out) == ["a.json", "c.json"]
    assert all(frames_of(out / n) == list(range(20)) for n in ("a.json", "c.json"))


def test_ray_refuses_colliding_names_and_stdout_before_any_work(tmp_path):
    (tmp_path / "d1").mkdir()
    for name in ("a.png", "a.jpg"):
        cv2.imwrite(str(tmp_path / "d1" / name), np.full((40, 40, 3), 90, np.uint8))
    # both would write a.json: refused up front, before the (unreachable) cluster is even asked
    r = stableface(tmp_path / "d1" / "a.jpg", tmp_path / "d1" / "a.png", "--out-dir", tmp_path / "o", "--engine", "ray",
                   "--ray-address", "127.0.0.1:1")
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"stableface: error: --out-dir: {tmp_path / 'd1' / 'a.jpg'} and {tmp_path / 'd1' / 'a.png'} would write the same "
        "file: rename one, or run them separately"]
    assert not (tmp_path / "o").exists()
    r = stableface(tmp_path / "d1" / "a.jpg", "-o", "-", "--engine", "ray")
    assert r.returncode == 2 and "needs --engine local --jobs 1" in r.stderr


def test_an_unreachable_cluster_is_one_line_exit_2(tmp_path):
    pytest.importorskip("ray")
    src = noise_video(tmp_path / "a.avi", n=5)
    t0 = time.monotonic()
    r = stableface(src, "--out-dir", tmp_path / "out", "--engine", "ray", "--ray-address", "127.0.0.1:1")
    assert time.monotonic() - t0 < 60
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "stableface: error: cannot reach the Ray cluster at 127.0.0.1:1 (Connection refused)"], r.stderr
    assert not (tmp_path / "out").exists() or files_in(tmp_path / "out") == []


def test_ray_workers_load_the_models_once_and_onnxruntime_uses_the_cpus_they_hold(tmp_path, cluster):
    """Three sources on fewer workers: each worker loads the models once (one line each) and tracks
    several sources; its onnxruntime session has as many threads as the CPUs it holds."""
    srcs = [noise_video(tmp_path / f"{c}.avi", n=5, seed=i) for i, c in enumerate("abc")]
    for cpus, workers in ((1, 2), (2, 1)):
        out = tmp_path / f"out{cpus}"
        r = stableface(*srcs, "--out-dir", out, "--engine", "ray", "--ray-cpus", cpus, "--jobs", workers, "-vv",
                       "--stabilizer", "none")
        assert r.returncode == 0, r.stderr
        said = [ln for ln in r.stderr.splitlines() if "onnxruntime threads" in ln]
        assert 1 <= len(said) <= workers, said
        assert all(ln.endswith(f": {cpus} CPU, {cpus} onnxruntime threads") for ln in said), said
        assert all(frames_of(out / f"{c}.json") == list(range(5)) for c in "abc")


def test_a_ray_worker_killed_mid_video_is_retried_nothing_lost_or_duplicated(tmp_path, cluster):
    """SIGKILL the Ray worker while it writes b.json: b.avi is tracked again on a new worker; every
    file holds each frame once, in order; no partial or lock file is left."""
    srcs = [noise_video(tmp_path / f"{c}.avi", n=100, seed=i) for i, c in enumerate("abc")]
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "stableface", "track", *map(str, srcs), "--out-dir", str(out), "-q",
                          "--engine", "ray", "--stabilizer", "none", "--lookahead", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 180
    while p.poll() is None and time.monotonic() < deadline and killed is None:
        for partial in out.glob("b.json.*.partial") if out.exists() else []:
            time.sleep(0.3)  # b.avi is being tracked: a few frames in
            killed = int(partial.name.split(".")[2])
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.02)
    _, err = p.communicate(timeout=180)
    assert killed is not None, err
    assert p.returncode == 0 and "Traceback" not in err, err
    assert f"stableface: {srcs[1]}: its Ray worker process died; trying it once more" in err.splitlines(), err
    assert files_in(out) == ["a.json", "b.json", "c.json"]
    for name in files_in(out):
        assert frames_of(out / name) == list(range(100))


def test_ray_ctrl_c_cancels_the_tasks_and_leaves_only_complete_files(tmp_path, cluster):
    srcs = [noise_video(tmp_path / f"{c}.avi", n=150, seed=i) for i, c in enumerate("abcdef")]
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "stableface", "track", *map(str, srcs), "--out-dir", str(out), "-q",
                          "--engine", "ray", "--stabilizer", "none", "--lookahead", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while len(list(out.glob("*.partial")) if out.exists() else []) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # both workers a few frames in
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert err.splitlines() == ["stableface: interrupted; the sources cut short were cancelled and their outputs removed "
                                "(complete files remain)"]
    assert len(files_in(out)) < 6
    for name in files_in(out):  # what is left is whole; nothing partial, no lock
        assert name.endswith(".json"), name
        assert frames_of(out / name) == list(range(150))


@pytest.mark.parametrize("engine", ["local", "local-jobs", "ray"])
def test_skip_existing_resumes_a_batch(tmp_path, engine, request):
    """A batch whose outputs partly exist: with --skip-existing only the missing ones are tracked (the
    others are not touched); without it, the existing ones are refused as before."""
    if engine == "ray":
        request.getfixturevalue("cluster")
    flags = {"local": [], "local-jobs": ["--jobs", "2"], "ray": ["--engine", "ray"]}[engine]
    srcs = [noise_video(tmp_path / f"{c}.avi", n=10, seed=i) for i, c in enumerate("abc")]
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.json").write_text("planted: a finished output")
    r = stableface(*srcs, "--out-dir", out, "--stabilizer", "none", *flags)
    assert r.returncode == 2 and "a.json already exists" in r.stderr
    r = stableface(*srcs, "--out-dir", out, "--stabilizer", "none", "--skip-existing", *flags)
    assert r.returncode == 0, r.stderr
    assert "stableface: 1 of 3 sources skipped: their outputs exist (--skip-existing)" in r.stderr.splitlines()
    assert (out / "a.json").read_text() == "planted: a finished output"
    assert files_in(out) == ["a.json", "b.json", "c.json"] and frames_of(out / "c.json") == list(range(10))
    r = stableface(*srcs, "--out-dir", out, "--stabilizer", "none", "--skip-existing", "-q", *flags)
    assert r.returncode == 0 and r.stderr == "", r.stderr  # all done: nothing to track


def test_skip_existing_interrupted_local_batch_removes_the_sources_cut_short(tmp_path):
    """With --skip-existing an interrupt removes what it cut short, so that the next run redoes it
    (a final name means a finished file); without the flag they are closed up to their last frame."""
    srcs = [noise_video(tmp_path / f"{c}.avi", n=120, seed=i) for i, c in enumerate("abcd")]
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "stableface", "track", *map(str, srcs), "--jobs", "2", "--out-dir", str(out),
                          "-q", "--stabilizer", "none", "--lookahead", "0", "--skip-existing"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.partial")) if out.exists() else []) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert err.splitlines() == ["stableface: interrupted; the sources cut short were cancelled and their outputs removed "
                                "(complete files remain)"]
    left = files_in(out)
    sizes = {n: (out / n).stat().st_size for n in left}  # (in the message: a once-seen empty file under load)
    assert len(left) < 4 and all(n.endswith(".json") and sizes[n] for n in left), sizes
    assert all(frames_of(out / n) == list(range(120)) for n in left), left  # only finished files
    r = stableface(*srcs, "--out-dir", out, "--stabilizer", "none", "--lookahead", "0", "--skip-existing", "-q",
                   "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert files_in(out) == ["a.json", "b.json", "c.json", "d.json"]
    assert all(frames_of(out / n) == list(range(120)) for n in files_in(out))
