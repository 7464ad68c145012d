"""int8 twin of a heatmap backbone, with onnxruntime's own static quantization.

Calibration runs the float model on face crops cut from annotated images (the landmark box, as
in training), so activation ranges are the ones the runtime sees. Each activation's range is its
99.999th percentile there (``PERCENTILE``), not its extreme: a range that rare values stretch makes
the uint8 steps coarser, and their rounding changes from frame to frame. On the real-motion benchmark
the raw track's jitter error rose 10% over the float model's with it, 15% with the extremes (min-max). Weights are int8 per channel,
activations uint8, in the QDQ format; the metadata of the float model is kept, so the twin is a
drop-in ``--weights`` file.

Whether int8 pays depends on the CPU: with AVX-512 VNNI (or AVX-VNNI) integer convolutions are
several times faster; on a CPU with AVX2 only they can be slower than float. Measure it with
``python benchmarks/int8.py`` before shipping one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stableface import ibug
from stableface.backbone import HeatmapBackbone
from stableface.crop import box_from_landmarks, warp
from stableface.video import read_image


def calibration_crops(files: list[Path], backbone: HeatmapBackbone, limit: int = 200) -> np.ndarray:
    """(N, S, S, 3) uint8 crops of up to ``limit`` annotated images, spread over the list."""
    if not files:
        raise ValueError("no annotated images to calibrate on")
    step = max(1, len(files) // limit)
    crops = []
    for f in files[::step][:limit]:
        img, gt = read_image(f), ibug.read_pts(f.with_suffix(".pts"))
        crops.append(warp(img, box_from_landmarks(gt, backbone.crop_scale), backbone.size))
    return np.stack(crops)


PERCENTILE = 99.999
"""Activation ranges: this percentile of each activation's calibration values (100: min-max). On the
real-motion benchmark, raw jitter error over the float model's: 99.9 +8% (NME +0.07), 99.99 +9%, 99.999 +10%
(NME +0.01), 100 +15%; validation NME 3.51% for 99.99-100 (float 3.50%)."""


def quantize_backbone(model: str | Path, out: str | Path, crops: np.ndarray, percentile: float = PERCENTILE) -> dict:
    """Write the int8 twin of ``model`` to ``out`` (atomically); returns its agreement with the float model
    on the calibration crops: the largest and mean absolute heatmap difference. ``percentile``: of each
    activation's calibration values, its range (100: min-max)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model, out = Path(model).resolve(), Path(out).resolve()
    float_bb = HeatmapBackbone(model, device="cpu")
    x = float_bb.prepare(crops)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):
            if self.i >= len(x):
                return None
            self.i += 1
            return {float_bb.input_name: x[self.i - 1:self.i]}

    tmp = out.with_name(out.name + ".tmp")
    pre = out.with_name(out.name + ".pre.tmp")
    try:
        with _scratch_cwd():
            quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)
            ranges = ({"calibrate_method": CalibrationMethod.MinMax} if percentile >= 100 else
                      {"calibrate_method": CalibrationMethod.Percentile, "extra_options": {"CalibPercentile": percentile}})
            with contextlib.redirect_stdout(io.StringIO()):  # (its percentile calibrator prints its range)
                quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, **ranges)
        m = onnx.load(str(tmp))  # the float model's metadata, plus where this twin came from
        have = {p.key for p in m.metadata_props}
        for p in onnx.load(str(model)).metadata_props:
            if p.key not in have:
                m.metadata_props.add(key=p.key, value=p.value)
        m.metadata_props.add(key="quantized_from", value=json.dumps(model.name))
        m.metadata_props.add(key="quantization", value=json.dumps({"activation_range_percentile": percentile,
                                                                    "calibration_crops": len(crops)}))
        onnx.save(m, str(tmp))
        int8_bb = HeatmapBackbone(tmp, device="cpu")
        a, b = float_bb(crops), int8_bb(crops)
        tmp.replace(out)
    finally:
        for p in (tmp, pre):
            p.unlink(missing_ok=True)
    diff = np.abs(a - b)
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "calibration_crops": len(crops)}


@contextmanager
def _scratch_cwd():
    """Run in a temporary working directory: onnxruntime's symbolic shape inference dumps
    ``sym_shape_infer_temp.onnx`` and its external data into the current directory when it cannot
    infer every shape (it cannot on this backbone), and would leave them in the user's folder."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="stableface-quantize-") as tmp:
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(here)
