"""Real-motion annotated benchmark: build it (seeded), then run the whole pipeline on its video files.

    pip install av                     # H.264 encoder for rendering (PyAV)
    python benchmarks/real_motion.py [--out runs/real_motion] [--clips 12] [--frames 150] [--seed 0]

The clips are rendered by ``stableface.realmotion``: head and face motion taken from the shared
talking-head clips whose motion is held out for validation (``realmotion.VALIDATION_MOTION``),
varied, applied to annotated stills of the validation split (every 10th file, never trained on),
with lighting drift, motion blur, sensor noise and H.264 at 0.8-2.5 Mbit/s. Each clip is written
as ``clipNNN.mp4`` with its exact ground truth ``clipNNN.npy``, so that

    stableface evaluate runs/real_motion/clip000.mp4 --annotations runs/real_motion/clip000.npy

gives the same numbers for one clip. This script runs ``stableface.evaluate.evaluate_video`` (the
code behind that command: detector, tracker crop-following, backbone, stabilizer, decode) on every
clip and prints the mean NRMSE, NME, jitter error and lag per method. The One Euro filter is
tuned on the same clips (offline grid on the raw tracks, best jitter error at an NRMSE within 1%
of raw's), then run through the pipeline with those settings. "offset vs raw" is the mean of
(method - raw) over all points and frames: a stabilizer should not move the face.

``--split train`` renders clips from the *training* stills and motion instead, for choosing
parameters (the deviation limit, the lookahead widths) on material the benchmark does not use.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from stableface import ibug, metrics, realmotion as R
from stableface.evaluate import evaluate_video
from stableface.pipeline import Pipeline, PipelineConfig
from stableface.points import Scorer
from stableface.stabilizer import OneEuro
from stableface.training import data as D

ROOT = Path(__file__).resolve().parents[2]


def build(out: Path, data: Path, videos: Path, n_clips: int, n_frames: int, seed: int, split: str = "val",
          log=print) -> list[Path]:
    """Render the benchmark (or the training set with ``split="train"``) into ``out``; reuse it when the manifest matches."""
    manifest = out / "manifest.json"
    params = {"clips": n_clips, "frames": n_frames, "seed": seed, "split": split, "version": 1}
    if manifest.exists() and json.loads(manifest.read_text()).get("params") == params:
        return [out / c["file"] for c in json.loads(manifest.read_text())["clips"]]
    lib = R.motion_library(videos, R.raw_tracker(), out.parent / "motion-cache")
    train_motion, val_motion = R.split_motion(lib)
    train_files, val_files = ibug.training_split(data)
    files = val_files if split == "val" else train_files
    motion = val_motion if split == "val" else train_motion
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(files), size=n_clips, replace=n_clips > len(files))
    spec = R.RenderSpec()
    clips, paths = [], []
    t0 = time.perf_counter()
    for i, j in enumerate(picks):
        s = D.load([files[j]])[0]
        script = R.make_script(motion, n_frames, rng)
        frames, gt = R.render(s.image, s.points, script, spec, rng)
        rate = float(rng.uniform(*spec.bitrate))
        path = R.write_clip(out / f"clip{i:03d}.mp4", frames, gt, spec.fps, rate)
        clips.append({"file": path.name, "still": str(files[j].relative_to(data)), "motion": script.label, "bitrate": rate})
        paths.append(path)
        log(f"  rendered {path.name} ({i + 1}/{n_clips}, {time.perf_counter() - t0:.0f} s): {script.label}, {rate / 1e6:.2f} Mbit/s")
    manifest.write_text(json.dumps({"params": params, "clips": clips}, indent=1))
    return paths


def tune_one_euro(raw: list[np.ndarray], gts: list[np.ndarray], fps: float = 25.0) -> tuple[float, float]:
    """(min_cutoff, beta) with the lowest mean jitter error at a mean NRMSE within 1% of raw's, on raw tracks
    (the lowest-NRMSE setting when none is that close)."""
    def score(tracks):
        je, nr = [], []
        for tr, gt in zip(tracks, gts):
            ok = np.isfinite(tr).all(axis=(1, 2))
            iod = ibug.interocular(gt)
            je.append(metrics.jitter_error(tr[ok], gt[ok], iod[ok]))
            nr.append(float(metrics.nrmse(tr[ok], gt[ok], iod[ok]).mean()))
        return float(np.mean(je)), float(np.mean(nr))

    _, raw_nr = score(raw)
    best, best_je, closest = None, float("inf"), (float("inf"), (4.0, 1.0))
    for mc, beta in itertools.product([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0], [0.0, 0.1, 0.3, 1.0, 3.0]):
        out = []
        for tr, gt in zip(raw, gts):
            unit = 1.3 * float(np.ptp(gt[0], axis=0).max()) / 100.0  # the pipeline's One Euro works in crop side / 100
            f, rows = OneEuro(mc, beta), []
            for t, p in enumerate(tr):
                rows.append(f(p / unit, t * 1000.0 / fps) * unit if np.isfinite(p).all() else p)
            out.append(np.array(rows))
        je, nr = score(out)
        if nr <= raw_nr * 1.01 and je < best_je:  # within 1% (relative) of raw's NRMSE
            best, best_je = (mc, beta), je
        closest = min(closest, (nr, (mc, beta)))
    return best or closest[1]


def run(paths: list[Path], methods: dict[str, PipelineConfig], log=print, tracks: dict | None = None,
        stabilizer: Path | None = None, weights: Path | None = None) -> dict[str, dict[str, float]]:
    """Mean metrics per method over the clips; ``tracks``, when given, collects each method's (T, K, 2) tracks."""
    pipes = {k: Pipeline.from_weights(weights, stabilizer_weights=stabilizer, device="cpu", config=c, threads=1) for k, c in methods.items()}
    scorer = Scorer.build()
    per: dict[str, list[dict]] = {k: [] for k in methods}
    for p in paths:
        rep = evaluate_video(p, pipes, p.with_suffix(".npy"), scorer)
        if tracks is not None:
            for k in methods:
                tracks.setdefault(k, []).append(rep.tracks[k])
        for k in methods:
            m = dict(rep.metrics[k])
            tr, gt = rep.tracks[k], rep.gt
            ok = np.isfinite(tr).all(axis=(1, 2))
            d = tr[ok] - gt[ok]
            iod = ibug.interocular(gt[ok])
            m["bias_x_px"], m["bias_y_px"] = float(d[..., 0].mean()), float(d[..., 1].mean())
            m["iod_px"] = float(iod.mean())
            per[k].append(m)
        log(f"  {p.name}: " + ", ".join(f"{k} {per[k][-1]['jitter_error']:.3f}" for k in methods))
    if tracks is not None and "none" in tracks:
        for k in methods:
            for m, tr, raw in zip(per[k], tracks[k], tracks["none"]):
                d = (tr - raw)[np.isfinite(tr - raw).all(axis=(1, 2))]
                m["offset_raw_x_px"], m["offset_raw_y_px"] = float(d[..., 0].mean()), float(d[..., 1].mean())
    keys = ["offset_raw_x_px", "offset_raw_y_px", "nrmse", "nme", "jitter_error", "lag_frames", "nmj", "time_delay", "second_diff_error", "bias_x_px", "bias_y_px",
            "missed", "iod_px"]
    return {k: {key: float(np.nanmean([m.get(key, np.nan) for m in v])) for key in keys} | {"clips": v}
            for k, v in per.items()}


