"""Real weights on a real face (a shared clip): detector, backbone, stabilizer, end to end."""

import cv2
import numpy as np
import pytest

from stableface import ibug
from stableface.detector import FULL_RANGE, SHORT_RANGE, BlazeFace, anchors, weighted_nms
from stableface.pipeline import Pipeline, PipelineConfig
from stableface.types import Frame
from stableface.weights import resolve

from .conftest import shared_video


def test_anchor_counts_match_mediapipe():
    assert anchors(SHORT_RANGE).shape == (896, 2)
    assert anchors(FULL_RANGE).shape == (2304, 2)
    a = anchors(SHORT_RANGE)
    assert np.allclose(a[0], [0.5 / 16, 0.5 / 16]) and np.allclose(a[512], [0.5 / 8, 0.5 / 8])


def test_weighted_nms_blends_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    kps = np.zeros((3, 6, 2))
    scores = np.array([0.9, 0.6, 0.8])
    out = weighted_nms(boxes, kps, scores, 0.3)
    assert len(out) == 2
    assert out[0][0][0] == pytest.approx(0.6 / 1.5) and out[0][2] == 0.9
    assert out[1][0].tolist() == [50, 50, 60, 60]


def first_frames(n):
    cap = cv2.VideoCapture(str(shared_video()))
    frames = []
    for _ in range(n):
        ok, f = cap.read()
        assert ok
        frames.append(f)
    return frames


@pytest.mark.slow
def test_detector_finds_the_face_and_not_in_blank():
    ws = resolve()
    det = BlazeFace(ws.detector, device="cpu")
    img = first_frames(1)[0]
    found = det.detect(img)
    assert len(found) == 1 and found[0].score > 0.7
    x0, y0, x1, y1 = found[0].box
    assert 60 < x1 - x0 < 400 and 0 <= x0 < x1 <= 512
    assert det.detect(np.full((256, 256, 3), 127, np.uint8)) == []


@pytest.mark.slow
@pytest.mark.parametrize("stabilizer", ["convlstm", "none", "one-euro"])
def test_landmarks_fall_in_the_face_in_anatomical_order(stabilizer):
    pipe = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer=stabilizer))
    det = BlazeFace(resolve().detector, device="cpu")
    frames = first_frames(8)
    results = [pipe.update(Frame(f, i, i * 40.0)) for i, f in enumerate(frames)]
    assert all(len(r.faces) == 1 and r.faces[0].id == 0 for r in results)
    x0, y0, x1, y1 = det.detect(frames[-1])[0].box
    p = results[-1].faces[0].landmarks
    assert p.shape == (68, 2)
    eyes, mouth = p[36:48], p[48:68]
    for group in (eyes, mouth, p[27:36]):
        assert np.all((group[:, 0] > x0) & (group[:, 0] < x1) & (group[:, 1] > y0) & (group[:, 1] < y1))
    right_eye, left_eye = p[36:42].mean(0), p[42:48].mean(0)  # the subject's right eye is on image left
    assert right_eye[0] < left_eye[0]
    assert max(right_eye[1], left_eye[1]) < p[30, 1] < p[48:68, 1].mean() < p[8, 1]  # eyes, nose tip, mouth, chin
    assert p[48, 0] < p[54, 0] and p[36, 0] < p[39, 0] < p[42, 0] < p[45, 0]
    iod = ibug.interocular(p)
    assert 0.25 * (x1 - x0) < iod < 0.9 * (x1 - x0)


@pytest.mark.slow
def test_reset_equals_fresh():
    frames = first_frames(4)
    pipe = Pipeline.from_weights(device="cpu")
    a = [pipe.update(Frame(f, i, i * 40.0)).faces[0].landmarks for i, f in enumerate(frames)]
    pipe.reset()
    b = [pipe.update(Frame(f, i, i * 40.0)).faces[0].landmarks for i, f in enumerate(frames)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="timestamps must increase"):
        pipe.update(Frame(frames[0], 0, 0.0))


@pytest.mark.slow
def test_crop_box_jitters_less_than_the_landmarks():
    from stableface.video import open_source

    pipe = Pipeline.from_weights(device="cpu")
    crops, centroids = [], []
    with open_source(str(shared_video("WDA_BobMenendez_000.mp4"))) as src:
        for i, (_, res) in enumerate(pipe.stream(src)):
            crops.append([pipe.tracker.tracks[0].crop.cx, pipe.tracker.tracks[0].crop.cy])
            centroids.append(res.faces[0].landmarks.mean(0))
            if i == 60:
                break
    step = lambda a: np.linalg.norm(np.diff(np.array(a), axis=0), axis=1)  # noqa: E731
    assert (step(crops) > 0).mean() < 0.25  # the crop holds still most of the time
    assert step(crops).mean() <= step(centroids).mean()


def test_stabilizer_that_does_not_match_the_backbone_is_refused(tmp_path):
    torch = pytest.importorskip("torch")  # noqa: F841
    from stableface.cli import main
    from stableface.training.convlstm import ConvLSTM, export
    from click.testing import CliRunner

    export(ConvLSTM(5, 2), tmp_path / "k5.onnx", 32)
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    r = CliRunner().invoke(main, ["track", str(img), "--stabilizer-weights", str(tmp_path / "k5.onnx")])
    assert r.exit_code == 2
    assert "k5.onnx: stabilizer expects 5 heatmaps of 32x32, but the backbone" in r.output
    assert "gives 68 of 32x32" in r.output


def test_missing_weights_file_names_it(tmp_path):
    from click.testing import CliRunner

    from stableface.cli import main

    r = CliRunner().invoke(main, ["track", "x.png", "--weights", str(tmp_path / "none.onnx")])
    assert r.exit_code == 2 and "none.onnx: weights file not found" in r.output


