"""stableface beside dlib and MediaPipe FaceMesh, on the same data, in one run per table.

    python benchmarks/peers/run.py [--parts fit,accuracy,clips,still,speed] [--work runs/peers]

Creates the peers' own venv (``benchmarks/peers/.venv``, from ``requirements.txt``) on first use
and runs them there through ``worker.py``; stableface runs in this process, from its shipped
weights. Every tool runs its own face detector, as a user would run it.

* fit: MediaPipe's 468 mesh points -> the 68 iBUG points. For each iBUG point, the 3 mesh points
  nearest to it on average and least-squares weights (summing to 1) are fitted on every 3rd
  training image (never the validation split); written to ``WORK/facemesh68.json``.
* accuracy: NME (% inter-ocular distance) on the validation split (every 10th file), on the
  images every tool found a face in, and the detection rate.
* clips: Allan deviation (% of the mean inter-ocular distance of stableface's raw track) of each
  tool on the shared talking-head clips, raw and + One Euro (stableface's default parameters, in
  units of 1% of the face crop side, the same units stableface's own One Euro uses).
* still: still-face sequences (40 validation images x 25 frames, fresh Gaussian pixel noise of
  sigma 0/5/10/20 each frame): NME and jitter (std over time of the landmark error, % IOD).
* speed: ms per frame on one shared clip, with detection on every frame and without
  (stableface: the crop given; dlib: the shape predictor on a fixed box; MediaPipe: FaceMesh's
  video mode, which tracks from the last frame), next to the decode-only time of the same clip.
Results go to WORK/results.json (each part is kept, so parts can be rerun alone) and tables to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import pad, still_frame  # noqa: E402

from stableface import ibug, metrics  # noqa: E402
from stableface.crop import CROP_SCALE, box_from_landmarks, warp  # noqa: E402
from stableface.evaluate import run_tracks  # noqa: E402
from stableface.pipeline import Pipeline, PipelineConfig  # noqa: E402
from stableface.stabilizer import OneEuro  # noqa: E402
from stableface.video import read_image  # noqa: E402

ROOT = HERE.parents[2]
VENV = HERE / ".venv"
SF = {"stableface": "none", "stableface + One Euro": "one-euro", "stableface ConvLSTM": "convlstm"}


def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating the peers' venv in {VENV} (dlib-bin, face-recognition-models, mediapipe)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")], check=True)
    return py


def peer(method: str, job: dict, work: Path) -> dict[str, np.ndarray]:
    job_file, out = work / f"job_{method}.json", work / f"out_{method}.npz"
    job_file.write_text(json.dumps(job))
    env = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(work / f"{method}.log", "a") as log:  # MediaPipe's and TFLite's own chatter goes here
        proc = subprocess.run([str(ensure_venv()), str(HERE / "worker.py"), method, str(job_file), str(out)], env=env,
                              stderr=log)
    if proc.returncode:
        raise SystemExit(f"{method} worker failed (exit {proc.returncode}); see {work / (method + '.log')}")
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


class MeshTo68:
    def __init__(self, idx: np.ndarray, w: np.ndarray) -> None:
        self.idx, self.w = idx, w  # (68, 3) mesh indices and weights

    def __call__(self, mesh: np.ndarray) -> np.ndarray:
        return (mesh[..., self.idx, :] * self.w[..., None]).sum(-2)

    @classmethod
    def fit(cls, mesh: np.ndarray, gt: np.ndarray, nearest: int = 3) -> MeshTo68:
        ok = np.isfinite(mesh).all(axis=(1, 2))
        mesh, gt = mesh[ok], gt[ok]
        iod = ibug.interocular(gt)[:, None]
        idx, w = np.zeros((ibug.K, nearest), int), np.zeros((ibug.K, nearest))
        for k in range(ibug.K):
            d = (np.linalg.norm(mesh - gt[:, k:k + 1], axis=-1) / iod).mean(0)
            cand = np.argsort(d)[:nearest]
            # least squares for weights summing to 1: solve for the last as 1 - sum(others)
            a = (mesh[:, cand[:-1]] - mesh[:, cand[-1:]]).transpose(0, 2, 1).reshape(-1, nearest - 1)
            b = (gt[:, k] - mesh[:, cand[-1]]).reshape(-1)
            x = np.linalg.lstsq(a, b, rcond=None)[0]
            idx[k], w[k] = cand, np.append(x, 1 - x.sum())
        return cls(idx, w)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"mesh_index": self.idx.tolist(), "weight": np.round(self.w, 6).tolist()}))

    @classmethod
    def load(cls, path: Path) -> MeshTo68:
        d = json.loads(path.read_text())
        return cls(np.array(d["mesh_index"]), np.array(d["weight"]))


def one_euro(track: np.ndarray, fps: float = 25.0) -> np.ndarray:
    """stableface's One Euro (default parameters) on a (T, 68, 2) track; units: 1% of the face crop side."""
    cfg = PipelineConfig()
    ok = np.isfinite(track).all(axis=(1, 2))
    if not ok.any():
        return track.copy()
    unit = np.median([box_from_landmarks(p).side for p in track[ok]]) / 100.0
    f, out = OneEuro(cfg.one_euro_min_cutoff, cfg.one_euro_beta), np.full_like(track, np.nan)
    for t in np.flatnonzero(ok):
        out[t] = f(track[t] / unit, t * 1000.0 / fps) * unit
    return out


