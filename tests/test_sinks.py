"""Every writer against exact expected files, and valid output after an interruption."""

import json

import numpy as np
import pytest

from stableface import __version__
from stableface.sinks import CsvSink, JsonlSink, JsonSink, kind_of, open_sink
from stableface.types import Face, FrameResult
from stableface.video import SourceInfo

INFO = SourceInfo("clip.mp4", "clip", 64, 48, 25.0, 2, False)


def results(k=2):
    lm = np.array([[1.0, 2.0], [3.5, 4.25]])[:k]
    face = Face(0, (1.0, 2.0, 3.5, 4.25), 0.9, lm, np.array([0.8, 0.7])[:k])
    return [FrameResult(0, 0.0, (face,)), FrameResult(1, 40.0, (), shot=1)]  # a cut before frame 1


def test_json_exact(tmp_path):
    p = tmp_path / "out.json"
    with JsonSink(p, INFO, "test2", "none") as s:
        for r in results():
            s.write(r)
    assert not (tmp_path / "out.json.partial").exists()
    assert json.loads(p.read_text()) == {
        "stableface_version": __version__, "source": "clip.mp4", "width": 64, "height": 48, "fps": 25.0,
        "landmark_scheme": "test2", "stabilizer": "none", "lookahead": 0,
        "frames": [
            {"frame": 0, "timestamp_ms": 0.0, "shot": 0, "faces": [
                {"id": 0, "box": [1.0, 2.0, 3.5, 4.25], "score": 0.9, "landmarks": [[1.0, 2.0], [3.5, 4.25]],
                 "landmark_scores": [0.8, 0.7]}]},
            {"frame": 1, "timestamp_ms": 40.0, "shot": 1, "faces": []}],
        "unreadable_frames": [], "dropped_frames": 0}


def test_docs_formats_documents_every_json_field(tmp_path):
    """Every key a JSON file holds (header, footer, frame, face) has a row in docs/formats.md's JSON table."""
    import re
    from pathlib import Path

    p = tmp_path / "out.json"
    with JsonSink(p, INFO, "test2", "none") as s:
        for r in results():
            s.write(r)
    doc = json.loads(p.read_text())
    keys = set(doc) | {f"frames[].{k}" for k in doc["frames"][0]} | {f"faces[].{k}" for k in doc["frames"][0]["faces"][0]}
    page = (Path(__file__).resolve().parent.parent / "docs" / "formats.md").read_text()
    table = page[page.index("## JSON (`.json`)"):page.index("## JSONL")]
    documented = set()
    for cell in re.findall(r"^\| ([^|]+) \|", table, flags=re.M):
        documented |= set(re.findall(r"`([\w\[\].]+)`", cell))
    assert keys <= documented, keys - documented


def test_json_footer_lists_the_frames_the_source_could_not_give(tmp_path):
    p = tmp_path / "out.json"
    with JsonSink(p, INFO, "test2", "none") as s:
        for r in results():
            s.write(r)
        s.footer([2, 3, 7], 5)
    doc = json.loads(p.read_text())
    assert (doc["unreadable_frames"], doc["dropped_frames"]) == ([2, 3, 7], 5)


def test_csv_exact(tmp_path):
    p = tmp_path / "out.csv"
    with CsvSink(p, 2) as s:
        for r in results():
            s.write(r)
    assert p.read_text() == (
        "frame,face_id,timestamp,confidence,success,x_0,x_1,y_0,y_1,s_0,s_1,shot\n"
        "0,0,0.000,0.900,1,1.00,3.50,2.00,4.25,0.8000,0.7000,0\n"
        "1,,0.040,0,0,,,,,,,1\n")


def test_jsonl_exact(tmp_path):
    p = tmp_path / "out.jsonl"
    with JsonlSink(p, INFO) as s:
        for r in results():
            s.write(r)
    lines = p.read_text().splitlines()
    assert [json.loads(x)["frame"] for x in lines] == [0, 1]
    assert json.loads(lines[1]) == {"frame": 1, "timestamp_ms": 40.0, "shot": 1, "faces": [], "source": "clip.mp4"}


def test_interrupted_json_is_valid_up_to_last_frame(tmp_path):
    p = tmp_path / "out.json"
    with pytest.raises(KeyboardInterrupt):
        with JsonSink(p, INFO, "x", "none") as s:
            s.write(results()[0])
            raise KeyboardInterrupt
    doc = json.loads(p.read_text())
    assert [f["frame"] for f in doc["frames"]] == [0]