def smooth_offline(track: np.ndarray, n: int, mode: str = "split") -> np.ndarray:
    """``--lookahead n`` applied to a (T, K, 2) single-face raw track: the same ``Lookahead`` the pipeline
    runs downstream of the tracker (it does not feed back into the crops, which follow the raw
    landmarks under a lookahead), so this is exact."""
    from stableface.lookahead import Lookahead
    from stableface.types import Face, FrameResult

    la, out = Lookahead(n, mode=mode), []
    def faces(t):
        if not np.isfinite(track[t]).all():
            return ()
        return (Face(0, (0.0, 0.0, 1.0, 1.0), 1.0, track[t].astype(np.float32), np.ones(len(track[t]), np.float32)),)
    results = [r for t in range(len(track)) for r in la.update(FrameResult(t, t * 40.0, faces(t)))] + la.flush()
    for r in results:
        out.append(r.faces[0].landmarks if r.faces else np.full(track.shape[1:], np.nan))
    return np.array(out, np.float64)


def sweep_lookahead(tracks: list[np.ndarray], gts: list[np.ndarray], ns: list[int]) -> dict[str, dict[str, float]]:
    """Mean NRMSE, jitter error and lag of each lookahead N over the clips, split (the default) and plain."""
    from stableface.evaluate import accuracy

    scorer = Scorer.build()
    out = {}
    for n in ns:
        for mode in ("split", "plain"):
            rows = [accuracy(smooth_offline(tr, n, mode), gt, scorer) for tr, gt in zip(tracks, gts)]
            out[f"{n} {mode}"] = {k: float(np.nanmean([r[k] for r in rows])) for k in ("nrmse", "jitter_error", "lag_frames")}
    return out


