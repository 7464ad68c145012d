"""ONNX export of trained parts, each checked against torch with onnxruntime before it is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from stableface import __version__, codec, ibug
from stableface.crop import CROP_SCALE
from stableface.training.models import IMAGENET_MEAN, IMAGENET_STD, HeatmapNet


def _add_metadata(path: Path, meta: dict) -> None:
    import onnx

    m = onnx.load(str(path))
    for key, value in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = key, json.dumps(value)
    onnx.save(m, str(path))


def export_backbone(checkpoint: str | Path, out: str | Path, tol: float = 1e-3) -> dict:
    """``best.pt``/``last.pt`` of ``train-backbone`` -> ONNX with metadata; returns the parity report."""
    import onnxruntime as ort

    ck = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
    cfg = ck.get("config", {})
    size = int(cfg.get("size", 128))
    net = HeatmapNet(k=ibug.K, width=int(cfg.get("width", 96)), context=bool(cfg.get("context", False)))
    net.load_state_dict(ck["model"])
    net.eval()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    x = torch.randn(2, 3, size, size)
    torch.onnx.export(net, (x,), str(tmp), input_names=["image"], output_names=["heatmaps"],
                      dynamic_axes={"image": {0: "n"}, "heatmaps": {0: "n"}}, opset_version=17, dynamo=False)
    meta = {"input_size": size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "color": "rgb",
            "stride": net.stride, "num_landmarks": ibug.K, "landmark_scheme": ibug.SCHEME, "crop_scale": CROP_SCALE,
            "heatmap": f"gaussian sigma {cfg.get('sigma', codec.DEFAULT_SIGMA)} cells, peak 1, relu output",
            "pdc_mode": cfg.get("pdc_mode", "hard"), "pdc_threshold": cfg.get("pdc_threshold", codec.DEFAULT_PDC_THRESHOLD),
            "stableface_version": __version__, "validation": ck.get("metrics", {})}
    _add_metadata(tmp, meta)
    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    img = rng.uniform(-2, 2, size=(4, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(img)).numpy()
    got = sess.run(None, {"image": img})[0]
    diff = float(np.abs(ref - got).max())
    if diff > tol:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ONNX backbone differs from torch by {diff:.2e} (> {tol:.0e}); nothing written")
    tmp.replace(out)
    return {"max_abs_diff": diff, "path": str(out), "metadata": meta}
