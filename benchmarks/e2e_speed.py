"""End-to-end speed on real clips: decode-only vs full tracking (decode + detect + crop + backbone
+ stabilizer + PDC + JSON writing), with per-stage times, in one process.

    python benchmarks/e2e_speed.py [--videos ../shared/videos] [--stabilizer convlstm]

Prints a markdown table; the ratio column (full / decode-only fps) is the machine-independent figure.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2

from stableface.pipeline import Pipeline, PipelineConfig
from stableface.sinks import JsonSink
from stableface.video import open_source

STAGES = ["decode", "detect", "crop", "backbone", "stabilizer", "pdc", "lookahead", "write"]


def decode_only(path: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    with open_source(str(path)) as src:
        for _ in src:
            n += 1
    return n, time.perf_counter() - t0


def full(pipe: Pipeline, path: Path, out: Path) -> tuple[int, float, dict[str, float]]:
    pipe.timer.total.clear()
    n = 0
    t0 = time.perf_counter()
    decode = 0.0
    with open_source(str(path)) as src, JsonSink(out, src.info, pipe.scheme, pipe.stabilizer_label, pipe.config.lookahead) as sink:
        it = iter(src)
        while True:
            td = time.perf_counter()
            frame = next(it, None)
            decode += time.perf_counter() - td
            if frame is None:
                break
            if n == 0:
                pipe.reset()
            result = pipe.update(frame)
            with pipe.timer.stage("lookahead"):
                ready = pipe.lookahead.update(result) if pipe.lookahead.n else [result]
            with pipe.timer.stage("write"):
                for r in ready:
                    sink.write(r)
            n += 1
        with pipe.timer.stage("lookahead"):
            ready = pipe.lookahead.flush()
        for r in ready:
            sink.write(r)
    total = time.perf_counter() - t0
    stages = dict(pipe.timer.total)
    stages["decode"] = decode
    return n, total, stages


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "videos")
    ap.add_argument("--stabilizer", default="convlstm")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--lookahead", type=int, default=0, help="8 is what `track` does to files by default.")
    args = ap.parse_args()
    clips = sorted(p for p in args.videos.glob("*.mp4") if cv2.VideoCapture(str(p)).get(cv2.CAP_PROP_FRAME_WIDTH) == 512)
    pipe = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer=args.stabilizer, lookahead=args.lookahead),
                                threads=args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
          f"stabilizer={args.stabilizer}, lookahead={args.lookahead}")
    print("| clip | frames | decode-only fps | end-to-end fps | ratio | " + " | ".join(f"{s} ms" for s in STAGES) + " |")
    print("|---" * (5 + len(STAGES)) + "|")
    tot_n = tot_full = tot_dec = 0.0
    tot_stage = {s: 0.0 for s in STAGES}
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            n, dt = decode_only(clip)
            n2, ft, stages = full(pipe, clip, Path(tmp) / "out.json")
            assert n == n2
            tot_n += n
            tot_full += ft
            tot_dec += dt
            for s in STAGES:
                tot_stage[s] += stages.get(s, 0.0)
            print(f"| {clip.name} | {n} | {n / dt:.0f} | {n / ft:.1f} | {dt / ft:.3f} | "
                  + " | ".join(f"{stages.get(s, 0.0) / n * 1000:.2f}" for s in STAGES) + " |")
    print(f"| **all** | {int(tot_n)} | {tot_n / tot_dec:.0f} | **{tot_n / tot_full:.1f}** | {tot_dec / tot_full:.3f} | "
          + " | ".join(f"{tot_stage[s] / tot_n * 1000:.2f}" for s in STAGES) + " |")


if __name__ == "__main__":
    main()