def test_abort_removes_partial(tmp_path):
    s = JsonSink(tmp_path / "a.json", INFO, "x", "none")
    s.write(results()[0])
    s.abort()
    assert list(tmp_path.iterdir()) == []


def test_kind_of_and_errors(tmp_path):
    assert [kind_of(x) for x in ["a.json", "a.JSONL", "a.csv", "a.mp4", "a.avi", "-"]] == \
        ["json", "jsonl", "csv", "video", "video", "jsonl"]
    with pytest.raises(ValueError, match="unknown output format"):
        kind_of("a.txt")
    with pytest.raises(Exception, match="cannot write"):
        open_sink(str(tmp_path / "missing" / "a.json"), INFO, "x", "none", 2)


def test_video_sink_writes_frames(tmp_path):
    import cv2

    p = tmp_path / "o.avi"
    with open_sink(str(p), INFO, "x", "none", 2) as s:
        for r in results():
            s.write(r, np.zeros((48, 64, 3), np.uint8))
    cap = cv2.VideoCapture(str(p))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 2


def test_unwritable_destination_is_a_clear_error(tmp_path):
    from stableface.sinks import SinkError

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")  # even root cannot create files inside a regular file
    with pytest.raises(SinkError, match=r"not_a_folder/a.csv: cannot write \(Not a directory\)"):
        CsvSink(blocker / "a.csv", 2)


ALL_FILES = ["out.json", "out.jsonl", "out.csv", "out.avi", "out.mp4"]
FRAME = np.zeros((48, 64, 3), np.uint8)


def write_all(sinks, n=1):
    for r in (results() * n)[:max(n, 1)]:
        for s in sinks:
            s.write(r, FRAME)


@pytest.mark.parametrize("name", ALL_FILES)
def test_every_format_is_written_under_a_partial_name_and_renamed_when_complete(tmp_path, name):
    import os

    final = tmp_path / name
    with open_sink(str(final), INFO, "x", "none", 2) as s:
        write_all([s], 2)
        assert not final.exists()
        partial = [p.name for p in tmp_path.iterdir() if p.name != name + ".lock"]
        want = f"{name}.{os.getpid()}.partial" + (final.suffix if final.suffix in (".avi", ".mp4") else "")
        assert partial == [want]
        assert (tmp_path / (name + ".lock")).read_text().strip() == str(os.getpid())
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no partial, no lock left


def test_an_error_inside_the_block_drops_every_output_and_an_interrupt_keeps_them(tmp_path):
    from contextlib import ExitStack

    with pytest.raises(RuntimeError):
        with ExitStack() as stack:
            sinks = [stack.enter_context(open_sink(str(tmp_path / n), INFO, "x", "none", 2)) for n in ALL_FILES]
            write_all(sinks, 2)
            raise RuntimeError("the pipeline broke")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        with ExitStack() as stack:
            sinks = [stack.enter_context(open_sink(str(tmp_path / n), INFO, "x", "none", 2)) for n in ALL_FILES]
            write_all(sinks, 2)
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ALL_FILES)
    assert len(json.loads((tmp_path / "out.json").read_text())["frames"]) == 2
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("name", ["out.json", "out.jsonl"])
def test_disk_full_removes_the_partial_output(tmp_path, monkeypatch, name):
    import errno

    from stableface.sinks import SinkError

    s = (JsonSink(tmp_path / name, INFO, "x", "none") if name.endswith(".json") else JsonlSink(tmp_path / name, INFO))
    s.write(results()[0])

    def full(_text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(s.fh, "write", full)
    with pytest.raises(SinkError, match=rf"{name}: cannot write \(No space left on device\); partial output removed"):
        s.write(results()[1])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["o.avi", "o.mp4"])
def test_a_video_short_on_disk_is_an_error_and_no_file(tmp_path, name):
    """OpenCV's writer does not report a full disk: close reads the file back and counts its frames."""
    from stableface.sinks import SinkError

    s = open_sink(str(tmp_path / name), INFO, "x", "none", 2)
    write_all([s], 5)

    class CutOnRelease:  # what a full disk leaves: the first bytes only
        def __init__(self, writer):
            self.writer = writer

        def __getattr__(self, name):
            return getattr(self.writer, name)

        def release(self):
            self.writer.release()
            with open(s.tmp, "r+b") as fh:
                fh.truncate(2000)

    s.writer = CutOnRelease(s.writer)
    with pytest.raises(SinkError, match=rf"{name}: cannot write \(the video holds \d of 5 frames: is the disk full\?\)"):
        s.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["o.avi", "o.mp4"])
