"""Tiny training runs (a few steps) of both trainable parts, their exports and their reload."""

import json
from pathlib import Path

import cv2

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from stableface.backbone import HeatmapBackbone  # noqa: E402
from stableface.stabilizer import ConvLSTMStep  # noqa: E402

from .conftest import DATA  # noqa: E402

needs_data = pytest.mark.skipif(not DATA.exists(), reason="shared training data not available")


@needs_data
@pytest.mark.slow
def test_backbone_trains_exports_and_loads(tmp_path):
    from stableface.training.train_backbone import BackboneConfig, train
    from stableface.training.export import export_backbone

    cfg = BackboneConfig(data=str(DATA), out=str(tmp_path / "run"), epochs=2, batch=4, size=64, limit=8,
                         pretrained=None, warmup_epochs=0.5)
    steps = []
    metrics = train(cfg, log=lambda s: None, on_step=lambda s, n, info: steps.append((s, n)))
    assert steps[-1] == (8, 8) and np.isfinite(metrics["nme_pdc"])
    assert (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "best.pt").exists()
    # resuming a finished run trains nothing more and reports the last validation
    more = []
    assert train(cfg, resume=True, log=lambda s: None, on_step=lambda *a: more.append(a)) == metrics
    assert more == []
    rep = export_backbone(tmp_path / "run" / "best.pt", tmp_path / "b.onnx")
    assert rep["max_abs_diff"] < 1e-3
    bb = HeatmapBackbone(tmp_path / "b.onnx", device="cpu")
    assert (bb.size, bb.k, bb.stride, bb.heatmap_size, bb.scheme) == (64, 68, 4.0, 16, "ibug68")
    hm = bb(np.zeros((2, 64, 64, 3), np.uint8))
    assert hm.shape == (2, 68, 16, 16) and hm.min() >= 0


@needs_data
@pytest.mark.slow
def test_finetune_runs_over_an_onnx_backbone_and_exports(tmp_path):
    from stableface.training.train_backbone import BackboneConfig, train
    from stableface.training.export import export_backbone
    from stableface.training.finetune import FinetuneConfig, export_checkpoint
    from stableface.training.finetune import train as finetune

    train(BackboneConfig(data=str(DATA), out=str(tmp_path / "bb"), epochs=1, batch=4, size=64, limit=4, pretrained=None),
          log=lambda s: None)
    export_backbone(tmp_path / "bb" / "best.pt", tmp_path / "b.onnx")
    cfg = FinetuneConfig(data=str(DATA), backbone=str(tmp_path / "b.onnx"), out=str(tmp_path / "ft"), limit=4,
                         epochs=1, batch=2, val_length=6, sequences_per_image=1, sequences="synthetic")
    logs = []
    m = finetune(cfg, log=logs.append)
    assert "still_stab_jitter" in m and any("before training" in x for x in logs)
    rep = export_checkpoint(tmp_path / "ft" / "last.pt", tmp_path / "s.onnx")
    assert rep["max_abs_diff"] < 1e-4
    step = ConvLSTMStep(tmp_path / "s.onnx", device="cpu")
    assert (step.k, step.heatmap_size) == (68, 16)
    assert json.loads(json.dumps(step.meta))["loss"] == "jitter"