def causal_bound(raw: list[np.ndarray], gts: list[np.ndarray], taps: int = 6) -> dict[str, float]:
    """What causal filtering of the raw landmarks can do here at best (a bound, fitted on these very clips).

    The rigid part (a least-squares similarity to the first frame) passes unfiltered; the rest,
    in the face's frame, goes through the causal linear filter of ``taps`` frames that minimises the
    squared error to the ground truth over all clips (one filter for all points). Also the best
    exponential moving average of that residual, and the same moving average of the shape in the face's
    frame when the face's motion is exact (fitted to the ground truth). Mean NRMSE and jitter error (% IOD)."""
    from stableface.crop import invert
    from stableface.evaluate import accuracy
    from stableface.stabilizer import apply_affine, fit_similarity

    scorer = Scorer.build()

    local, truth, sims = [], [], []
    for tr, gt in zip(raw, gts):
        ok = np.isfinite(tr).all(axis=(1, 2))
        tr, gt = tr[ok], gt[ok]
        ss = [fit_similarity(tr[0], x) for x in tr]
        sims.append(ss)
        local.append(np.stack([apply_affine(invert(m), x) for m, x in zip(ss, tr)]))
        truth.append(np.stack([apply_affine(invert(m), g) for m, g in zip(ss, gt)]))

    def lagged(x: np.ndarray, n: int = taps) -> np.ndarray:  # (T, K*2, n): x_t, x_{t-1}, ... (the first frame repeated)
        flat = x.reshape(len(x), -1)
        return np.stack([flat[np.maximum(np.arange(len(x)) - j, 0)] for j in range(n)], axis=-1)

    xs = np.concatenate([lagged(x).reshape(-1, taps) for x in local])
    ys = np.concatenate([g.reshape(-1) for g in truth])
    w = np.linalg.lstsq(np.hstack([xs, np.ones((len(xs), 1))]), ys, rcond=None)[0]

    def score(tracks):
        rows = [accuracy(t, g[np.isfinite(r).all(axis=(1, 2))], scorer) for t, g, r in zip(tracks, gts, raw)]
        return float(np.mean([r["nrmse"] for r in rows])), float(np.mean([r["jitter_error"] for r in rows]))

    wiener = [np.stack([apply_affine(m, (lx @ w[:-1] + w[-1]).reshape(-1, 2)) for m, lx in zip(ss, lagged(x))])
              for x, ss in zip(local, sims)]
    out = {"raw": score([np.stack([apply_affine(m, x) for m, x in zip(ss, loc)]) for loc, ss in zip(local, sims)]),
           f"least-squares causal filter ({taps} taps)": score(wiener)}
    for a in (0.3, 0.5, 0.7):
        ema = []
        for x, ss in zip(local, sims):
            y, rows = x[0], []
            for m, xt in zip(ss, x):
                y = a * xt + (1 - a) * y
                rows.append(apply_affine(m, y))
            ema.append(np.stack(rows))
        out[f"moving average of the residual (rate {a})"] = score(ema)
    # the same with the face's exact motion (a similarity fitted to the ground truth): what a causal
    # filter of the shape reaches when the head's motion is known exactly, as image flow nearly knows it
    exact_sims, exact_local, exact_truth = [], [], []
    for tr, gt in zip(raw, gts):
        ok = np.isfinite(tr).all(axis=(1, 2))
        tr, gt = tr[ok], gt[ok].astype(np.float64)
        ss = fit_similarity(gt[0], gt)
        exact_sims.append(ss)
        exact_local.append(np.stack([apply_affine(invert(m), x) for m, x in zip(ss, tr)]))
        exact_truth.append(np.stack([apply_affine(invert(m), g) for m, g in zip(ss, gt)]))
    ys = np.concatenate([g.reshape(-1) for g in exact_truth])
    for n in (taps, 2 * taps):  # one filter for every point, fitted to the truth over all clips (a bound, not a method)
        xs = np.concatenate([lagged(x, n).reshape(-1, n) for x in exact_local])
        we = np.linalg.lstsq(np.hstack([xs, np.ones((len(xs), 1))]), ys, rcond=None)[0]
        out[f"exact motion + least-squares causal filter of the shape ({n} taps)"] = score(
            [np.stack([apply_affine(m, (lx @ we[:-1] + we[-1]).reshape(-1, 2)) for m, lx in zip(ss, lagged(x, n))])
             for x, ss in zip(exact_local, exact_sims)])
    for a in (0.3, 0.4, 0.5, 0.7):
        ema = []
        for loc, ss in zip(exact_local, exact_sims):
            y, rows = None, []
            for m, x in zip(ss, loc):
                y = x if y is None else a * x + (1 - a) * y
                rows.append(apply_affine(m, y))
            ema.append(np.stack(rows))
        out[f"exact motion + moving average of the shape (rate {a})"] = score(ema)
    return {k: {"nrmse": v[0], "jitter_error": v[1]} for k, v in out.items()} | {"taps": list(map(float, w[:-1]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "shared" / "data" / "300w_train")
    ap.add_argument("--videos", type=Path, default=ROOT / "shared" / "videos")
    ap.add_argument("--out", type=Path, default=Path("runs/real_motion"))
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("val", "train"), default="val",
                    help="val: the benchmark (validation stills and held-out motion); train: clips from the training "
                         "stills and motion, to choose parameters on (e.g. --split train --seed 1 --clips 16 "
                         "--out runs/real_motion_train).")
    ap.add_argument("--methods", default="none,one-euro,one-euro-tuned,convlstm,lookahead",
                    help="Rows to run: none, none-hard, none-flip, one-euro, one-euro-tuned, convlstm, convlstm-hard, "
                         "convlstm-flip, convlstm-noflow, convlstm-unguarded, lookahead, lookahead-noflow (-flip: --flip-test; "
                         "-noflow: the face followed by its landmarks only, without image flow; -unguarded: without the "
                         "deviation guard).")
    ap.add_argument("--lookahead", type=int, default=8)
    ap.add_argument("--stabilizer", type=Path, default=None, help="A stabilizer .onnx other than the shipped one.")
    ap.add_argument("--weights", type=Path, default=None, help="A backbone .onnx (or weights folder) other than the shipped one.")
    ap.add_argument("--sweep", default="", help="Lookahead lengths to measure offline on the raw tracks (split and plain), e.g. 0,2,4,8,12,15.")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--bound", action="store_true", help="Also print what causal filtering of the raw track can reach here.")
    ap.add_argument("--save-tracks", type=Path, default=None, help="Write every method's tracks to this .npz.")
    args = ap.parse_args()
    print(f"building {args.clips} {args.split} clips x {args.frames} frames in {args.out} (seed {args.seed})")
    paths = build(args.out, args.data, args.videos, args.clips, args.frames, args.seed, split=args.split)
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    methods: dict[str, PipelineConfig] = {}
    tuned = None
    if "one-euro-tuned" in wanted:
        tracks: dict = {}
        run(paths, {"none": PipelineConfig(stabilizer="none")}, log=lambda s: None, tracks=tracks, weights=args.weights)
        tuned = tune_one_euro(tracks["none"], [np.load(p.with_suffix(".npy")) for p in paths])
        print(f"One Euro tuned on these clips: min_cutoff {tuned[0]}, beta {tuned[1]}")
    table = {"none": PipelineConfig(stabilizer="none"), "none-hard": PipelineConfig(stabilizer="none", pdc_mode="hard"),
             "one-euro": PipelineConfig(stabilizer="one-euro"),
             "convlstm": PipelineConfig(stabilizer="convlstm"), "convlstm-hard": PipelineConfig(stabilizer="convlstm", pdc_mode="hard"),
             "none-flip": PipelineConfig(stabilizer="none", flip_test=True),
             "convlstm-flip": PipelineConfig(stabilizer="convlstm", flip_test=True),
             "convlstm-noflow": PipelineConfig(stabilizer="convlstm", flow=False),
             "convlstm-unguarded": PipelineConfig(stabilizer="convlstm", deviation=None)}
    if tuned:
        table["one-euro-tuned"] = PipelineConfig(stabilizer="one-euro", one_euro_min_cutoff=tuned[0], one_euro_beta=tuned[1])
    if {"lookahead", "lookahead-noflow"} & set(wanted):  # the fixed-lag smoother of the raw landmarks (it replaces the causal stabilizer)
        table["lookahead"] = PipelineConfig(stabilizer="none", lookahead=args.lookahead)
        table["lookahead-noflow"] = PipelineConfig(stabilizer="none", lookahead=args.lookahead, flow=False)
    methods = {"none": table["none"]} | {k: table[k] for k in wanted if k in table}  # raw first: offsets are against it
    tracks = {}
    res = run(paths, methods, stabilizer=args.stabilizer, tracks=tracks, weights=args.weights)
    base = res.get("none")
    print(f"\n{len(paths)} clips x {args.frames} frames, 720x576 H.264; % of inter-ocular distance; lag in frames")
    print(f"mean inter-ocular distance {np.mean([m['iod_px'] for m in next(iter(res.values()))['clips']]):.0f} px")
    print("| method | NRMSE % | NME % | jitter error % | vs raw | lag (frames) | NMJ | FHR time delay | "
          "2nd-difference error % | offset vs raw x / y (px) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, m in res.items():
        rel = f"{100 * (m['jitter_error'] / base['jitter_error'] - 1):+.0f}%" if base else ""
        print(f"| {k} | {m['nrmse']:.2f} | {m['nme']:.2f} | {m['jitter_error']:.3f} | {rel} | {m['lag_frames']:.2f} "
              f"| {m['nmj']:.3f} | {m['time_delay']:.2f} | {m['second_diff_error']:.3f} "
              f"| {m['offset_raw_x_px']:+.2f} / {m['offset_raw_y_px']:+.2f} |")
    bound = {}
    if args.bound:
        bound = causal_bound(tracks["none"], [np.load(p.with_suffix(".npy")) for p in paths])
        print("\n| causal filtering of the raw landmarks, fitted on these clips | NRMSE % | jitter error % |")
        print("|---|---|---|")
        for k, m in bound.items():
            if k != "taps":
                print(f"| {k} | {m['nrmse']:.2f} | {m['jitter_error']:.3f} |")
        print("least-squares taps (t, t-1, ...): " + ", ".join(f"{v:.3f}" for v in bound["taps"]))
    if args.save_tracks:
        np.savez_compressed(args.save_tracks, **{f"{k}__{i}": t for k, v in tracks.items() for i, t in enumerate(v)})
    sweep = {}
    if args.sweep:
        ns = [int(v) for v in args.sweep.split(",")]
        sweep = sweep_lookahead(tracks["none"], [np.load(p.with_suffix(".npy")) for p in paths], ns)
        print("\n| --lookahead N (raw landmarks): split (the default) or plain (the previous release's) | NRMSE % | jitter error % | lag (frames) |")
        print("|---|---|---|---|")
        for n, m in sweep.items():
            print(f"| {n} | {m['nrmse']:.2f} | {m['jitter_error']:.3f} | {m['lag_frames']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"one_euro_tuned": tuned, "results": res, "lookahead_sweep": sweep,
                                        "causal_bound": bound}, indent=1,
                                        default=float))


if __name__ == "__main__":
    main()