def test_the_accurate_weights_are_a_shipped_set_with_their_own_stabilizer():
    """``--weights accurate``: the larger backbone and its own stabilizer, from the shipped weights; on a
    real clip its landmarks agree with the default weights' within a few pixels (same face, other model)."""
    from stableface.weights import default_dir

    ws = resolve("accurate")
    assert ws.backbone == default_dir() / "accurate" / "backbone.onnx" and ws.backbone.exists()
    assert ws.stabilizer == default_dir() / "accurate" / "stabilizer.onnx" and ws.stabilizer.exists()
    acc, fast = Pipeline.from_weights("accurate", device="cpu"), Pipeline.from_weights(device="cpu")
    assert acc.backbone.size > fast.backbone.size and acc.step.heatmap_size == acc.backbone.heatmap_size
    frames = first_frames(6)
    a = [acc.update(Frame(f, i, i * 40.0)) for i, f in enumerate(frames)][-1].faces[0].landmarks
    b = [fast.update(Frame(f, i, i * 40.0)) for i, f in enumerate(frames)][-1].faces[0].landmarks
    assert np.linalg.norm(a - b, axis=-1).mean() < 0.05 * ibug.interocular(b)


def test_an_unknown_weights_name_is_one_clear_error():
    from stableface.onnx_util import WeightsError

    with pytest.raises(WeightsError, match="no such weights"):
        resolve("acurate")


@pytest.mark.slow
def test_fast_is_the_default_set_by_name(tmp_path):
    """``--weights fast`` (the command line's name for the default) is the default set, on the command line too."""
    from click.testing import CliRunner

    from stableface.cli import main

    assert resolve("fast") == resolve(None) == resolve("default")
    img = tmp_path / "face.png"
    cv2.imwrite(str(img), first_frames(1)[0])
    out = tmp_path / "out.json"
    r = CliRunner().invoke(main, ["track", str(img), "--weights", "fast", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert out.exists() and '"landmarks"' in out.read_text()


@pytest.mark.slow
def test_the_int8_weights_are_the_default_backbones_twin_with_its_stabilizer():
    """``--weights int8``: the shipped int8 twin of the default backbone (its metadata says so), run with the
    default stabilizer; on a real clip its landmarks agree with the float model's within 2% of the IOD."""
    onnx = pytest.importorskip("onnx")
    from stableface.weights import default_dir

    ws = resolve("int8")
    assert ws.backbone == default_dir() / "int8" / "backbone.onnx" and ws.stabilizer == resolve().stabilizer
    q, f = Pipeline.from_weights("int8", device="cpu"), Pipeline.from_weights(device="cpu")
    assert q.backbone.meta["quantized_from"] == "backbone.onnx"
    assert q.backbone.size == f.backbone.size and np.allclose(q.backbone.offset, f.backbone.offset)
    ops = {n.op_type for n in onnx.load(str(ws.backbone)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    frames = first_frames(6)
    a = [q.update(Frame(fr, i, i * 40.0)) for i, fr in enumerate(frames)][-1].faces[0].landmarks
    b = [f.update(Frame(fr, i, i * 40.0)) for i, fr in enumerate(frames)][-1].faces[0].landmarks
    assert np.linalg.norm(a - b, axis=-1).mean() < 0.02 * ibug.interocular(b)


def test_cpu_flags_decide_whether_int8_pays(tmp_path):
    from stableface import onnx_util

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert onnx_util.cpu_flags(str(info)) >= {"avx2", "avx512_vnni"} and onnx_util.int8_pays(onnx_util.cpu_flags(str(info)))
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert onnx_util.int8_pays(onnx_util.cpu_flags(str(info))) is False
    assert onnx_util.int8_pays({"avx_vnni"}) is True
    assert onnx_util.cpu_flags(str(tmp_path / "missing")) is None and onnx_util.int8_pays(set()) is False


def test_an_int8_backbone_warns_once_on_a_cpu_without_vnni(monkeypatch, caplog):
    from stableface import onnx_util
    from stableface.backbone import HeatmapBackbone

    path = resolve("int8").backbone
    monkeypatch.setattr(onnx_util, "_warned", set())
    monkeypatch.setattr(onnx_util, "int8_pays", lambda flags=None: True)
    with caplog.at_level("WARNING", logger="stableface"):
        HeatmapBackbone(path, device="cpu")
        HeatmapBackbone(resolve().backbone, device="cpu")
    assert "no VNNI" not in caplog.text
    monkeypatch.setattr(onnx_util, "int8_pays", lambda flags=None: False)
    with caplog.at_level("WARNING", logger="stableface"):
        HeatmapBackbone(resolve().backbone, device="cpu")  # a float model: no warning
        assert "no VNNI" not in caplog.text
        HeatmapBackbone(path, device="cpu")
        HeatmapBackbone(path, device="cpu")
    assert caplog.text.count("is an int8 model and this CPU has no VNNI") == 1


def test_the_model_card_lists_every_shipped_weights_file_with_its_sha256():
    """Every .onnx under weights/ is in the model card's first table, with the sha256 it has now."""
    import re
    from pathlib import Path

    from stableface.weights import sha256

    root = Path(__file__).resolve().parent.parent / "weights"
    card = (root / "README.md").read_text()
    listed = dict(re.findall(r"^\| `([\w/.-]+\.onnx)` \|.*\| `([0-9a-f]{64})` \|$", card, flags=re.M))
    shipped = {p.relative_to(root).as_posix() for p in root.rglob("*.onnx")}
    assert shipped and shipped == set(listed)
    for name in shipped:
        assert sha256(root / name) == listed[name], name
