"""onnxruntime session options, A/B in one run: the backbone (1 and 4 crops) and the ConvLSTM step
(1 and 4 faces) under each setting, interleaved round by round so that a machine whose speed
drifts treats every setting alike.

    python benchmarks/ort_options.py [--rounds 5] [--runs 40]

Prints a markdown table: the median ms per call of each setting and its ratio to the first
(onnxruntime's defaults with the threads stableface used before: backbone default threads,
step 1 thread, spinning on). stableface now turns spinning off (the second row). A 256x256 float32 numpy matmul is timed in the same rounds as a reference.
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np
import onnxruntime as ort

from stableface.weights import resolve
from timing import median_ms  # noqa: E402 (benchmarks/timing.py)

# name -> (intra-op threads, graph optimisation, execution mode, cpu arena, spinning)
SETTINGS = {
    "defaults (before)": {"threads": None, "opt": "all", "mode": "seq", "arena": True, "spin": True},
    "defaults, no spinning (now)": {"threads": None, "opt": "all", "mode": "seq", "arena": True, "spin": False},
    "1 thread": {"threads": 1, "opt": "all", "mode": "seq", "arena": True, "spin": True},
    "2 threads": {"threads": 2, "opt": "all", "mode": "seq", "arena": True, "spin": True},
    "2 threads, no spinning": {"threads": 2, "opt": "all", "mode": "seq", "arena": True, "spin": False},
    "1 thread, optimisation basic": {"threads": 1, "opt": "basic", "mode": "seq", "arena": True, "spin": True},
    "1 thread, optimisation extended": {"threads": 1, "opt": "extended", "mode": "seq", "arena": True, "spin": True},
    "1 thread, parallel execution": {"threads": 1, "opt": "all", "mode": "par", "arena": True, "spin": True},
    "1 thread, no cpu arena": {"threads": 1, "opt": "all", "mode": "seq", "arena": False, "spin": True},
}
OPT = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
       "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def session(path, threads, opt, mode, arena, spin, default_threads):
    o = ort.SessionOptions()
    o.log_severity_level = 3
    t = default_threads if threads is None else threads
    if t:
        o.intra_op_num_threads = t
    o.graph_optimization_level = OPT[opt]
    o.execution_mode = ort.ExecutionMode.ORT_PARALLEL if mode == "par" else ort.ExecutionMode.ORT_SEQUENTIAL
    o.enable_cpu_mem_arena = arena
    if not spin:
        o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    ws = resolve()
    rng = np.random.default_rng(0)
    feeds = {}
    for n in (1, 4):
        feeds[("backbone", n)] = {"image": rng.random((n, 3, 128, 128), dtype=np.float32) * 255}
        z = np.zeros((n, 68, 32, 32), np.float32)
        feeds[("step", n)] = {"o": rng.random((n, 68, 32, 32), dtype=np.float32), "h": z, "c": z}
    sessions = {(name, m): session(ws.backbone if m == "backbone" else ws.stabilizer, **cfg,
                                   default_threads=0 if m == "backbone" else 1)
                for name, cfg in SETTINGS.items() for m in ("backbone", "step")}
    a = rng.random((256, 256), dtype=np.float32)
    times: dict = {}
    for _ in range(args.rounds):
        times.setdefault("ref", []).append(median_ms(lambda: a @ a, args.runs, warmup=5))
        for name in SETTINGS:
            for (m, n), f in feeds.items():
                s = sessions[(name, m)]
                times.setdefault((name, m, n), []).append(median_ms(lambda s=s, f=f: s.run(None, f), args.runs, warmup=5))
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}; "
          f"median over {args.rounds} interleaved rounds of the median of {args.runs} calls; reference matmul "
          f"{med['ref']:.3f} ms")
    cols = [("backbone", 1), ("backbone", 4), ("step", 1), ("step", 4)]
    print("| setting | " + " | ".join(f"{m} x{n} ms (ratio)" for m, n in cols) + " |")
    print("|---" * (1 + len(cols)) + "|")
    base = next(iter(SETTINGS))
    for name in SETTINGS:
        print(f"| {name} | " + " | ".join(f"{med[(name, m, n)]:.2f} ({med[(name, m, n)] / med[(base, m, n)]:.2f})"
                                          for m, n in cols) + " |")


if __name__ == "__main__":
    main()
