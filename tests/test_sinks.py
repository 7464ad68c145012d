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
    return [FrameResult(0, 0.0, (face,)), FrameResult(1, 40.0, ())]


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
            {"frame": 0, "timestamp_ms": 0.0, "faces": [
                {"id": 0, "box": [1.0, 2.0, 3.5, 4.25], "score": 0.9, "landmarks": [[1.0, 2.0], [3.5, 4.25]],
                 "landmark_scores": [0.8, 0.7]}]},
            {"frame": 1, "timestamp_ms": 40.0, "faces": []}]}


def test_csv_exact(tmp_path):
    p = tmp_path / "out.csv"
    with CsvSink(p, 2) as s:
        for r in results():
            s.write(r)
    assert p.read_text() == (
        "frame,face_id,timestamp,confidence,success,x_0,x_1,y_0,y_1\n"
        "0,0,0.000,0.900,1,1.00,3.50,2.00,4.25\n"
        "1,,0.040,0,0,,,,\n")


def test_jsonl_exact(tmp_path):
    p = tmp_path / "out.jsonl"
    with JsonlSink(p, INFO) as s:
        for r in results():
            s.write(r)
    lines = p.read_text().splitlines()
    assert [json.loads(x)["frame"] for x in lines] == [0, 1]
    assert json.loads(lines[1]) == {"frame": 1, "timestamp_ms": 40.0, "faces": [], "source": "clip.mp4"}


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


def test_disk_full_removes_the_partial_output(tmp_path, monkeypatch):
    import errno

    from stableface.sinks import SinkError

    s = JsonSink(tmp_path / "out.json", INFO, "x", "none")
    s.write(results()[0])

    def full(_text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(s.fh, "write", full)
    with pytest.raises(SinkError, match=r"cannot write \(No space left on device\); partial output removed"):
        s.write(results()[1])
    assert list(tmp_path.iterdir()) == []


def test_unwritable_destination_is_a_clear_error(tmp_path):
    from stableface.sinks import SinkError

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")  # even root cannot create files inside a regular file
    with pytest.raises(SinkError, match=r"not_a_folder/a.csv: cannot write \(Not a directory\)"):
        CsvSink(blocker / "a.csv", 2)
