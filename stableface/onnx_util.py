"""onnxruntime sessions: execution providers for ``--device``, metadata, clear errors."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


# idle intra-op threads sleep instead of spinning: on a busy CPU (our own reader and writer threads,
# other processes) spinning threads take the cores the work needs; benchmarks/e2e_speed.py measured
# 2.5x the fps without it on a loaded 2-core machine (docs/benchmarks.md)
ALLOW_SPINNING = False


class WeightsError(Exception):
    """A weights file is missing, unreadable or not what the pipeline expects."""


def providers(device: str = "auto") -> list[str]:
    """Execution providers for ``auto`` (CUDA when onnxruntime sees it), ``cpu`` or ``cuda``."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "auto" and sys.platform.startswith("linux") and not Path("/dev/nvidiactl").exists():
        available = [p for p in available if p != "CUDAExecutionProvider"]  # no NVIDIA driver here
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device not in ("auto", "cuda"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def default_threads() -> int:
    """Intra-op threads of a session when none are asked for: every CPU this process may use but one.
    The pipeline's reader and writer threads (decoding, the shot test's thumbnails, writing) need a
    core beside the models; on 2 cores one intra-op thread gave 6-14% more end-to-end fps than
    onnxruntime's default of two (``benchmarks/e2e_speed.py --variants threaded,2thread``)."""
    return max(1, available_cpus() - 1)


def single_threaded_opencv() -> None:
    """OpenCV's own thread pool off (process-wide): the pipeline's OpenCV work is small (128x128 crops,
    their flow, thumbnails), and splitting it over cores only contends with the reader thread and
    onnxruntime. On 2 cores the files' default ran 227.3 fps against 195.5 with OpenCV's default
    (``benchmarks/e2e_speed.py --lookahead 8 --max-faces 4 --repeat 3``, one run each way)."""
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags (Linux's ``/proc/cpuinfo``), or None where they cannot be read."""
    try:
        with open(path) as fh:
            return next((set(line.split(":", 1)[1].split()) for line in fh if line.startswith("flags")), None)
    except OSError:
        return None


def int8_pays(flags: set[str] | None = None) -> bool | None:
    """Whether this CPU has the integer dot-product instructions (AVX-512 VNNI or AVX-VNNI) that make an
    int8 backbone faster than the float one; None where the flags are unknown. Without them the int8 twin
    ran 1.11x slower than float on an AMD EPYC, with them 0.63x the time on an Intel Xeon (model card)."""
    flags = cpu_flags() if flags is None else flags
    return None if flags is None else bool(flags & {"avx512_vnni", "avx_vnni"})


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on every platform)
        return os.cpu_count() or 1


def session(path: str | Path, device: str = "auto", threads: int = 0):
    """An ``InferenceSession`` for ``path``, with ``threads`` intra-op threads (0: ``default_threads()``);
    WeightsError naming the file on any failure."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads or default_threads()
    if not ALLOW_SPINNING:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    wanted = providers(device)
    try:
        if "CUDAExecutionProvider" in wanted:
            ort.set_default_logger_severity(4)  # a failed CUDA start is reported once, below, in one line
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=wanted)
        if device == "cuda" and "CUDAExecutionProvider" not in sess.get_providers():
            warn_once("CUDA was asked for but onnxruntime cannot use it here: running on the CPU")
        return sess
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: not a loadable ONNX model ({first[:200]})") from None


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time only."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def metadata(sess) -> dict[str, object]:
    """The model's ``metadata_props`` with JSON values decoded where they parse."""
    raw = sess.get_modelmeta().custom_metadata_map
    out: dict[str, object] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except (ValueError, TypeError):
            out[k] = v
    return out


def point_offsets(meta: dict[str, object], key: str, k: int, path: str | Path) -> np.ndarray | None:
    """A (K, 2) float32 calibration offset (crop pixels) from the metadata ``key``, or None without one."""
    value = meta.get(key)
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        arr = np.zeros(0, np.float32)
    if arr.shape != (k, 2) or not np.isfinite(arr).all():
        raise WeightsError(f"{path}: '{key}' metadata must be {k} finite (dx, dy) pairs")
    return arr


def as_float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)
