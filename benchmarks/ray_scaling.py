"""Batch throughput of `stableface track` with 1 and 2 workers, local pool and Ray, over the six
512x512 shared clips, and the costs a cluster-wide estimate needs: Ray's round trip per task and a
worker's start (models loaded once).

    python benchmarks/ray_scaling.py [--videos ../shared/videos] [--workers 1,2] [--repeat 1]

Each run is the real CLI in a fresh process (`--out-dir` in a temporary folder, JSON), so its wall
time includes starting Python, loading the models and, for Ray, starting a local Ray instance
(or joining $RAY_ADDRESS / --ray-address). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]


def clips(videos: Path) -> list[Path]:
    return sorted(p for p in videos.glob("*.mp4") if cv2.VideoCapture(str(p)).get(cv2.CAP_PROP_FRAME_WIDTH) == 512)


def run(paths: list[Path], flags: list[str]) -> tuple[float, int, int]:
    """Wall seconds of one batch through the CLI, the frames and the bytes written."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "stableface", "track", *map(str, paths), "--out-dir", tmp, "-q", *flags],
                           capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(flags)}: exit {r.returncode}: {r.stderr.strip()}")
        outs = list(Path(tmp).glob("*.json"))
        frames = sum(len(json.loads(p.read_text())["frames"]) for p in outs)
        size = sum(p.stat().st_size for p in outs)
    return wall, frames, size


def ray_costs(address: str | None) -> dict[str, float]:
    """Round trip of an empty actor call (median of 200), start of a stableface worker (models
    loaded, median of 3), on the cluster that `--engine ray` would use."""
    import ray

    from stableface.ray_engine import SourceWorker, connect

    t0 = time.perf_counter()
    connect(address)
    init_s = time.perf_counter() - t0

    @ray.remote(num_cpus=0)
    class Echo:
        def ping(self, x):
            return x

    e = Echo.remote()
    ray.get(e.ping.remote(0))
    trips = []
    for i in range(200):
        t = time.perf_counter()
        ray.get(e.ping.remote(i))
        trips.append(time.perf_counter() - t)
    starts = []
    build = (None, "convlstm", None, "cpu", 1, 10, 8)
    for _ in range(3):
        t = time.perf_counter()
        w = ray.remote(SourceWorker).options(num_cpus=1).remote(build, False, "convlstm", 0, True, None, 0.0, os.getcwd())
        ray.get(w.hello.remote())
        starts.append(time.perf_counter() - t)
        ray.kill(w)
    ray.shutdown()
    trips.sort()
    starts.sort()
    return {"init_s": init_s, "task_round_trip_ms": trips[len(trips) // 2] * 1000, "worker_start_s": starts[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=Path, default=REPO.parent / "shared" / "videos")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeat", type=int, default=1, help="runs per setting; the fastest is kept")
    ap.add_argument("--ray-address", default=None, help="join this cluster (default: $RAY_ADDRESS, else a local instance)")
    ap.add_argument("--engines", default="local,ray")
    args = ap.parse_args()
    paths = clips(args.videos)
    if not paths:
        raise SystemExit(f"no 512x512 clips in {args.videos}")
    print(f"{len(paths)} clips, {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"input: {sum(p.stat().st_size for p in paths) / 1e6:.1f} MB")
    rows = []
    for engine in args.engines.split(","):
        for n in map(int, args.workers.split(",")):
            flags = ["--jobs", str(n)]
            if engine == "ray":
                flags += ["--engine", "ray"] + (["--ray-address", args.ray_address] if args.ray_address else [])
            best = min((run(paths, flags) for _ in range(args.repeat)), key=lambda r: r[0])
            rows.append((engine, n, *best))
            print(f"  {engine} x{n}: {best[0]:.1f} s, {best[1]} frames", file=sys.stderr)
    print("| engine | workers | frames | JSON MB | wall s | frames/s | speed-up vs 1 worker |")
    print("|---|---|---|---|---|---|---|")
    for engine, n, wall, frames, size in rows:
        base = next(w for e, k, w, *_ in rows if e == engine and k == rows[0][1])
        print(f"| {engine} | {n} | {frames} | {size / 1e6:.1f} | {wall:.1f} | {frames / wall:.1f} | {base / wall:.2f}x |")
    if "ray" in args.engines:
        c = ray_costs(args.ray_address)
        print(f"\nRay: connect/start {c['init_s']:.2f} s; empty actor call round trip {c['task_round_trip_ms']:.2f} ms "
              f"(median of 200); a stableface worker's start with its models {c['worker_start_s']:.2f} s (median of 3)")


if __name__ == "__main__":
    main()