def sf_images(paths: list[Path], gts: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    pipe = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer=kind))
    out, ms = np.full((len(paths), ibug.K, 2), np.nan), []
    for i, (p, g) in enumerate(zip(paths, gts, strict=True)):
        img = read_image(p)
        pipe.reset()
        t0 = time.perf_counter()
        res = pipe.update(img, 0.0)
        ms.append((time.perf_counter() - t0) * 1000)
        if res.faces:
            out[i] = min((f.landmarks for f in res.faces), key=lambda q: np.linalg.norm(q.mean(0) - g.mean(0)))
    return out, np.array(ms)


def sf_still(bases: np.ndarray, sigma: float, seed: int, length: int, kind: str) -> np.ndarray:
    pipe = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer=kind))
    out = np.full((len(bases), length, ibug.K, 2), np.nan)
    for i, b in enumerate(bases):
        pipe.reset()
        for t in range(length):
            res = pipe.update(still_frame(b, sigma, seed, i, t), t * 40.0)
            if res.faces:
                out[i, t] = res.faces[0].landmarks
    return out


def nme_pct(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return 100 * metrics.nme(pred, gt)


def part_fit(args, res: dict) -> None:
    train, _ = ibug.training_split(args.data)
    files = train[::3]
    gts = np.stack([ibug.read_pts(f.with_suffix(".pts")) for f in files]).astype(np.float64)
    t0 = time.perf_counter()
    mesh = peer("mediapipe", {"kind": "images", "paths": [str(f) for f in files]}, args.work)["points"]
    m = MeshTo68.fit(mesh, gts)
    m.save(args.work / "facemesh68.json")
    ok = np.isfinite(mesh).all(axis=(1, 2))
    fit_nme = float(np.mean(nme_pct(m(mesh[ok]), gts[ok])))
    res["fit"] = {"images": len(files), "found": int(ok.sum()), "train_nme": fit_nme, "s": time.perf_counter() - t0}
    print(f"fit: FaceMesh found {ok.sum()}/{len(files)} training faces; 468->68 map NME on them {fit_nme:.2f}%", flush=True)


def part_accuracy(args, res: dict) -> None:
    mapper = MeshTo68.load(args.work / "facemesh68.json")
    _, val = ibug.training_split(args.data)
    gts = np.stack([ibug.read_pts(f.with_suffix(".pts")) for f in val]).astype(np.float64)
    preds = {"dlib": peer("dlib", {"kind": "images", "paths": [str(f) for f in val]}, args.work)["points"],
             "MediaPipe FaceMesh": mapper(peer("mediapipe", {"kind": "images", "paths": [str(f) for f in val]}, args.work)["points"])}
    for name, kind in (("stableface", "none"), ("stableface ConvLSTM", "convlstm")):
        preds[name] = sf_images(val, gts, kind)[0]
    found = {k: np.isfinite(v).all(axis=(1, 2)) for k, v in preds.items()}
    common = np.logical_and.reduce(list(found.values()))
    table = {}
    for name, p in preds.items():
        e = nme_pct(p, gts)
        table[name] = {"found": int(found[name].sum()), "nme_common": float(e[common].mean()),
                       "median_common": float(np.median(e[common])), "nme_own": float(e[found[name]].mean()),
                       "fr10_common": float(np.mean(e[common] > 10) * 100), "auc10_common": 100 * metrics.auc(e[common] / 100, 0.10)}
    res["accuracy"] = {"images": len(val), "common": int(common.sum()), "methods": table}
    if args.plots:
        from stableface.plots import error_cdf

        error_cdf({k: nme_pct(p, gts)[common] / 100 for k, p in preds.items()}, args.plots / "peers_cdf.png",
                  f"{common.sum()} validation faces found by every tool")


def part_clips(args, res: dict) -> None:
    mapper = MeshTo68.load(args.work / "facemesh68.json")
    rows = {}
    for v in sorted(args.videos.glob("*.mp4")):
        tracks = run_tracks(str(v), {k: Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer=s))
                                     for k, s in SF.items()})
        tracks["dlib"] = peer("dlib", {"kind": "video", "path": str(v)}, args.work)["points"]
        tracks["MediaPipe FaceMesh"] = mapper(peer("mediapipe", {"kind": "video", "path": str(v)}, args.work)["points"])
        for k in ("dlib", "MediaPipe FaceMesh"):
            tracks[k + " + One Euro"] = one_euro(tracks[k])
        ref = tracks["stableface"]
        iod = float(ibug.interocular(ref[np.isfinite(ref).all(axis=(1, 2))].mean(0)))
        row = {}
        for k, tr in tracks.items():
            ok = np.isfinite(tr).all(axis=(1, 2))
            row[k] = {"frames": int(ok.sum()), "of": len(tr),
                      "allan_pct_iod": 100 * metrics.allan_deviation(tr[ok]) / iod if ok.sum() > 1 else float("nan")}
        rows[v.name] = row
        print(f"  {v.name}: " + ", ".join(f"{k} {r['allan_pct_iod']:.3f}" for k, r in row.items()), flush=True)
    res["clips"] = rows


