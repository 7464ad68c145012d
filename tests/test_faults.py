"""Planted faults through the real CLI: each gives its exit code and one clear stderr line."""

import json
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from .conftest import shared_video
from .media import FileServer, corrupt_middle, decodable_frames, write_clip


def track(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "stableface", "track", *map(str, args), "-q"],
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    return lines[0]


def test_truncated_video_keeps_what_it_could_read(tmp_path):
    clip = shared_video()
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    r = track(cut, "-o", tmp_path / "cut.json")
    if r.returncode == 0:  # FFmpeg could decode a prefix: the file holds those frames
        doc = json.loads((tmp_path / "cut.json").read_text())
        assert 0 < len(doc["frames"]) < 200
    else:
        assert r.returncode == 1 and "cut.mp4" in one_error_line(r.stderr)
        assert not (tmp_path / "cut.json").exists()


def test_zero_frame_video(tmp_path):
    empty = tmp_path / "empty.avi"
    w = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 64))
    w.release()
    r = track(empty, "-o", tmp_path / "e.json")
    assert r.returncode == 1
    assert one_error_line(r.stderr).startswith(f"stableface: error: {empty}: ")
    assert not (tmp_path / "e.json").exists() and not list(tmp_path.glob("*.partial"))


def test_camera_that_does_not_exist():
    r = subprocess.run([sys.executable, "-m", "stableface", "webcam", "--camera", "57", "--no-show", "-q"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert one_error_line(r.stderr) == "stableface: error: camera 57: cannot open (no such camera, or the stream refused the connection)"


@pytest.mark.slow
def test_tiny_huge_odd_and_unusual_images(tmp_path):
    cap = cv2.VideoCapture(str(shared_video()))
    ok, face = cap.read()
    assert ok
    cases = {
        "tiny.png": np.full((16, 16, 3), 90, np.uint8),
        "uhd.jpg": cv2.resize(face, (3840, 2160)),
        "odd.png": cv2.resize(face, (333, 517)),
        "grey.png": cv2.cvtColor(face, cv2.COLOR_BGR2GRAY),
        "deep.png": cv2.cvtColor(face, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257,
        "alpha.png": cv2.cvtColor(face, cv2.COLOR_BGR2BGRA),
    }
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, img in cases.items():
        cv2.imwrite(str(folder / name), img)
    out = tmp_path / "out"
    r = track(folder, "--out-dir", out)
    assert r.returncode == 0, r.stderr
    found = {p.stem: json.loads(p.read_text()) for p in out.iterdir()}
    assert set(found) == {n.split(".")[0] for n in cases}
    assert found["tiny"]["frames"][0]["faces"] == []
    for name in ("uhd", "odd", "grey", "deep", "alpha"):
        faces = found[name]["frames"][0]["faces"]
        assert len(faces) == 1, name
        w, h = found[name]["width"], found[name]["height"]
        pts = np.array(faces[0]["landmarks"])
        assert (pts[:, 0] > 0).all() and (pts[:, 0] < w).all() and (pts[:, 1] > 0).all() and (pts[:, 1] < h).all()


def stableface(*args, env=None, **kw):
    kw.setdefault("timeout", 120)
    return subprocess.run([sys.executable, "-m", "stableface", *map(str, args)], capture_output=True, text=True, env=env, **kw)


def noise_video(path, n=100, size=64, seed=0):
    """A faceless clip: fast to track, frames that do not compress away."""
    rng = np.random.default_rng(seed)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (size, size))
    for _ in range(n):
        w.write(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    w.release()
    return path


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("name", ["full.mp4", "full.avi", "full.jsonl", "full.json"])
def test_a_full_disk_is_one_line_exit_1_and_no_file(tmp_path, name):
    """RLIMIT_FSIZE makes every write past the limit fail (EFBIG), like a full disk does (ENOSPC)."""
    import resource

    src = noise_video(tmp_path / "in.avi", n=150)
    out = tmp_path / "out"
    out.mkdir()

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))  # Python ignores SIGXFSZ: writes fail instead

    r = subprocess.run([sys.executable, "-m", "stableface", "track", str(src), "-o", str(out / name), "-q",
                        "--stabilizer", "none"], capture_output=True, text=True, timeout=120, preexec_fn=small_disk)
    assert r.returncode == 1, r.stderr
    line = one_error_line(r.stderr)
    assert line.startswith(f"stableface: error: {out / name}: cannot write (") and line.endswith("partial output removed")
    assert files_in(out) == []


def test_a_closed_output_pipe_drops_the_incomplete_side_files(tmp_path):
    """`track -o - -o side.json | head -n 2`: the side file would hold a prefix; it is removed, exit 1."""
    src = noise_video(tmp_path / "in.avi", n=400, size=32)
    for side in ([], ["-o", tmp_path / "side.json", "-o", tmp_path / "side.mp4"]):
        p = subprocess.Popen([sys.executable, "-m", "stableface", "track", str(src), "-o", "-", *map(str, side), "-q",
                              "--stabilizer", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = [p.stdout.readline() for _ in range(2)]
        p.stdout.close()  # head exits
        err = p.stderr.read()
        p.wait(timeout=60)
        assert [json.loads(x)["frame"] for x in lines] == [0, 1]
        if not side:
            assert p.returncode == 0 and err == ""
            continue
        assert p.returncode == 1, err
        line = one_error_line(err)
        assert re.fullmatch(rf"stableface: error: {re.escape(str(side[1]))}, {re.escape(str(side[3]))} incomplete: "
                            r"output pipe closed after \d+ frames; partial output removed", line), line
        assert files_in(tmp_path) == ["in.avi"]


def test_two_runs_on_one_output_never_interleave(tmp_path):
    from .mjpeg_server import MJPEGServer

    out = tmp_path / "out.json"
    img = tmp_path / "blank.png"
    cv2.imwrite(str(img), np.full((48, 48, 3), 90, np.uint8))
    with MJPEGServer(fps=30, max_frames=100000) as server:
        first = subprocess.Popen([sys.executable, "-m", "stableface", "track", server.url, "-o", str(out), "-q",
                                  "--stabilizer", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not list(tmp_path.glob("out.json.*.partial")) and time.monotonic() < deadline:
                time.sleep(0.05)
            second = stableface("track", img, "-o", out, "--overwrite", "-q", "--stabilizer", "none")
            assert second.returncode == 1
            assert one_error_line(second.stderr) == \
                f"stableface: error: {out}: being written by another stableface run (pid {first.pid})"
        finally:
            first.send_signal(signal.SIGINT)
            _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    doc = json.loads(out.read_text())
    assert doc["source"] == server.url and len(doc["frames"]) > 0
    assert files_in(tmp_path) == ["blank.png", "out.json", "out.json.cut-short"]  # (the interrupt's mark)


def test_closed_stdout_and_stdin_and_binary_source_lists_are_one_line(tmp_path):
    img = tmp_path / "blank.png"
    cv2.imwrite(str(img), np.full((48, 48, 3), 90, np.uint8))
    cmd = f"{sys.executable} -m stableface track {img} -q"
    r = subprocess.run(["bash", "-c", cmd + " -o - >&-"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert one_error_line(r.stderr) == "stableface: error: -o -: standard output is closed (nothing would receive the JSONL)"
    r = subprocess.run(["bash", "-c", cmd + " --from-file - <&-"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and one_error_line(r.stderr) == "stableface: error: --from-file -: standard input is closed"
    binary = tmp_path / "list.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    r = stableface("track", "--from-file", binary, "-q")
    assert r.returncode == 2
    assert one_error_line(r.stderr).startswith(f"stableface: error: --from-file {binary}: not a text list of sources")


def test_a_url_that_serves_no_video_and_a_symlink_loop_say_what_they_are(tmp_path):
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Noise(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(np.random.default_rng(0).bytes(100_000))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Noise)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cam.mjpg"
    try:
        r = stableface("track", url, "-o", tmp_path / "u.json", "-q")
    finally:
        server.shutdown()
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert line == f"stableface: error: {url}: not a readable video (the server answered, but not with a video stream)"
    os.symlink("loop.mp4", tmp_path / "loop.mp4")
    r = stableface("track", tmp_path / "loop.mp4", "-o", tmp_path / "l.json", "-q")
    assert r.returncode == 1 and one_error_line(r.stderr) == f"stableface: error: {tmp_path / 'loop.mp4'}: symbolic link loop"
    os.symlink("gone.mp4", tmp_path / "dangling.mp4")
    r = stableface("track", tmp_path / "dangling.mp4", "-o", tmp_path / "d.json", "-q")
    assert one_error_line(r.stderr).endswith("dangling.mp4: broken symbolic link (its target does not exist)")
    assert files_in(tmp_path) == ["dangling.mp4", "loop.mp4"]


def test_a_source_without_any_face_is_a_warning_and_counted(tmp_path):
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), np.full((48, 48, 3), 90, np.uint8))
    r = stableface("track", tmp_path / "a.png", tmp_path / "b.png", "--out-dir", tmp_path / "out", "--stabilizer", "none")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"stableface: no face found in {tmp_path / 'a.png'}",
                                     f"stableface: no face found in {tmp_path / 'b.png'}",
                                     "stableface: 2 of 2 sources had no face in any frame"]


def test_webcam_stops_quietly_when_its_pipe_closes_and_keeps_live_recordings(tmp_path):
    from .mjpeg_server import MJPEGServer

    with MJPEGServer(fps=30, max_frames=100000) as server:
        for side in ([], ["-o", str(tmp_path / "live.json")]):
            p = subprocess.Popen([sys.executable, "-m", "stableface", "webcam", "--camera", server.url, "--no-show", "-q",
                                  "--stabilizer", "none", "-o", "-", *side],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            lines = [p.stdout.readline() for _ in range(2)]
            p.stdout.close()
            err = p.stderr.read()
            p.wait(timeout=60)
            assert p.returncode == 0 and err == ""
            first, second = (json.loads(x)["frame"] for x in lines)
            assert first == 0 < second  # the stream's numbers (a stale frame dropped leaves its number out)
    doc = json.loads((tmp_path / "live.json").read_text())  # a live source has no end: closed as after Ctrl-C
    assert len(doc["frames"]) >= 2
    assert files_in(tmp_path) == ["live.json"]


def test_webcam_show_without_a_display_runs_headless(tmp_path):
    import os

    from .mjpeg_server import MJPEGServer

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    with MJPEGServer(fps=30, max_frames=20) as server:
        r = stableface("webcam", "--camera", server.url, "--show", "-q", "--stabilizer", "none",
                       "-o", tmp_path / "rec.json", "-o", tmp_path / "rec.avi", env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == "stableface: no display: running without --show"
    assert lines[1].startswith(f"stableface: {server.url}: the stream ended after ") and len(lines) == 2
    frames = json.loads((tmp_path / "rec.json").read_text())["frames"]
    assert 1 <= len(frames) <= 20
    assert int(cv2.VideoCapture(str(tmp_path / "rec.avi")).get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)
    # --show by default (not asked for): headless without a word about it
    with MJPEGServer(fps=30, max_frames=5) as server:
        r = stableface("webcam", "--camera", server.url, "-q", "--stabilizer", "none", "-o", tmp_path / "rec2.json", env=env)
    assert r.returncode == 0, r.stderr
    assert "running without --show" not in r.stderr and len(r.stderr.splitlines()) == 1


def test_webcam_failures_leave_no_files(tmp_path):
    from .mjpeg_server import MJPEGServer

    r = stableface("webcam", "--camera", "57", "--no-show", "-q", "-o", tmp_path / "a.mp4", "-o", tmp_path / "a.jsonl")
    assert r.returncode == 1 and "camera 57" in one_error_line(r.stderr)
    assert files_in(tmp_path) == []
    with MJPEGServer(fps=30, max_frames=100000) as server:  # the second output cannot be written
        r = stableface("webcam", "--camera", server.url, "--no-show", "-q", "--stabilizer", "none",
                       "-o", tmp_path / "ok.mp4", "-o", tmp_path / "ok.jsonl", "-o", tmp_path / "missing" / "x.json")
    assert r.returncode == 1
    assert one_error_line(r.stderr).startswith(f"stableface: error: {tmp_path / 'missing' / 'x.json'}: cannot write")
    assert files_in(tmp_path) == []


def test_a_corrupt_stretch_is_skipped_listed_in_the_output_and_exit_1(tmp_path):
    """200 KB of noise in the middle of a clip: OpenCV stopped there (half the frames, exit 0, no word);
    now every decodable frame is tracked under its own number, the rest are listed, and the exit is 1."""
    clip = write_clip(tmp_path / "clip.mp4", n=120)
    bad = corrupt_middle(clip, tmp_path / "bad.mp4", clip.stat().st_size // 4)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((48, 48, 3), 90, np.uint8))
    out = tmp_path / "out"
    r = track(bad, good, "--out-dir", out, "--stabilizer", "none")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    doc = json.loads((out / "bad.json").read_text())
    got = [f["frame"] for f in doc["frames"]]
    lost = doc["unreadable_frames"]
    assert len(got) == decodable_frames(bad) and 0 < len(lost) < 100
    assert sorted(got + lost) == list(range(120)) and got[-1] == 119
    assert [f["timestamp_ms"] for f in doc["frames"]] == [40.0 * i for i in got]
    runs = re.escape(f"{lost[0]}-{lost[-1]}") if lost == list(range(lost[0], lost[-1] + 1)) else r"[\d, -]+"
    line = (rf"stableface: error: {re.escape(str(bad))}: incomplete: {len(lost)} of 120 frames could not be decoded "
            rf"\(frames {runs}\); the outputs hold the other {len(got)} frames")
    lines = [ln for ln in r.stderr.splitlines() if "no face" not in ln]
    assert re.fullmatch(line, lines[0]), lines
    assert lines[1:] == ["stableface: 1 of 2 sources incomplete (their outputs hold the frames that could be decoded):",
                         "  - " + lines[0].removeprefix("stableface: error: ")]
    assert json.loads((out / "good.json").read_text())["unreadable_frames"] == []


def test_variable_frame_rate_timestamps_reach_the_outputs(tmp_path):
    times = [40 * i for i in range(13)] + [480 + 120 * i for i in range(1, 8)]
    clip = write_clip(tmp_path / "vfr.mp4", n=len(times), times_ms=times, noise=False)
    r = track(clip, "-o", tmp_path / "v.json", "-o", tmp_path / "v.csv", "--stabilizer", "one-euro", "--lookahead", "0")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "v.json").read_text())
    assert [f["timestamp_ms"] for f in doc["frames"]] == [float(t) for t in times]
    assert doc["frames"][12]["timestamp_ms"] == 480.0
    rows = (tmp_path / "v.csv").read_text().splitlines()[1:]
    assert [float(r.split(",")[2]) for r in rows] == [t / 1000 for t in times]


def test_a_url_to_a_file_is_tracked_like_the_file(tmp_path):
    """http://host/clip.mp4 has a length: every frame, its own numbers (it was 25 of 800, renumbered)."""
    write_clip(tmp_path / "clip.mp4", n=150, noise=False)
    with FileServer(tmp_path) as server:
        url = server.url("clip.mp4")
        r = track(url, "-o", tmp_path / "u.jsonl", "--stabilizer", "none")
    assert r.returncode == 0 and r.stderr == ""
    lines = [json.loads(x) for x in (tmp_path / "u.jsonl").read_text().splitlines()]
    assert [(x["frame"], x["timestamp_ms"], x["source"]) for x in lines] == [(i, 40.0 * i, url) for i in range(150)]


def test_a_live_stream_keeps_its_frame_numbers_counts_drops_and_says_it_ended(tmp_path):
    from .mjpeg_server import MJPEGServer

    # faster than the pipeline can follow (with no face in view it only detects: a few ms a frame)
    with MJPEGServer(fps=1000, max_frames=300) as server:
        r = stableface("webcam", "--camera", server.url, "--no-show", "-q", "--max-faces", "4", "-o", tmp_path / "l.json")
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "l.json").read_text())
    numbers = [f["frame"] for f in doc["frames"]]
    assert all(b > a for a, b in zip(numbers, numbers[1:]))
    missing = numbers[-1] + 1 - len(numbers)
    assert 0 < missing <= doc["dropped_frames"] and doc["unreadable_frames"] == []
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"stableface: {re.escape(server.url)}: the stream ended after {len(numbers)} frames; "
        rf"{doc['dropped_frames']} stale frames? dropped \(processing was slower than the source\)", lines[0]), lines


def _batch(tmp_path, n_sources, frames):
    srcs = [noise_video(tmp_path / f"{c}.avi", n=frames, size=64, seed=i) for i, c in enumerate("abcdefgh"[:n_sources])]
    return srcs, tmp_path / "out"


def test_a_worker_killed_mid_batch_fails_its_own_source_only(tmp_path):
    """SIGKILL the worker tracking b.avi, and the one that tries it again: no BrokenProcessPool traceback;
    b.avi fails (after one more try), a.avi and c.avi are complete, no file is left half-written."""
    import os

    srcs, out = _batch(tmp_path, 3, 60)
    p = subprocess.Popen([sys.executable, "-m", "stableface", "track", *map(str, srcs), "--jobs", "2", "--out-dir", str(out),
                          "-q", "--stabilizer", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: set[int] = set()
    deadline = time.monotonic() + 120
    while p.poll() is None and time.monotonic() < deadline:
        for partial in out.glob("b.json.*.partial") if out.exists() else []:
            pid = int(partial.name.split(".")[2])
            if pid not in killed:
                killed.add(pid)
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    _, err = p.communicate(timeout=60)
    assert len(killed) == 2
    assert p.returncode == 1 and "Traceback" not in err, err
    assert f"stableface: {srcs[1]}: its worker process died (killed by SIGKILL); trying it once more" in err.splitlines()
    assert err.splitlines()[-2:] == ["stableface: 1 of 3 sources failed:",
                                     f"  - {srcs[1]}: its worker process died (killed by SIGKILL), twice"]
    assert files_in(out) == ["a.json", "c.json"]
    for name in ("a.json", "c.json"):
        assert [f["frame"] for f in json.loads((out / name).read_text())["frames"]] == list(range(60))


def test_sigint_with_sources_queued_stops_the_batch_within_a_second(tmp_path):
    srcs, out = _batch(tmp_path, 6, 400)
    p = subprocess.Popen([sys.executable, "-m", "stableface", "track", *map(str, srcs), "--jobs", "2", "--out-dir", str(out),
                          "-q", "--stabilizer", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.partial")) if out.exists() else []) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    took = time.monotonic() - t0
    assert p.returncode == 130 and "Traceback" not in err, err
    assert took < 1.5, took
    assert err.splitlines() == ["stableface: interrupted; outputs closed up to the last processed frame"]
    left = [f for f in files_in(out) if not f.endswith(".cut-short")]
    assert 1 <= len(left) <= 2 and not [f for f in left if "partial" in f]  # the two running; the queued never began
    assert sorted(f for f in files_in(out) if f.endswith(".cut-short")) == [f + ".cut-short" for f in left]
    for name in left:
        frames = [f["frame"] for f in json.loads((out / name).read_text())["frames"]]
        assert frames == list(range(len(frames))) and 0 < len(frames) < 400


def _png_header_only(path, w, h, body=1_500_000):
    """A PNG whose header declares w x h (its data is noise: nothing may decode it)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", np.random.default_rng(0).bytes(body)) + chunk(b"IEND", b""))
    return path


def test_an_image_too_large_is_refused_from_its_header_and_the_batch_goes_on(tmp_path):
    huge = _png_header_only(tmp_path / "huge.png", 40000, 40000)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((48, 48, 3), 90, np.uint8))
    out = tmp_path / "out"
    r = track(huge, good, "--out-dir", out, "--stabilizer", "none")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    why = f"{huge}: image too large (40000x40000 pixels; stableface reads at most 100 megapixels)"
    assert f"stableface: error: {why}" in r.stderr.splitlines()
    assert r.stderr.splitlines()[-2:] == ["stableface: 1 of 2 sources failed:", f"  - {why}"]
    assert files_in(out) == ["good.json"]
    # in a --sequence folder it is one unreadable frame; the others are tracked under their numbers
    seq = tmp_path / "seq"
    seq.mkdir()
    for name in ("f0.png", "f2.png"):
        cv2.imwrite(str(seq / name), np.full((48, 48, 3), 90, np.uint8))
    _png_header_only(seq / "f1.png", 40000, 40000, body=1000)
    r = track(seq, "--sequence", "-o", tmp_path / "seq.json", "--stabilizer", "none")
    assert r.returncode == 1
    doc = json.loads((tmp_path / "seq.json").read_text())
    assert [f["frame"] for f in doc["frames"]] == [0, 2] and doc["unreadable_frames"] == [1]
    assert f"stableface: error: {seq}: incomplete: 1 of 3 frames could not be decoded (frame 1); " \
           "the outputs hold the other 2 frames" in r.stderr.splitlines()


def test_file_names_that_are_not_utf8_are_read_and_written(tmp_path):
    """OpenCV crashed (SIGSEGV) on such a name, ending the whole batch."""
    import os

    odd = os.fsencode(tmp_path) + b"/v\xff.mp4"
    os.rename(write_clip(tmp_path / "v.mp4", n=20, noise=False), odd)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((48, 48, 3), 90, np.uint8))
    video_out = os.fsencode(tmp_path) + b"/o\xff.mp4"
    base = [sys.executable, "-m", "stableface", "track", "-q", "--stabilizer", "none"]
    r = subprocess.run(base + [odd, str(good), "--out-dir", str(tmp_path / "out")], capture_output=True, timeout=120)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    assert len(json.loads((tmp_path / "out" / os.fsdecode(b"v\xff.json")).read_text())["frames"]) == 20
    r = subprocess.run(base + [odd, "-o", video_out], capture_output=True, timeout=120)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    os.rename(video_out, tmp_path / "o.mp4")
    assert int(cv2.VideoCapture(str(tmp_path / "o.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 20


def _bright_clip(path, n=20, bright=(10, 11, 12)):
    """The first ``n`` frames of a shared clip (one face), the ``bright`` ones washed out."""
    cap = cv2.VideoCapture(str(shared_video()))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (512, 512))
    for i in range(n):
        ok, f = cap.read()
        assert ok
        w.write(255 - (255 - f) // 8 if i in bright else f)
    w.release()
    return path


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_backbone_that_gives_nan_drops_those_faces_with_one_warning(tmp_path, jobs):
    """NaN heatmaps on washed-out crops: those frames lose their face (one warning line), the others
    keep theirs, and the batch goes on (it was a ValueError traceback that ended the batch)."""
    from .media import backbone_variant

    nan = backbone_variant(tmp_path / "nan.onnx", nan_above=1.5)
    clip = _bright_clip(tmp_path / "clip.avi")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((48, 48, 3), 90, np.uint8))
    out = tmp_path / "out"
    r = track(clip, blank, "--out-dir", out, "--weights", nan, "--stabilizer", "none", "--lookahead", "0", "--jobs", jobs)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    faces = [len(f["faces"]) for f in json.loads((out / "clip.json").read_text())["frames"]]
    assert faces[:10] == [1] * 10 and faces[10:13] == [0, 0, 0] and faces[-1] == 1
    warned = [ln for ln in r.stderr.splitlines() if "NaN" in ln]
    assert warned == [f"stableface: {clip}: frame 10: the backbone's heatmaps hold NaN or Inf: such a face is dropped "
                      "from its frame (said once per source)"]
    assert json.loads((out / "blank.json").read_text())["frames"][0]["faces"] == []


@pytest.mark.slow
def test_a_backbone_with_a_fixed_batch_of_one_runs_two_faces_one_by_one(tmp_path):
    from .media import backbone_variant

    one = backbone_variant(tmp_path / "one.onnx", batch1=True)
    cap = cv2.VideoCapture(str(shared_video()))
    ok, face = cap.read()
    two = tmp_path / "two.png"
    cv2.imwrite(str(two), np.concatenate([face, cv2.flip(face, 1)], axis=1))
    r = stableface("track", two, "-o", tmp_path / "two.json", "--weights", one, "--max-faces", "2", "--stabilizer", "none", "-v")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"stableface: {one} takes a fixed batch of 1 crop: faces are run one by one" in r.stderr.splitlines()
    assert len(json.loads((tmp_path / "two.json").read_text())["frames"][0]["faces"]) == 2


def test_a_named_pipe_is_refused_at_once_and_the_batch_goes_on(tmp_path):
    """`mkfifo ff.mp4; stableface track ff.mp4` waited for a writer for ever, deaf to SIGINT and SIGTERM."""
    import os

    fifo = tmp_path / "ff.mp4"
    os.mkfifo(fifo)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((48, 48, 3), 90, np.uint8))
    r = track(fifo, good, "--out-dir", tmp_path / "out", "--stabilizer", "none", timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    why = f"{fifo}: a named pipe (FIFO): stableface reads files, folders, cameras and URLs"
    assert f"stableface: error: {why}" in r.stderr.splitlines()
    assert files_in(tmp_path / "out") == ["good.json"]


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_while_connecting_to_a_silent_server_is_honoured_within_a_second(tmp_path, sig, code):
    """A server that accepts the connection and never answers: it took ~26 s to react to Ctrl-C."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = threading.Event()
    conns = []

    def accept():
        while True:
            try:
                conns.append(server.accept()[0])
            except OSError:
                return
            accepted.set()

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/live.mjpg"
    try:
        p = subprocess.Popen([sys.executable, "-m", "stableface", "track", url, "-o", str(tmp_path / "s.json"), "-q",
                              "--stabilizer", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert accepted.wait(60)
        time.sleep(0.5)  # it is waiting for an answer now
        t0 = time.monotonic()
        p.send_signal(getattr(signal, sig))
        _, err = p.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        server.close()
        for c in conns:
            c.close()
    assert p.returncode == code and "Traceback" not in err, err
    assert took < 1.0, took
    assert files_in(tmp_path) == []


def test_webcam_no_show_prints_one_live_status_line_on_a_terminal(tmp_path):
    import os
    import pty

    from .mjpeg_server import MJPEGServer

    master, slave = pty.openpty()
    with MJPEGServer(fps=30, max_frames=60) as server:
        p = subprocess.Popen([sys.executable, "-m", "stableface", "webcam", "--camera", server.url, "--no-show",
                              "--stabilizer", "none", "-o", str(tmp_path / "live.json")],
                             stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        data = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            data += chunk
        p.wait(timeout=60)
        os.close(master)
    assert p.returncode == 0
    text = data.decode()
    frames = len(json.loads((tmp_path / "live.json").read_text())["frames"])
    updates = re.findall(r"\r\x1b\[K([^\r\n]*)", text)
    assert len(updates) >= 3  # rewritten in place, a few times a second
    pattern = rf"{re.escape(server.url)}: \d+\.\d fps, \d+ faces?, (\d+) frames written(, \d+ dropped)?"
    assert all(re.fullmatch(pattern, u) for u in updates), updates
    assert re.fullmatch(pattern, updates[-1]).group(1) == str(frames)  # the last one is the final count
    assert re.search(r"frames written[^\r\n]*\r?\nstableface: .*: the stream ended after", text)  # then a new line
    assert "Traceback" not in text


def test_an_overlay_video_keeps_the_sources_audio(tmp_path):
    av = pytest.importorskip("av")
    clip = write_clip(tmp_path / "talk.mp4", n=50, noise=False, audio=True)
    r = track(clip, "-o", tmp_path / "o.mp4", "--stabilizer", "none")
    # the clip shows numbers on grey, no face: the one line that says so, nothing else
    assert r.returncode == 0 and r.stderr in ("", f"stableface: no face found in {clip}\n"), r.stderr
    with av.open(str(tmp_path / "o.mp4")) as out, av.open(str(clip)) as src:
        assert [s.type for s in out.streams] == ["video", "audio"]
        assert out.streams.video[0].codec_context.name == "h264" and out.streams.video[0].frames == 50
        a, b = out.streams.audio[0], src.streams.audio[0]
        assert (a.codec_context.name, a.sample_rate) == (b.codec_context.name, b.sample_rate)
        assert abs(float(a.duration * a.time_base) - 2.0) < 0.1  # as long as the 50 frames
