"""End-to-end speed on real clips, through ``Pipeline.track`` (the loop the CLI runs: decode, detect,
crop, backbone, stabilizer, PDC, lookahead, JSON writing), beside decode-only, in one process.

    python benchmarks/e2e_speed.py [--videos ../shared/videos] [--lookahead 0] [--variants threaded,serial]

Variants, measured clip by clip in turn (so a machine whose speed drifts treats them alike):
``threaded`` (reader and writer threads, the default; onnxruntime on every CPU but one), ``serial`` (``track(overlap=False)``: decode,
track and write one after the other in one thread), ``1thread`` / ``2thread`` / ``spin`` (threaded, with one / two
onnxruntime intra-op threads for every model / with intra-op spinning on, onnxruntime's default), ``before`` (the
previous loop: serial, spinning on, the backbone on every core; for one face it is the previous code path), ``no-cuts`` (threaded,
shot-cut detection off: what the shot test costs), ``spin2`` (threaded, two intra-op threads per model,
spinning on), ``no-flow`` (threaded, the face followed by its landmarks only: what the image flow costs). Prints a markdown table: fps, the ratio
to decode-only fps (machine-independent) and to the first variant, then the first variant's stages
(``Pipeline.profile()``: they add up to its wall time; decode and write are overlapped).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2

from stableface import onnx_util
from stableface.pipeline import Pipeline, PipelineConfig
from stableface.sinks import JsonSink
from stableface.video import open_source

VARIANTS = {"threaded": {"overlap": True}, "serial": {"overlap": False}, "1thread": {"overlap": True, "ort_threads": 1},
            "spin": {"overlap": True, "spin": True}, "before": {"overlap": False, "spin": True, "ort_threads": os.cpu_count() or 1},
            "no-cuts": {"overlap": True, "shot_cuts": False}, "2thread": {"overlap": True, "ort_threads": 2},
            "spin2": {"overlap": True, "spin": True, "ort_threads": 2}, "no-flow": {"overlap": True, "flow": False}}


def decode_only(path: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    with open_source(str(path)) as src:
        for _ in src:
            n += 1
    return n, time.perf_counter() - t0


def full(pipe: Pipeline, path: Path, out: Path, overlap: bool) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open_source(str(path)) as src, JsonSink(out, src.info, pipe.scheme, pipe.stabilizer_label, pipe.config.lookahead) as sink:
        n = sum(1 for _ in pipe.track(src, [sink], overlap=overlap))
    return n, time.perf_counter() - t0


def build(cfg: PipelineConfig, variant: dict, threads: int) -> Pipeline:
    default = onnx_util.ALLOW_SPINNING
    onnx_util.ALLOW_SPINNING = variant.get("spin", default)
    try:
        cfg = replace(cfg, shot_cuts=variant.get("shot_cuts", cfg.shot_cuts), flow=variant.get("flow", cfg.flow))
        return Pipeline.from_weights(device="cpu", config=cfg, threads=variant.get("ort_threads", threads))
    finally:
        onnx_util.ALLOW_SPINNING = default


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "videos")
    ap.add_argument("--stabilizer", default="convlstm")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: stableface's default)")
    ap.add_argument("--lookahead", type=int, default=0, help="8 is what `track` does to files by default.")
    ap.add_argument("--max-faces", type=int, default=1)
    ap.add_argument("--variants", default="threaded,serial")
    ap.add_argument("--repeat", type=int, default=1, help="passes over the clips")
    args = ap.parse_args()
    clips = sorted(p for p in args.videos.glob("*.mp4") if cv2.VideoCapture(str(p)).get(cv2.CAP_PROP_FRAME_WIDTH) == 512)
    cfg = PipelineConfig(stabilizer=args.stabilizer, lookahead=args.lookahead, max_faces=args.max_faces)
    names = args.variants.split(",")
    pipes = {v: build(cfg, VARIANTS[v], args.threads) for v in names}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
          f"stabilizer={args.stabilizer}, lookahead={args.lookahead}, {len(clips)} clips x {args.repeat}")
    n_all, dec, wall = 0, 0.0, {v: 0.0 for v in names}
    for p in pipes.values():
        p.clear_profile()
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for clip in clips:
                n, dt = decode_only(clip)
                n_all += n
                dec += dt
                for v in names:
                    n2, ft = full(pipes[v], clip, Path(tmp) / "out.json", VARIANTS[v]["overlap"])
                    assert n2 == n, (clip, n, n2)
                    wall[v] += ft
    print("| variant | frames | decode-only fps | end-to-end fps | ratio to decode-only | ratio to " + names[0] + " |")
    print("|---|---|---|---|---|---|")
    for v in names:
        print(f"| {v} | {n_all} | {n_all / dec:.0f} | **{n_all / wall[v]:.1f}** | {dec / wall[v]:.3f} | "
              f"{wall[names[0]] / wall[v]:.2f} |")
    prof = pipes[names[0]].profile()
    print(f"\nstages of `{names[0]}` (ms per frame; they add up to {prof['wall_seconds'] / prof['frames'] * 1000:.2f} ms):")
    print("| " + " | ".join(prof["stages"]) + " | overlapped: " + " | ".join(prof["background"]) + " |")
    print("|---" * (len(prof["stages"]) + len(prof["background"])) + "|")
    print("| " + " | ".join(f"{s['ms_per_frame']:.2f}" for s in prof["stages"].values()) + " | "
          + " | ".join(f"{s['ms_per_frame']:.2f}" for s in prof["background"].values()) + " |")


if __name__ == "__main__":
    main()