def part_still(args, res: dict) -> None:
    mapper = MeshTo68.load(args.work / "facemesh68.json")
    _, val = ibug.training_split(args.data)
    val = val[::5][:args.still_images]
    bases = np.stack([pad(read_image(f)) for f in val])
    gts = np.stack([ibug.read_pts(f.with_suffix(".pts")) for f in val]).astype(np.float64)
    np.save(args.work / "bases.npy", bases)
    out = {}
    for sigma in (0.0, 5.0, 10.0, 20.0):
        job = {"kind": "still", "path": str(args.work / "bases.npy"), "sigma": sigma, "seed": 7, "length": args.length}
        d, m = peer("dlib", job, args.work), peer("mediapipe", job, args.work)
        want = int(still_frame(bases[0], sigma, 7, 0, 1).astype(np.int64).sum())
        if int(d["checksum"]) != want or int(m["checksum"]) != want:
            raise SystemExit("the peers' venv made different noise frames: numpy's generator differs between the venvs")
        tracks = {"dlib": d["points"], "MediaPipe FaceMesh": mapper(m["points"])}
        for k in ("dlib", "MediaPipe FaceMesh"):
            tracks[k + " + One Euro"] = np.stack([one_euro(s) for s in tracks[k]])
        for k, s in SF.items():
            tracks[k] = sf_still(bases, sigma, 7, args.length, s)
        row = {}
        for k, tr in tracks.items():
            ok = np.isfinite(tr).all(axis=(1, 2, 3))  # sequences tracked on every frame
            m = metrics.sequence_metrics(tr[ok], np.repeat(gts[ok][:, None], args.length, axis=1))
            row[k] = {"sequences": int(ok.sum()), "of": len(tr), "nme": m["nme"], "jitter": m["jitter"]}
        out[str(sigma)] = row
        print(f"  sigma {sigma:g}: " + ", ".join(f"{k} {r['jitter']:.3f}" for k, r in row.items()), flush=True)
    res["still"] = {"images": len(val), "length": args.length, "sigmas": out}


def part_speed(args, res: dict) -> None:
    clip = args.videos / "WDA_KatieHill_000.mp4"
    frames = []
    cap = cv2.VideoCapture(str(clip))
    t0 = time.perf_counter()
    while len(frames) < 200:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    decode_ms = (time.perf_counter() - t0) * 1000 / len(frames)
    cap.release()
    rows = {"decode only (OpenCV)": {"with_detection_ms": decode_ms, "without_detection_ms": decode_ms}}
    for name in ("dlib", "mediapipe"):
        r = peer(name, {"kind": "speed", "path": str(clip), "frames": len(frames)}, args.work)
        rows["MediaPipe FaceMesh" if name == "mediapipe" else "dlib"] = {k: float(v) for k, v in r.items()}
    for k, s in SF.items():
        every = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer=s, redetect_every=1))
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            every.update(f, i * 40.0)
        with_det = (time.perf_counter() - t0) * 1000 / len(frames)
        pipe = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer=s))
        first = pipe.update(frames[0], 0.0).faces[0].landmarks
        box = box_from_landmarks(first, CROP_SCALE)
        stab = pipe.new_stabilizer()
        t0 = time.perf_counter()
        for i, f in enumerate(frames):  # the crop given: backbone + stabilizer + decode
            crop = warp(f, box, pipe.backbone.size)
            hm = pipe.backbone(crop[None])[0]
            stab.update(hm, box, i * 40.0, crop)
        without = (time.perf_counter() - t0) * 1000 / len(frames)
        tracked = Pipeline.from_weights(device="cpu", config=PipelineConfig(stabilizer=s))
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            tracked.update(f, i * 40.0)
        rows[k] = {"with_detection_ms": with_det, "without_detection_ms": without,
                   "default_tracking_ms": (time.perf_counter() - t0) * 1000 / len(frames)}
    res["speed"] = {"clip": clip.name, "frames": len(frames), "rows": rows}


