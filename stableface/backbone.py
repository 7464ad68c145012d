"""The heatmap backbone: any ONNX model mapping face crops to K heatmaps, run by onnxruntime.

Metadata read from the model (``metadata_props``, all optional for a user's own export):
``input_size`` (crop side, px), ``mean``/``std`` (per channel, 0-255 scale), ``color``
(``rgb`` or ``bgr``), ``stride`` (crop px per heatmap cell), ``num_landmarks``,
``landmark_scheme``, ``crop_scale`` (crop side / landmark box side), ``landmark_offset`` (K x 2, crop
pixels: the backbone's mean miss on its training split, added to every decoded point; written by
``stableface calibrate backbone``), ``landmark_offset_flip`` (the same, measured with ``flip_test``).

``flip_test=True`` (``--flip-test``) runs every crop beside its mirror image in one batch and
averages the maps, the mirror's turned back (flipped along x, channels permuted by the scheme's
mirror index): a steadier, more accurate map at twice the backbone's time. Only for schemes
whose mirror index is known (iBUG 68).
Without them the input size comes from the input shape, the stride from the output shape,
and the input is taken as 0-255 RGB.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from stableface import onnx_util
from stableface.crop import CROP_SCALE
from stableface.onnx_util import WeightsError


class HeatmapBackbone:
    def __init__(self, path: str | Path, device: str = "auto", threads: int = 0, flip_test: bool = False) -> None:
        self.path = Path(path)
        self.session = onnx_util.session(self.path, device, threads)
        meta = onnx_util.metadata(self.session)
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        if len(inp.shape) != 4 or len(out.shape) != 4:
            raise WeightsError(f"{self.path}: expected a 4-D image input and a 4-D heatmap output (N, K, H, W), "
                               f"got input {inp.shape} and output {out.shape}")
        self.input_name, self.output_name = inp.name, out.name
        # a model exported with a fixed batch (often 1) takes that many crops per run: more are run in turns
        self.batch = int(inp.shape[0]) if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        if self.batch is not None:
            logging.getLogger("stableface").info("%s takes a fixed batch of %d crop%s: faces are run %s", self.path,
                                                 self.batch, "" if self.batch == 1 else "s",
                                                 "one by one" if self.batch == 1 else f"{self.batch} at a time")
        size = meta.get("input_size", inp.shape[-1])
        if not isinstance(size, int):
            raise WeightsError(f"{self.path}: input size unknown (dynamic shape and no 'input_size' metadata)")
        self.size = int(size)
        k = meta.get("num_landmarks", out.shape[1])
        hm = out.shape[-1]
        stride = meta.get("stride", self.size / hm if isinstance(hm, int) else None)
        if not isinstance(k, int) or stride is None:
            raise WeightsError(f"{self.path}: number of heatmaps or stride unknown: add 'num_landmarks' and 'stride' metadata")
        self.k, self.stride = int(k), float(stride)
        self.heatmap_size = int(round(self.size / self.stride))
        self.scheme = str(meta.get("landmark_scheme", "ibug68" if self.k == 68 else f"custom{self.k}"))
        self.crop_scale = float(meta.get("crop_scale", CROP_SCALE))
        self.rgb = str(meta.get("color", "rgb")).lower() == "rgb"
        self.mean = np.asarray(meta.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(meta.get("std", [1.0, 1.0, 1.0]), dtype=np.float32).reshape(1, 3, 1, 1)
        self.flip_test = bool(flip_test)
        self.flip_index: np.ndarray | None = None
        if self.flip_test:
            from stableface import ibug

            if self.scheme != ibug.SCHEME or self.k != ibug.K:
                raise WeightsError(f"{self.path}: --flip-test needs the mirror index of the landmark scheme; "
                                   f"it is known for {ibug.SCHEME}, this model gives {self.scheme}")
            self.flip_index = ibug.FLIP_INDEX
        key = "landmark_offset_flip" if self.flip_test else "landmark_offset"
        if self.flip_test and "landmark_offset_flip" not in meta and "landmark_offset" in meta:
            logging.getLogger("stableface").warning(
                "%s has no landmark_offset_flip (calibrated before --flip-test existed): using its landmark_offset; "
                "`stableface calibrate backbone` measures both", self.path)
            key = "landmark_offset"
        self.offset = onnx_util.point_offsets(meta, key, self.k, self.path)
        self.meta = meta
        on_cpu = "CUDAExecutionProvider" not in self.session.get_providers()
        if "quantized_from" in meta and on_cpu and onnx_util.int8_pays() is False:
            onnx_util.warn_once(f"{self.path.name} is an int8 model and this CPU has no VNNI: it runs slower here "
                                "than the float default (--weights fast)")

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 BGR -> (N, 3, S, S) float32 ``(x - mean) / std`` in the model's channel
        order, channel by channel into one array (the same values as a flip, a transpose and the
        broadcast arithmetic, without their temporaries: about a tenth of their time for 4 crops,
        ``benchmarks/backbone_input.py``)."""
        if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"crops must be (N, {self.size}, {self.size}, 3), got {crops.shape}")
        n, h, w, _ = crops.shape
        x = np.empty((n, 3, h, w), np.float32)
        mean, std = self.mean.ravel(), self.std.ravel()
        for c in range(3):
            np.subtract(crops[..., 2 - c if self.rgb else c], mean[c], out=x[:, c], dtype=np.float32)
            np.divide(x[:, c], std[c], out=x[:, c])
        return x

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 BGR crops -> (N, K, H, W) float32 heatmaps (with ``flip_test``, the mean
        of each crop's maps and its mirror's, turned back)."""
        if self.flip_test and len(crops):
            n = len(crops)
            both = self._run(self.prepare(np.concatenate([crops, crops[:, :, ::-1]])))
            back = both[n:][:, self.flip_index, :, ::-1]
            return np.ascontiguousarray(0.5 * (both[:n] + back), dtype=np.float32)
        return self._run(self.prepare(crops))

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.batch is None or len(x) == self.batch:
            hm = self.session.run([self.output_name], {self.input_name: x})[0]
        else:  # a fixed batch: in turns, the last one padded
            b, parts = self.batch, []
            for i in range(0, len(x), b):
                chunk = x[i:i + b]
                pad = np.concatenate([chunk, np.zeros((b - len(chunk), *chunk.shape[1:]), chunk.dtype)]) if len(chunk) < b else chunk
                parts.append(self.session.run([self.output_name], {self.input_name: pad})[0][:len(chunk)])
            hm = np.concatenate(parts) if parts else np.zeros((0, self.k, self.heatmap_size, self.heatmap_size), np.float32)
        if hm.ndim != 4 or hm.shape[1] != self.k:
            raise WeightsError(f"{self.path}: output has shape {hm.shape}, expected (N, {self.k}, H, W)")
        return hm