def test_a_video_writer_that_does_not_open_is_an_error_and_no_file(tmp_path, monkeypatch, name):
    import stableface.sinks as S

    class Closed:
        def __init__(self, *a):
            pass

        def isOpened(self):
            return False

        def release(self):
            pass

    monkeypatch.setattr(S.cv2, "VideoWriter", Closed)
    monkeypatch.setattr(S, "_av", lambda: None)  # (with PyAV, .mp4 is not OpenCV's)
    with pytest.raises(S.SinkError, match=f"{name}: cannot open a video writer here"):
        open_sink(str(tmp_path / name), INFO, "x", "none", 2)
    assert list(tmp_path.iterdir()) == []


def test_one_output_one_writer_and_a_stale_lock_is_taken_over(tmp_path):
    import os

    from stableface.sinks import SinkError, holder_of

    first = JsonSink(tmp_path / "out.json", INFO, "x", "none")
    assert holder_of(tmp_path / "out.json") == str(os.getpid())
    with pytest.raises(SinkError, match=rf"out.json: being written by another stableface run \(pid {os.getpid()}\)"):
        CsvSink(tmp_path / "out.json", 2)  # any writer, any format: the lock is on the name
    first.close()
    assert holder_of(tmp_path / "out.json") is None
    (tmp_path / "out.json.lock").write_text("99999999\n")  # left by a run that was killed
    assert holder_of(tmp_path / "out.json") is None
    with JsonSink(tmp_path / "out.json", INFO, "x", "none") as s:
        s.write(results()[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_stdout_closed_by_its_reader_drops_finite_files_and_keeps_live_recordings(tmp_path, monkeypatch):
    import dataclasses
    import sys
    from contextlib import ExitStack

    from stableface.sinks import OutputClosed

    class Gone:
        def write(self, _text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    for live in (False, True):
        info = dataclasses.replace(INFO, live=live)
        monkeypatch.setattr(sys, "stdout", sys.__stdout__)
        with pytest.raises(OutputClosed) as caught:
            with ExitStack() as stack:
                side = stack.enter_context(open_sink(str(tmp_path / "side.json"), info, "x", "none", 2))
                out = stack.enter_context(open_sink("-", info, "x", "none", 2))
                out.frames = 3  # three lines went through before the reader left
                monkeypatch.setattr(sys, "stdout", Gone())
                side.write(results()[0])
                out.write(results()[0])
        assert caught.value.frames == 3 and caught.value.live is live
        assert [p.name for p in tmp_path.iterdir()] == (["side.json"] if live else [])


def test_stdout_that_is_closed_is_a_sink_error(monkeypatch):
    import sys

    from stableface.sinks import SinkError

    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(SinkError, match="standard output is closed"):
        open_sink("-", INFO, "x", "none", 2)


def test_an_mp4_overlay_is_h264_for_browsers_and_keeps_each_frames_time(tmp_path):
    av = pytest.importorskip("av")
    from stableface.types import FrameResult

    times = [0.0, 40.0, 80.0, 200.0, 320.0, 360.0]  # a variable frame rate
    p = tmp_path / "o.mp4"
    with open_sink(str(p), SourceInfo("clip.mp4", "clip", 63, 47, 25.0, 6, False), "x", "none", 2) as s:
        for i, t in enumerate(times):
            s.write(FrameResult(i, t), np.full((47, 63, 3), 20 * i, np.uint8))  # odd sides
    with av.open(str(p)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.name, v.codec_context.pix_fmt, v.width, v.height) == ("h264", "yuv420p", 64, 48)
        assert [round(f.time * 1000) for f in c.decode(v)] == times
    data = p.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: a browser plays it before it is all loaded


def test_without_pyav_an_mp4_overlay_is_mpeg4_part2_through_opencv(tmp_path, monkeypatch):
    import cv2

    import stableface.sinks as S

    monkeypatch.setattr(S, "_av", lambda: None)
    p = tmp_path / "o.mp4"
    with open_sink(str(p), INFO, "x", "none", 2) as s:
        write_all([s], 3)
    cap = cv2.VideoCapture(str(p))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    assert fourcc in ("mp4v", "FMP4") and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3  # (FFmpeg says FMP4)