def wide_table(first: str, rows: dict[str, dict], cell, count: str) -> None:
    """A markdown table, one column per tool; a tool that covered fewer than all items says how many."""
    names = list(next(iter(rows.values())))
    print(f"| {first} | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for key, row in rows.items():
        print(f"| {key} | " + " | ".join(cell(row[n]) + ("" if row[n][count] == row[n]["of"] else f" ({row[n][count]}/{row[n]['of']})")
                                         for n in names) + " |")


def report(res: dict) -> None:
    if "fit" in res:
        f = res["fit"]
        print(f"\nFaceMesh 468->68 map: fitted on {f['found']} of {f['images']} training images, NME there {f['train_nme']:.2f}%")
    if "accuracy" in res:
        a = res["accuracy"]
        print(f"\n### Accuracy: {a['images']} validation images, {a['common']} found by every tool (NME % IOD)\n")
        print("| tool | faces found | NME (common) | median | FR@10% | AUC@10% | NME (own detections) |")
        print("|---|---|---|---|---|---|---|")
        for k, m in a["methods"].items():
            print(f"| {k} | {m['found']}/{a['images']} | {m['nme_common']:.2f} | {m['median_common']:.2f} | {m['fr10_common']:.2f} "
                  f"| {m['auc10_common']:.2f} | {m['nme_own']:.2f} |")
    if "clips" in res:
        names = list(next(iter(res["clips"].values())))
        print("\n### Stability on the shared clips: Allan deviation (% IOD; lower is steadier)\n")
        wide_table("clip", res["clips"], lambda r: f"{r['allan_pct_iod']:.3f}", "frames")
        mean = {n: np.nanmean([r[n]["allan_pct_iod"] for r in res["clips"].values()]) for n in names}
        print("| **mean** | " + " | ".join(f"**{mean[n]:.3f}**" for n in names) + " |")
    if "still" in res:
        s = res["still"]
        print(f"\n### Still faces with pixel noise: {s['images']} validation images x {s['length']} frames; "
              "jitter / NME (% IOD)\n")
        wide_table("noise sigma", {f"{float(k):g}": v for k, v in s["sigmas"].items()},
                   lambda r: f"{r['jitter']:.3f} / {r['nme']:.2f}", "sequences")
    if "speed" in res:
        sp = res["speed"]
        print(f"\n### Speed: ms per frame on {sp['clip']} ({sp['frames']} frames, 512x512)\n")
        print("| tool | detection every frame | without detection | stableface default (re-detect every 10) |")
        print("|---|---|---|---|")
        for k, r in sp["rows"].items():
            extra = f"{r['default_tracking_ms']:.1f}" if "default_tracking_ms" in r else "-"
            print(f"| {k} | {r['with_detection_ms']:.1f} | {r['without_detection_ms']:.1f} | {extra} |")


def plot_still(res: dict, path: Path) -> None:
    from stableface.plots import _plt, save

    sig = res["still"]["sigmas"]
    xs = [float(k) for k in sig]
    fig, ax = _plt().subplots(figsize=(6, 4), dpi=120)
    for name in next(iter(sig.values())):
        ax.plot(xs, [sig[k][name]["jitter"] for k in sig], marker="o", ls="--" if "One Euro" in name else "-", label=name)
    ax.set(xlabel="pixel noise sigma", ylabel="jitter (% IOD)", title="still faces: landmark jitter vs noise")
    save(fig, ax, path, fontsize=7)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT / "shared" / "data" / "300w_train")
    ap.add_argument("--videos", type=Path, default=ROOT / "shared" / "videos")
    ap.add_argument("--work", type=Path, default=Path("runs/peers"))
    ap.add_argument("--parts", default="fit,accuracy,clips,still,speed")
    ap.add_argument("--plots", type=Path, default=None, help="Write the accuracy CDF here (PNG).")
    ap.add_argument("--still-images", type=int, default=40)
    ap.add_argument("--length", type=int, default=25)
    ap.add_argument("--report-only", action="store_true", help="Print the tables of WORK/results.json and exit.")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.plots:
        args.plots.mkdir(parents=True, exist_ok=True)
    path = args.work / "results.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    if not args.report_only:
        ensure_venv()
        for part in [p.strip() for p in args.parts.split(",") if p.strip()]:
            t0 = time.perf_counter()
            print(f"== {part}", flush=True)
            globals()[f"part_{part}"](args, res)
            path.write_text(json.dumps(res, indent=1))
            print(f"   {part} took {time.perf_counter() - t0:.0f} s", flush=True)
    if args.plots and "still" in res:
        plot_still(res, args.plots / "peers_still.png")
    report(res)


if __name__ == "__main__":
    main()
