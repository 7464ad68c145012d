"""Tiny training runs (a few steps) of both trainable parts, their exports and their reload."""

import json

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
    from stableface.training.backbone import BackboneConfig, train
    from stableface.training.export import export_backbone

    cfg = BackboneConfig(data=str(DATA), out=str(tmp_path / "run"), epochs=2, batch=4, size=64, limit=8,
                         pretrained=None, warmup_epochs=0.5)
    steps = []
    metrics = train(cfg, log=lambda s: None, on_step=lambda s, n, info: steps.append((s, n)))
    assert steps[-1] == (4, 4) and np.isfinite(metrics["nme_pdc"])
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
    from stableface.training.backbone import BackboneConfig, train
    from stableface.training.export import export_backbone
    from stableface.training.finetune import FinetuneConfig, export_checkpoint
    from stableface.training.finetune import train as finetune

    train(BackboneConfig(data=str(DATA), out=str(tmp_path / "bb"), epochs=1, batch=4, size=64, limit=4, pretrained=None),
          log=lambda s: None)
    export_backbone(tmp_path / "bb" / "best.pt", tmp_path / "b.onnx")
    cfg = FinetuneConfig(data=str(DATA), backbone=str(tmp_path / "b.onnx"), out=str(tmp_path / "ft"), limit=4,
                         epochs=1, batch=2, val_length=6, sequences_per_image=1)
    logs = []
    m = finetune(cfg, log=logs.append)
    assert "still_stab_jitter" in m and any("before training" in x for x in logs)
    rep = export_checkpoint(tmp_path / "ft" / "last.pt", tmp_path / "s.onnx")
    assert rep["max_abs_diff"] < 1e-4
    step = ConvLSTMStep(tmp_path / "s.onnx", device="cpu")
    assert (step.k, step.heatmap_size) == (68, 16)
    assert json.loads(json.dumps(step.meta))["loss"] == "jitter"