@pytest.mark.slow
def test_finetune_over_a_foreign_backbone_with_another_layout(tmp_path):
    """Any heatmap backbone: a model exported without stableface metadata, 5 points (not 68),
    24x24 heatmaps at stride 2 from 48x48 crops; the stabilizer is trained for its K and size."""
    from torch import nn

    from stableface import ibug
    from stableface.training.finetune import FinetuneConfig, export_checkpoint
    from stableface.training.finetune import train as finetune

    rng = np.random.default_rng(0)
    data = tmp_path / "five"
    data.mkdir()
    for i in range(12):  # bright dots on a dark image, annotated as 5-point .pts
        img = np.full((96, 96, 3), 30, np.uint8)
        pts = rng.uniform(30, 66, size=(5, 2))
        for x, y in pts:
            cv2.circle(img, (int(x), int(y)), 3, (230, 230, 230), -1)
        cv2.imwrite(str(data / f"im{i:02d}.png"), img)
        ibug.write_pts(data / f"im{i:02d}.pts", pts)

    class Foreign(nn.Module):  # a stand-in for a user's HRNet export: 5 heatmaps of 24x24
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 5, padding=2)

        def forward(self, x):
            return torch.sigmoid(self.conv(nn.functional.avg_pool2d(x, 2)) / 50.0)

    torch.onnx.export(Foreign().eval(), (torch.zeros(1, 3, 48, 48),), str(tmp_path / "foreign.onnx"), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    bb = HeatmapBackbone(tmp_path / "foreign.onnx", device="cpu")
    assert (bb.k, bb.size, bb.heatmap_size, bb.stride, bb.scheme) == (5, 48, 24, 2.0, "custom5")
    cfg = FinetuneConfig(data=str(data), backbone=str(tmp_path / "foreign.onnx"), out=str(tmp_path / "ft"), epochs=1,
                         batch=2, val_length=6, val_images=2, sequences="synthetic")
    m = finetune(cfg, log=lambda s: None)
    assert np.isfinite(m["still_stab_nme"]) and np.isfinite(m["drift_stab_jitter_error"])
    export_checkpoint(tmp_path / "ft" / "last.pt", tmp_path / "s5.onnx")
    step = ConvLSTMStep(tmp_path / "s5.onnx", device="cpu")
    assert (step.k, step.heatmap_size) == (5, 24)
    step.check(bb.k, bb.heatmap_size)  # the pipeline accepts the pair
    with pytest.raises(Exception, match="expects 5 heatmaps of 24x24"):
        step.check(68, 32)


def test_int8_twin_places_the_same_landmarks(tmp_path, monkeypatch):
    """The int8 twin of the shipped backbone, calibrated on crops of the astronaut photo, decodes the
    same landmarks as the float model (within half a heatmap cell) and keeps its metadata; nothing is
    left in the working directory (onnxruntime's shape inference dumps its failures there)."""
    skimage = pytest.importorskip("skimage")
    from stableface import codec
    from stableface.crop import CropBox, warp
    from stableface.training.quantize import quantize_backbone
    from stableface.weights import resolve

    fl = HeatmapBackbone(resolve().backbone, device="cpu")
    photo = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    rng = np.random.default_rng(0)
    crops = np.stack([warp(photo, CropBox(225 + dx, 128 + dy, 120 * s), fl.size)
                      for dx, dy, s in zip(rng.normal(0, 6, 12), rng.normal(0, 6, 12), rng.uniform(0.9, 1.1, 12))])
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    rep = quantize_backbone(fl.path, tmp_path / "q.onnx", crops)
    assert list(work.iterdir()) == [] and Path.cwd() == work
    q = HeatmapBackbone(tmp_path / "q.onnx", device="cpu")
    assert (q.size, q.k, q.stride, q.scheme, q.crop_scale) == (fl.size, fl.k, fl.stride, fl.scheme, fl.crop_scale)
    assert q.meta["quantized_from"] == fl.path.name
    a = codec.decode_pdc(fl(crops), fl.stride)[0]
    b = codec.decode_pdc(q(crops), q.stride)[0]
    err = np.linalg.norm(a - b, axis=-1)
    assert np.median(err) < 0.5 * fl.stride and rep["max_abs_diff"] > 0  # quantized, and close
    assert not list(tmp_path.glob("*.tmp"))
    # activation ranges from a percentile of the calibration values (the default) are no wider than
    # min-max's, and narrower for some: the scales of the QDQ nodes say so, and the metadata records it
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from stableface.training.quantize import PERCENTILE

    quantize_backbone(fl.path, tmp_path / "mm.onnx", crops, percentile=100)

    def scales(path):
        m = onnx.load(str(path))
        init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        return {n.input[0]: float(init[n.input[1]]) for n in m.graph.node
                if n.op_type == "QuantizeLinear" and n.input[1] in init and init[n.input[1]].size == 1}

    pct, mm = scales(tmp_path / "q.onnx"), scales(tmp_path / "mm.onnx")
    shared = set(pct) & set(mm)
    assert len(shared) > 10 and all(pct[k] <= mm[k] * (1 + 1e-6) for k in shared)
    assert sum(pct[k] < 0.99 * mm[k] for k in shared) > 0
    assert q.meta["quantization"] == {"activation_range_percentile": PERCENTILE, "calibration_crops": len(crops)}


def test_the_flow_stand_in_strays_as_planted_and_not_at_all_without_error():
    import numpy as np

    from stableface.stabilizer import MotionConfig, apply_affine, fit_similarity
    from stableface.training import finetune as F

    rng = np.random.default_rng(0)
    base = rng.uniform(40, 90, (68, 2))
    truth = np.stack([base + [0.5 * j, 0.0] for j in range(6)])[None]  # a face moving 0.5 px right per frame
    m = fit_similarity(truth[0, 0], truth[0, 1])
    # a planted error: 0.01 IOD right, no scale or roll, about the centroid: the centroid lands 0.01 IOD further right
    iod = float(np.linalg.norm(truth[0, 1, 45] - truth[0, 1, 36]))
    e = F._perturbed(m, truth[0, 1].mean(0), iod, np.array([0.01, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(apply_affine(e, truth[0, 0]), truth[0, 1] + [0.01 * iod, 0.0], atol=1e-9)
    # 2% larger about the centroid, no shift: the centroid stays where the truth puts it
    e = F._perturbed(m, truth[0, 1].mean(0), iod, np.array([0.0, 0.0, 0.02, 0.0]))
    np.testing.assert_allclose(apply_affine(e, truth[0, 0]).mean(0), truth[0, 1].mean(0), atol=1e-9)
    raw = truth + rng.normal(0, 0.3, truth.shape)
    exact = F.motion_plan(raw, 128, 4.0, MotionConfig(), truth=truth)
    same = F.motion_plan(raw, 128, 4.0, MotionConfig(), truth=truth, flow_error=0.0, seed=3)
    noisy = F.motion_plan(raw, 128, 4.0, MotionConfig(), truth=truth, flow_error=1.0, seed=3)
    np.testing.assert_array_equal(exact[1], same[1])
    assert np.abs(noisy[1] - exact[1]).max() > 1e-4
    errs = F.flow_errors(np.random.default_rng(1), 400, 50, 1.0)
    np.testing.assert_allclose(errs.reshape(-1, 4).std(0), F.FLOW_ERROR_STD, rtol=0.1)
    r = np.corrcoef(errs[:, :-1, 0].ravel(), errs[:, 1:, 0].ravel())[0, 1]
    assert abs(r - F.FLOW_ERROR_CORRELATION) < 0.05
