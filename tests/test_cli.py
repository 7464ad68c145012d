"""The CLI through CliRunner and through a real subprocess: exit codes, outputs, light import."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from stableface import __version__
from stableface.cli import main

from .conftest import shared_video


def run_cli(*args):
    return CliRunner().invoke(main, list(args))


def assert_closed_after_signal(p, code, json_path, csv_path, live=False) -> int:
    """The signalled run exited with ``code``, no traceback, and left a valid JSON and CSV of the
    same frames 0..n-1 (``live``: of the same increasing frame numbers, a dropped frame's left out);
    returns n (> 0)."""
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert "Traceback" not in err
    doc = json.loads(json_path.read_text())
    numbers = [f["frame"] for f in doc["frames"]]
    n = len(numbers)
    assert n > 0
    if live:
        assert all(b > a for a, b in zip(numbers, numbers[1:])) and numbers[-1] + 1 - n <= doc["dropped_frames"]
    else:
        assert numbers == list(range(n))
    assert [int(r.split(",")[0]) for r in csv_path.read_text().splitlines()[1:]] == numbers
    return n


def test_version_and_help():
    r = run_cli("--version")
    assert r.exit_code == 0 and __version__ in r.output
    r = run_cli("track", "--help")
    assert r.exit_code == 0 and "Examples:" in r.output and "--stabilizer" in r.output


def test_usage_errors_exit_2(tmp_path):
    assert run_cli("track").exit_code == 2  # no source
    r = run_cli("track", "x.mp4", "-o", str(tmp_path / "out.txt"))
    assert r.exit_code == 2 and "unknown output format" in r.output
    r = run_cli("track", "a.mp4", "b.mp4", "-o", str(tmp_path / "o.json"))
    assert r.exit_code == 2 and "--out-dir" in r.output
    assert run_cli("track", "x.mp4", "--stabilizer", "kalman").exit_code == 2


def test_missing_source_is_one_clear_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "stableface", "track", str(tmp_path / "nope.mp4"), "-o",
                        str(tmp_path / "o.json")], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"stableface: error: {tmp_path / 'nope.mp4'}: no such file or folder"]
    assert "Traceback" not in r.stderr and not (tmp_path / "o.json").exists()


def test_bad_weights_exit_2_naming_the_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not onnx")
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    r = run_cli("track", str(img), "--weights", str(bad))
    assert r.exit_code == 2 and str(bad) in r.output and "not a loadable ONNX model" in r.output


def test_batch_continues_after_a_failure_and_summarises(tmp_path):
    good = tmp_path / "blank.png"
    cv2.imwrite(str(good), np.full((64, 64, 3), 90, np.uint8))
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is text")
    out = tmp_path / "out"
    r = run_cli("track", str(good), str(fake), "--out-dir", str(out), "--stabilizer", "none")
    assert r.exit_code == 1
    assert "1 of 2 sources failed" in r.output and "fake.mp4: not a readable video" in r.output
    doc = json.loads((out / "blank.json").read_text())
    assert doc["frames"] == [{"frame": 0, "timestamp_ms": 0.0, "shot": 0, "faces": []}]


def test_light_import_does_not_load_torch():
    code = ("import sys, stableface, stableface.cli, stableface.pipeline, stableface.sinks, stableface.video;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


@pytest.mark.slow
def test_jsonl_on_stdout_while_a_progress_bar_shows(tmp_path):
    """``-o -`` from a terminal: the progress bar (shown when stderr is a terminal, forced on here) must not
    take stdout over; every frame's JSON line reaches stdout and none reaches stderr."""
    img = tmp_path / "face.png"
    cap = cv2.VideoCapture(str(shared_video()))
    ok, f = cap.read()
    assert ok and cv2.imwrite(str(img), f)
    code = ("import sys, stableface.cli as c; c._progress_enabled = lambda quiet: not quiet; "
            "sys.argv = ['stableface'] + sys.argv[1:]; c.main()")
    env = dict(os.environ, FORCE_COLOR="1")  # rich then treats stderr as a terminal (and would redirect stdout)
    for sources in ([img], [img, img]):  # one source: the frames bar; several: the sources bar
        r = subprocess.run([sys.executable, "-c", code, "track", *map(str, sources), "-o", "-"], capture_output=True,
                           text=True, env=env)
        assert r.returncode == 0, r.stderr
        frames = [json.loads(x) for x in r.stdout.splitlines()]
        assert len(frames) == len(sources) and all(len(fr["faces"]) == 1 for fr in frames)
        assert '"landmarks"' not in r.stderr


def test_track_subprocess_jsonl_stdout_and_files(tmp_path):
    clip = shared_video()
    # first 12 frames of a real clip
    cap = cv2.VideoCapture(str(clip))
    short = tmp_path / "short.avi"
    w = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (512, 512))
    for _ in range(12):
        ok, f = cap.read()
        w.write(f)
    w.release()
    code = ("import sys, stableface.cli as c; sys.argv=['stableface'] + sys.argv[1:]; "
            "import runpy; c.main()")
    r = subprocess.run([sys.executable, "-c", code, "track", str(short), "-o", "-", "-o", str(tmp_path / "t.csv"),
                        "-o", str(tmp_path / "t.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    frames = [json.loads(x) for x in lines]
    assert [f["frame"] for f in frames] == list(range(12))
    assert all(len(f["faces"]) == 1 and len(f["faces"][0]["landmarks"]) == 68 for f in frames)
    assert {f["faces"][0]["id"] for f in frames} == {0}
    assert frames[1]["timestamp_ms"] == pytest.approx(40.0)
    doc = json.loads((tmp_path / "t.json").read_text())
    # files default to the fixed-lag smoother of the raw landmarks (--lookahead 8)
    assert doc["stabilizer"] == "none" and doc["lookahead"] == 8 and len(doc["frames"]) == 12
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert len(rows) == 13 and rows[1].split(",")[4] == "1"
    # the torch-free promise holds for a real run too
    r2 = subprocess.run([sys.executable, "-c",
                         "import sys; from stableface.cli import main; sys.argv=['s','track',%r,'-q','--stabilizer','none'];"
                         "\ntry:\n  main()\nexcept SystemExit: pass\nprint('torch' in sys.modules)" % str(short)],
                        capture_output=True, text=True)
    assert r2.stdout.strip().endswith("False"), r2.stderr


def test_webcam_records_a_live_stream_without_window(tmp_path):
    from .mjpeg_server import MJPEGServer

    out = tmp_path / "live.jsonl"
    with MJPEGServer(fps=30, max_frames=45) as server:
        r = subprocess.run([sys.executable, "-m", "stableface", "webcam", "--camera", server.url, "--no-show", "-q",
                            "--stabilizer", "none", "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    frames = [json.loads(x) for x in out.read_text().splitlines()]
    assert 1 <= len(frames) <= 45
    numbers = [f["frame"] for f in frames]  # the stream's numbers: stale frames dropped leave theirs out
    assert numbers[0] == 0 and all(b > a for a, b in zip(numbers, numbers[1:])) and numbers[-1] < 45
    assert all(f["faces"] == [] and f["source"] == server.url for f in frames)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_signals_leave_valid_outputs(tmp_path, sig, code):
    import signal
    import time

    clip = shared_video()
    out_json, out_csv = tmp_path / "o.json", tmp_path / "o.csv"
    p = subprocess.Popen([sys.executable, "-m", "stableface", "track", str(clip), "-q", "-o", str(out_json),
                          "-o", str(out_csv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    # frames have been written once the partial file is not empty (its buffer holds a few frames)
    while not any(f.stat().st_size for f in tmp_path.glob("o.json.*.partial")) and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(getattr(signal, sig))
    n = assert_closed_after_signal(p, code, out_json, out_csv)
    assert n < 200
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_second_signal_while_outputs_close_is_noted_not_raised(tmp_path, sig, code):
    """Two signals 20 ms apart while a JSON, a CSV and a video are written: the second arrives while the
    outputs close (the video's encoder flushing beside the writer thread) and must not interrupt that.
    The run exits with the first signal's code; every output is whole under its final name, and the
    three hold the same frames. (Before, most such runs hung or crashed and left only .partial files.)"""
    import signal
    import time

    clip = shared_video()
    out_json, out_csv, out_mp4 = tmp_path / "o.json", tmp_path / "o.csv", tmp_path / "o.mp4"
    p = subprocess.Popen([sys.executable, "-m", "stableface", "track", str(clip), "-q", "-o", str(out_json),
                          "-o", str(out_csv), "-o", str(out_mp4)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(f.stat().st_size for f in tmp_path.glob("o.json.*.partial")) and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(getattr(signal, sig))
    time.sleep(0.02)
    p.send_signal(getattr(signal, sig))
    n = assert_closed_after_signal(p, code, out_json, out_csv)
    assert int(cv2.VideoCapture(str(out_mp4)).get(cv2.CAP_PROP_FRAME_COUNT)) == n
    assert not list(tmp_path.glob("*.partial*")) and not list(tmp_path.glob("*.lock"))


def test_jobs_and_from_file_stdin(tmp_path):
    names = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        cv2.imwrite(str(p), np.full((40, 40, 3), 60 * i, np.uint8))
        names.append(str(p))
    listing = "\ufeff" + "\n".join(["# footage", names[0], "", names[1], str(tmp_path / "gone.mp4")]) + "\n"  # (a BOM)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "stableface", "track", names[2], "--from-file", "-", "--jobs", "2",
                        "--out-dir", str(out), "--format", "jsonl", "-q", "--stabilizer", "none"],
                       input=listing, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["img0.jsonl", "img1.jsonl", "img2.jsonl"]
    assert "1 of 4 sources failed" in r.stderr and "gone.mp4: no such file or folder" in r.stderr
    line = json.loads((out / "img1.jsonl").read_text())
    assert line["frame"] == 0 and line["faces"] == [] and line["source"] == names[1]


def test_jobs_refuse_stdout_jsonl():
    r = run_cli("track", "a.png", "b.png", "--jobs", "2", "-o", "-")
    assert r.exit_code == 2 and "--jobs 1" in r.output


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_webcam_signals_leave_valid_recordings(tmp_path, sig, code):
    import signal
    import time

    from .mjpeg_server import MJPEGServer

    out = tmp_path / "live.json"
    with MJPEGServer(fps=30, max_frames=3000) as server:
        p = subprocess.Popen([sys.executable, "-m", "stableface", "webcam", "--camera", server.url, "--no-show", "-q",
                              "--stabilizer", "none", "-o", str(out), "-o", str(tmp_path / "live.csv")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        # both outputs are open and frames were written once the JSON's partial file is not empty
        while not any(f.stat().st_size for f in tmp_path.glob("live.json.*.partial")) and time.monotonic() < deadline:
            time.sleep(0.05)
        p.send_signal(getattr(signal, sig))
        assert_closed_after_signal(p, code, out, tmp_path / "live.csv", live=True)


def test_existing_outputs_are_refused_unless_overwrite(tmp_path):
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), np.full((48, 48, 3), 80, np.uint8))
    out = tmp_path / "face.json"
    out.write_text("precious")
    r = run_cli("track", str(img), "-o", str(out), "--stabilizer", "none")
    assert r.exit_code == 2 and "already exists: use --overwrite" in r.output
    assert out.read_text() == "precious"
    r = run_cli("track", str(img), "-o", str(out), "--stabilizer", "none", "--overwrite")
    assert r.exit_code == 0 and json.loads(out.read_text())["frames"][0]["faces"] == []
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "face.csv").write_text("x")
    r = run_cli("track", str(img), "--out-dir", str(tmp_path / "dir"), "--format", "csv")
    assert r.exit_code == 2 and "face.csv already exists" in r.output


def test_backbone_with_the_wrong_output_shape_is_refused(tmp_path):
    torch = pytest.importorskip("torch")

    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))  # (N, 3): no heatmaps

    bad = tmp_path / "flat.onnx"
    torch.onnx.export(Flat(), (torch.zeros(1, 3, 64, 64),), str(bad), input_names=["image"], dynamo=False)
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    r = run_cli("track", str(img), "--weights", str(bad), "--stabilizer", "none")
    assert r.exit_code == 2
    assert "flat.onnx: expected a 4-D image input and a 4-D heatmap output (N, K, H, W)" in r.output


def test_an_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path):
    import os

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"precious")
    os.symlink(clip, tmp_path / "link.mp4")
    for out in (clip, tmp_path / "link.mp4", tmp_path / "sub" / ".." / "clip.mp4"):
        r = run_cli("track", str(clip), "-o", str(out), "--overwrite")
        assert r.exit_code == 2
        assert r.output.strip().splitlines() == [f"stableface: error: {out} is also an input ({clip}): choose another output name"]
    # an --out-dir file that resolves to a source
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.csv").write_text("precious")
    r = run_cli("track", str(tmp_path / "out" / "a.csv"), str(clip), "--out-dir", str(tmp_path / "out"), "--format", "csv",
                "--overwrite")
    assert r.exit_code == 2 and "out/a.csv is also an input" in r.output
    assert clip.read_bytes() == b"precious" and (tmp_path / "out" / "a.csv").read_text() == "precious"


def test_a_folder_as_output_and_an_output_given_twice_are_usage_errors_before_any_work(tmp_path):
    missing = str(tmp_path / "nope.mp4")  # reached only if the plan let it through: then exit 1
    (tmp_path / "res.json").mkdir()
    r = run_cli("track", missing, "-o", str(tmp_path / "res.json"))
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        f"stableface: error: -o {tmp_path / 'res.json'}: is a folder; -o takes a file name (for a folder, --out-dir)"]
    for twice in ([str(tmp_path / "x.json")] * 2, [str(tmp_path / "x.json"), str(tmp_path / "d" / ".." / "x.json")], ["-", "-"]):
        r = run_cli("track", missing, *[a for o in twice for a in ("-o", o)])
        assert r.exit_code == 2 and "given twice" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_out_dir_names_never_collide():
    from stableface.batch import PlanError, out_dir_names

    assert out_dir_names(["/v/d1/a.mp4", "/v/a-1.mp4", "/v/d2/a.mp4"]) == ["d1_a", "a-1", "d2_a"]
    assert out_dir_names(["/v/x/001/vid.avi", "/v/x/002/vid.avi", "/v/y.mp4"]) == ["001_vid", "002_vid", "y"]
    assert out_dir_names(["/a/same/clip.mp4", "/b/same/clip.mp4"]) == ["a_same_clip", "b_same_clip"]
    assert out_dir_names(["/v/A.mp4", "/w/a.mp4"]) == ["v_A", "w_a"]  # case-insensitive file systems
    # URLs are named after their path's file stem, as files are; a URL with no path is "stream"
    assert out_dir_names(["http://127.0.0.1:8765/clip.mp4", "http://127.0.0.1:8765/clip2.mp4?x=1"]) == ["clip", "clip2"]
    assert out_dir_names(["rtsp://cam1/live", "rtsp://cam2/live", "/v/clip.mp4"]) == ["cam1_live", "cam2_live", "clip"]
    assert out_dir_names(["http://h:80/", "/v/stream.mp4"]) == ["h_80_stream", "v_stream"]
    for clash in (["/v/a.mp4", "/v/a.avi"], ["/v/a.mp4", "/v/a.mp4"]):
        with pytest.raises(PlanError, match="would write the same file"):
            out_dir_names(clash)


def test_out_dir_with_sources_of_one_name_writes_one_file_each(tmp_path):
    srcs = [tmp_path / "d1" / "a.png", tmp_path / "a-1.png", tmp_path / "d2" / "a.png"]
    for i, s in enumerate(srcs):
        s.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(s), np.full((40 + i, 40, 3), 90, np.uint8))
    out = tmp_path / "out"
    r = run_cli("track", *map(str, srcs), "--out-dir", str(out), "--stabilizer", "none", "-q")
    assert r.exit_code == 0, r.output
    got = {p.name: json.loads(p.read_text())["source"] for p in out.iterdir()}
    assert got == {"d1_a.json": str(srcs[0]), "a-1.json": str(srcs[1]), "d2_a.json": str(srcs[2])}
    cv2.imwrite(str(tmp_path / "a-1.jpg"), np.full((40, 40, 3), 90, np.uint8))
    r = run_cli("track", str(tmp_path / "a-1.png"), str(tmp_path / "a-1.jpg"), "--out-dir", str(tmp_path / "o2"))
    assert r.exit_code == 2 and r.output.strip().splitlines() == [
        f"stableface: error: --out-dir: {tmp_path / 'a-1.png'} and {tmp_path / 'a-1.jpg'} would write the same file: "
        "rename one, or run them separately"]
    assert not (tmp_path / "o2").exists()


def test_demo_refuses_to_overwrite_its_outputs_unless_told(tmp_path, monkeypatch):
    import stableface.demo

    (tmp_path / "demo.json").write_text("precious")
    ran = []
    monkeypatch.setattr(stableface.demo, "run_demo", lambda *a, **k: ran.append(1) or "done")
    r = run_cli("demo", "--out-dir", str(tmp_path), "-q")
    assert r.exit_code == 2 and not ran  # before any work
    assert r.output.strip().splitlines() == [f"stableface: error: {tmp_path / 'demo.json'} already exists: "
                                             "use --overwrite to replace it"]
    assert (tmp_path / "demo.json").read_text() == "precious"
    r = run_cli("demo", "--out-dir", str(tmp_path), "-q", "--overwrite")
    assert r.exit_code == 0 and ran == [1]


def test_a_stabilizer_asked_for_on_a_file_is_the_one_that_runs(tmp_path):
    """``track --stabilizer one-euro`` on a file runs One Euro (lookahead 0), not the files' default lookahead;
    with an explicit ``--lookahead`` too, the lookahead wins and one line says so; with neither, lookahead 8."""
    img = tmp_path / "face.png"
    cap = cv2.VideoCapture(str(shared_video()))
    ok, f = cap.read()
    assert ok and cv2.imwrite(str(img), f)

    def header(*args):
        out = tmp_path / f"o{len(list(tmp_path.glob('o*.json')))}.json"
        r = run_cli("track", str(img), "-o", str(out), *args)
        assert r.exit_code == 0, r.output
        doc = json.loads(out.read_text())
        return doc["stabilizer"], doc["lookahead"], r.output

    assert header("--stabilizer", "one-euro")[:2] == ("one-euro", 0)
    assert header("--stabilizer", "none")[:2] == ("none", 0)
    stab, la, said = header("--stabilizer", "one-euro", "--lookahead", "4")
    assert (stab, la) == ("none", 4) and "--stabilizer applies with --lookahead 0" in said
    assert header()[:2] == ("none", 8)


def test_ctrl_c_before_a_run_has_outputs_exits_130_with_one_line(tmp_path, monkeypatch):
    """Ctrl-C while the models load (before any output is open): exit 130 and one line, not click's
    "Aborted!" and exit 1."""
    import stableface.cli as cli

    def loading(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_build_pipeline", loading)
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    r = run_cli("track", str(img), "-o", str(tmp_path / "o.json"))
    assert r.exit_code == 130 and r.output.strip() == "stableface: interrupted", r.output


@pytest.mark.slow
def test_skip_existing_redoes_a_source_an_interrupt_cut_short(tmp_path):
    """An interrupted run (without --skip-existing) closes its outputs valid up to the last frame and marks
    them cut short (NAME.cut-short); a later --skip-existing run redoes that source, replaces its output
    and removes the mark, while a finished source's outputs count as done."""
    import signal
    import time

    from stableface.batch import CUT_SHORT, outputs_complete

    clip = shared_video()
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "stableface", "track", str(clip), "--out-dir", str(out), "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(f.stat().st_size for f in out.glob("*.partial")) and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    done = out / f"{clip.stem}.json"
    n = len(json.loads(done.read_text())["frames"])
    assert 0 < n < 200 and (out / (done.name + CUT_SHORT)).exists() and not outputs_complete([str(done)])
    r = subprocess.run([sys.executable, "-m", "stableface", "track", str(clip), "--out-dir", str(out), "-q",
                        "--skip-existing"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(done.read_text())["frames"]) == 200 and sorted(f.name for f in out.iterdir()) == [done.name]
    assert outputs_complete([str(done)])


@pytest.mark.parametrize("skip_existing", [False, True])
def test_ctrl_c_while_an_output_opens_leaves_no_partial_or_lock_file(tmp_path, monkeypatch, skip_existing):
    """Ctrl-C just after a sink has opened its partial file, before the run holds it (the sink's
    constructor has not returned): the interrupted run removes that partial file and its lock."""
    from stableface import sinks

    opened = sinks._AtomicText.__init__

    def interrupted(self, path):
        opened(self, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(sinks._AtomicText, "__init__", interrupted)
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli("track", str(img), "-o", str(out / "o.json"), *(["--skip-existing"] if skip_existing else []))
    assert r.exit_code == 130, r.output
    assert sorted(p.name for p in out.iterdir()) == [], r.output


def test_no_small_faces_turns_the_detector_tiles_off(tmp_path, monkeypatch):
    import stableface.batch as batch

    built = []
    real = batch.build_pipeline

    def spy(build_args, threads=0):
        pipe = real(build_args, threads)
        built.append(pipe)
        return pipe

    monkeypatch.setattr(batch, "build_pipeline", spy)
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((360, 640, 3), np.uint8))
    for flag, levels in (("--small-faces", 2), ("--no-small-faces", 0)):
        r = run_cli("track", str(img), "-o", str(tmp_path / f"{flag}.json"), flag, "--stabilizer", "none")
        assert r.exit_code == 0, r.output
        assert len(built[-1].detector.levels) == levels
    assert len(batch.build_pipeline((None, "none", None, "cpu", 1, 10, 0, False, True)).detector.levels) == 2
