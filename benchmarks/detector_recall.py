"""Face detector recall by head yaw and face size, false positives on real clips, and its cost.

    python benchmarks/detector_recall.py [--data ../shared/data/300w_train] [--videos ../shared/videos]
        [--detectors shipped,short,full,both,...] [--split val|all] [--scales 24,32,48,64,96]

* **Yaw** of each annotated face comes from its 68 ground-truth points (``stableface.pose``: a PnP fit
  of a generic six-point head). Bins of |yaw|: 0-15, 15-30, 30-45, 45-70, over 70 degrees.
* **Single faces**: each image of the split as it is (a square crop, the face about half its
  side). A face is found when a detection's box centre lies within 0.5 x the side of the
  ground-truth landmark box from that box's centre and its side is 0.5-2 x that side (one
  detection per face, greedy by distance).
* **Multi-face frames**: 640x360 frames (the size of the footage in the issue) on a smooth
  textured background, each with up to 4 faces of the split scaled so that the landmark box side
  is S pixels, for each S of ``--scales``. Detections that match no planted face are counted too
  (the crops can show parts of other people's faces, so these are an upper bound on false positives).
* **Landmarks on the multi-face frames**: the shipped pipeline (``--max-faces 4``) on each frame, shown
  as a still clip long enough (2 frames more than there are tiles) for every job of the detector (the
  pipeline spreads the full-range model's tiles over a search and the sweep after it) to have run once:
  NME of every reported face against the planted face it lies on, reports off the face (NME over
  10%), faces not reported, reports on no planted face, and whether a stricter start check (the
  mean landmark score a new track needs) would drop the off-face reports.
* **False positives on the shared clips** (one person each): the reference face of each frame is
  the landmark box of the shipped pipeline's track (``--stabilizer none``); a detection that does
  not match it, or a second one on it, is a false positive. Per 100 frames.
* **Cost**: the detector's median time per call on every 10th frame of the shared clips (the frames
  where ``--redetect-every 10`` runs it while the face is tracked), per frame = that / 10, and as a
  ratio to the short-range model's call on the same frames, timed right after each (this machine is
  shared: its speed drifts, the ratio less). ``--pipeline NAME`` also runs the whole pipeline
  (``PipelineConfig`` defaults, ``--stabilizer none``) with detector NAME and reports its detection
  stage's time per frame.

Detector names: ``shipped`` (what ``Pipeline.from_weights`` builds: short and full merged, and the
full-range model on tiles of two levels; ``detect`` runs every tile), ``shipped-onelevel`` (the previous release's:
tiles of the frame's shorter side only), ``shipped-nolook`` (the release after it: both levels, without
the second look at weak half-tile detections, ``detector.ZoomCheck``), ``shipped-notiles`` (without any tiles), ``short``,
``full``, ``multi`` (the previous release's: short, then full at 0.6 when short finds nothing); ``@T`` after ``short`` or ``full`` sets its
score threshold (``full@0.4``); ``A+B`` runs both and merges their detections (``UnionDetector``);
``tiled-NAME`` runs NAME on the frame and on overlapping square tiles of its shorter side
(``TiledDetector``): ``tiled-full@0.4``, ``short+tiled-full``; ``halftiled-NAME`` runs NAME on tiles of half
that side only, at the model's own score threshold (``shipped-onelevel+halftiled-full``: the half-height tiles
without the shipped level's score threshold of 0.6).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from stableface import ibug, pose
from stableface.detector import (BlazeFace, FaceDetector, MultiRangeDetector, TiledDetector, UnionDetector,
                                 small_face_tiles)
from stableface.types import Detection
from stableface.weights import resolve

BINS = (0, 15, 30, 45, 70, 180)
BIN_NAMES = ("0-15", "15-30", "30-45", "45-70", ">70")
ROOT = Path(__file__).resolve().parent.parent


def build(name: str, device: str = "cpu") -> FaceDetector:
    if name in ("shipped", "shipped-notiles", "shipped-onelevel", "shipped-nolook"):
        from stableface.pipeline import Pipeline

        u = Pipeline.from_weights(device=device, config=_config(detect_tiles=name != "shipped-notiles")).detector
        if name == "shipped-onelevel":  # the 12-06 release's: tiles of the frame's shorter side only, no sweep
            u.levels, u.sweep = u.levels[:1], None
        if name == "shipped-nolook":  # the 12-07 release's: half tiles without the second look at weak detections
            u.levels = small_face_tiles(u.detectors[-1])
        return u
    if "+" in name:
        return UnionDetector([build(part, device) for part in name.split("+")])
    if name.startswith("tiled-"):
        return TiledDetector(build(name[len("tiled-"):], device))
    if name.startswith("halftiled-"):  # tiles of half the frame's shorter side (four times as many)
        return TiledDetector(build(name[len("halftiled-"):], device), tile=0.5, whole=False)
    base, _, thr = name.partition("@")
    t = float(thr) if thr else None
    ws = resolve()
    short = lambda: BlazeFace(ws.detector, device=device, score_threshold=t)  # noqa: E731
    full = lambda: BlazeFace(ws.detector_full, device=device, score_threshold=t)  # noqa: E731
    previous = lambda: BlazeFace(ws.detector_full, device=device, score_threshold=t or 0.6)  # noqa: E731
    kinds = {"short": short, "full": full, "multi": lambda: MultiRangeDetector([short(), previous()])}
    if base not in kinds:
        raise SystemExit(f"unknown detector {name!r}")
    return kinds[base]()


def _config(**kw):
    from stableface.pipeline import PipelineConfig

    return PipelineConfig(stabilizer="none", **kw)


def landmark_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    lo, hi = points.min(0), points.max(0)
    return (lo + hi) / 2, float((hi - lo).max())


def match(dets: list[Detection], faces: list[np.ndarray]) -> tuple[list[bool], int]:
    """Which faces (each (68, 2) points) a detection finds, one-to-one, and how many detections found none."""
    pairs = []
    for j, d in enumerate(dets):
        x0, y0, x1, y1 = d.box
        c, s = np.array([(x0 + x1) / 2, (y0 + y1) / 2]), max(x1 - x0, y1 - y0)
        for i, f in enumerate(faces):
            fc, fs = landmark_box(f)
            dist = float(np.linalg.norm(c - fc))
            if dist < 0.5 * fs and 0.5 * fs <= s <= 2.0 * fs:
                pairs.append((dist / fs, i, j))
    found, used = [False] * len(faces), set()
    for _, i, j in sorted(pairs):
        if not found[i] and j not in used:
            found[i] = True
            used.add(j)
    return found, len(dets) - len(used)


def yaw_bin(yaw: float) -> int:
    return int(np.searchsorted(BINS, abs(yaw), side="right") - 1)


def load_faces(root: Path, split: str) -> list[tuple[np.ndarray, np.ndarray, float]]:
    files = ibug.list_annotated(root)
    if split in ("val", "train"):
        files = ibug.split(files)[split == "val"]
    out = []
    for f in files:
        img = cv2.imread(str(f))
        pts = ibug.read_pts(f.with_suffix(".pts"))
        out.append((img, pts, pose.yaw_degrees(pts, img.shape[1], img.shape[0])))
    return out


def background(rng: np.random.Generator, w: int = 640, h: int = 360) -> np.ndarray:
    layers = [cv2.resize(rng.uniform(40, 200, (h // k, w // k)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
              for k in (40, 40, 40)]
    return np.clip(np.stack(layers, -1), 0, 255).astype(np.uint8)


def compose(faces, scale: int, rng: np.random.Generator, w: int = 640, h: int = 360, per_frame: int = 4):
    """Frames with up to ``per_frame`` faces whose landmark box side is ``scale`` px: (frame, points, yaws)."""
    tile = 2 * scale  # the 300-W crops are 2x the landmark box
    cols, rows = max(1, w // (tile + 8)), max(1, h // (tile + 8))
    order = list(range(len(faces)))
    frames = []
    while order:
        img = background(rng, w, h)
        cells = rng.permutation(cols * rows)[:per_frame]
        pts_list, yaws = [], []
        for cell in cells:
            if not order:
                break
            im, pts, yaw = faces[order.pop(0)]
            _, side = landmark_box(pts)
            k = scale / side
            small = cv2.resize(im, (max(1, round(im.shape[1] * k)), max(1, round(im.shape[0] * k))),
                               interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
            sh, sw = small.shape[:2]
            cx = (cell % cols) * w / cols + rng.uniform(0, max(0.0, w / cols - sw))
            cy = (cell // cols) * h / rows + rng.uniform(0, max(0.0, h / rows - sh))
            x, y = int(min(cx, w - sw)), int(min(cy, h - sh))
            img[y:y + sh, x:x + sw] = small[:h - y, :w - x]
            pts_list.append(pts * [small.shape[1] / im.shape[1], small.shape[0] / im.shape[0]] + [x, y])
            yaws.append(yaw)
        frames.append((img, pts_list, yaws))
    return frames


def recall_table(found: list[tuple[float, bool]]) -> list[str]:
    cells = []
    for b in range(len(BIN_NAMES)):
        hits = [f for y, f in found if yaw_bin(y) == b]
        cells.append(f"{100 * np.mean(hits):.1f}% ({sum(hits)}/{len(hits)})" if hits else "-")
    return cells


def clip_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out


def reference_boxes(frames: list[np.ndarray]) -> list[np.ndarray | None]:
    """The shipped pipeline's landmarks of the one face in each frame (None where it has none)."""
    from stableface.pipeline import Pipeline

    pipe = Pipeline.from_weights(device="cpu", config=_config(redetect_every=10))
    out = []
    for i, f in enumerate(frames):
        res = pipe.update(f, i * 40.0)
        out.append(res.faces[0].landmarks if res.faces else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "300w_train")
    ap.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "videos")
    ap.add_argument("--detectors", default="shipped,multi,short,full,full@0.6,short+full@0.6,short+full@0.3,tiled-short")
    ap.add_argument("--split", choices=("val", "train", "all"), default="val",
                    help="300-W faces: the validation split, the training split (faces the thresholds were not chosen on), or all")
    ap.add_argument("--scales", default="24,32,48,64,96")
    ap.add_argument("--skip", default="", help="sections to skip: single,multi,landmarks,clips")
    ap.add_argument("--pipeline", default="", help="also time the whole pipeline's detection stage with this detector")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    names = [n for n in args.detectors.split(",") if n]
    dets = {n: build(n) for n in names}
    print(f"# {platform.machine()} {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}; "
          f"split={args.split}")
    faces = load_faces(args.data, args.split)
    counts = [sum(yaw_bin(y) == b for _, _, y in faces) for b in range(len(BIN_NAMES))]
    print(f"{len(faces)} faces; abs(yaw) bins {', '.join(f'{n}: {c}' for n, c in zip(BIN_NAMES, counts))}")

    header = "| detector | " + " | ".join(f"yaw {b}" for b in BIN_NAMES)
    if "single" not in skip:
        print("\n## Single faces (the 300-W crops as they are)\n")
        print(header + " | unmatched detections per image |")
        print("|---" * (len(BIN_NAMES) + 2) + "|")
        for n, d in dets.items():
            found, extra = [], 0
            for img, pts, yaw in faces:
                f, x = match(d.detect(img), [pts])
                found.append((yaw, f[0]))
                extra += x
            print(f"| {n} | " + " | ".join(recall_table(found)) + f" | {extra / len(faces):.3f} |")

    if "multi" not in skip:
        scales = [int(s) for s in args.scales.split(",") if s]
        print("\n## Multi-face frames (640x360, up to 4 faces; landmark box side S px)\n")
        print("| detector | S | " + " | ".join(f"yaw {b}" for b in BIN_NAMES) + " | all | unmatched per frame |")
        print("|---" * (len(BIN_NAMES) + 4) + "|")
        for s in scales:
            frames = compose(faces, s, np.random.default_rng(args.seed + s))
            for n, d in dets.items():
                found, extra = [], 0
                for img, pts_list, yaws in frames:
                    f, x = match(d.detect(img), pts_list)
                    found += list(zip(yaws, f))
                    extra += x
                print(f"| {n} | {s} | " + " | ".join(recall_table(found))
                      + f" | {100 * np.mean([f for _, f in found]):.1f}% | {extra / len(frames):.2f} |")

    if "landmarks" not in skip:
        from stableface.pipeline import Pipeline

        scales = [int(s) for s in args.scales.split(",") if s]
        print("\n## Landmarks on the multi-face frames (the shipped pipeline, --max-faces 4, --stabilizer none)\n")
        print("Each frame on its own (a fresh pipeline state) as a still clip of 2 frames more than the detector has tiles "
              "(20 at 640x360), with no periodic re-detection, so that every detector job (both models, each tile of the "
              "full-range one: a search, then the sweep of the other tiles, or a search on each frame until a face is "
              "found) has run; the "
              "faces of the last frame count. A reported face is matched to the planted face whose "
              "landmark centroid is nearest (within half its box side); NME is inter-ocular. Off the face: NME > 10%.\n")
        print("| S | planted | reported | NME of reported (median) | off the face | not reported | reported, no planted face "
              "| landmark score of good / off-face reports (mean) |")
        print("|---|---|---|---|---|---|---|---|")
        # the detector's jobs are spread over frames (a search: both models and one tile; then the sweep:
        # one tile a frame), so each frame is shown as a still clip long enough for all of them to run
        pipe = Pipeline.from_weights(device="cpu", config=_config(max_faces=4, redetect_every=10_000))
        gate = []  # (scale, score, nme) of every matched report
        for s in scales:
            frames = compose(faces, s, np.random.default_rng(args.seed + s))
            planted = reported = unplanted = 0
            errs, good_s, bad_s = [], [], []
            for img, pts_list, _ in frames:
                pipe.reset()
                for i in range(len(pipe.detector.windows(img)) + 2):
                    res = pipe.update(img, 40.0 * i)
                planted += len(pts_list)
                reported += len(res.faces)
                for fc in res.faces:
                    c = fc.landmarks.mean(0)
                    d = [np.linalg.norm(c - p.mean(0)) / landmark_box(p)[1] for p in pts_list]
                    if not d or min(d) > 0.5:
                        unplanted += 1
                        continue
                    gt = pts_list[int(np.argmin(d))]
                    e = float(np.linalg.norm(fc.landmarks - gt, axis=1).mean() / ibug.interocular(gt))
                    errs.append(e)
                    (bad_s if e > 0.10 else good_s).append(fc.score)
                    gate.append((s, fc.score, e))
            errs = np.array(errs)
            print(f"| {s} | {planted} | {reported} | {100 * errs.mean():.2f}% ({100 * np.median(errs):.2f}%) "
                  f"| {(errs > 0.10).sum()} | {planted - len(errs)} | {unplanted} "
                  f"| {np.mean(good_s) if good_s else float('nan'):.3f} / {np.mean(bad_s) if bad_s else float('nan'):.3f} |")
        g = np.array(gate)
        print("\nIf the start check asked for a higher landmark score (reports kept, off-face reports kept):")
        for t in (0.55, 0.6, 0.65, 0.7, 0.75):
            k = g[:, 1] >= t
            print(f"- {t}: {k.sum()} of {len(g)} kept, {(k & (g[:, 2] > 0.10)).sum()} of {(g[:, 2] > 0.10).sum()} off-face kept")
        bad = g[g[:, 2] > 0.10]
        print("\nThe off-face reports (S px, NME % of the inter-ocular distance, landmark score): "
              + ", ".join(f"{s:.0f} px {100 * e:.1f}% {sc:.2f}" for s, sc, e in bad[np.argsort(-bad[:, 2])]))

    if "clips" not in skip:
        videos = sorted(args.videos.glob("*.mp4"))
        clips = [clip_frames(v) for v in videos]
        refs = [reference_boxes(c) for c in clips]
        total = sum(len(c) for c in clips)
        print(f"\n## Shared clips ({len(videos)} clips, {total} frames, one person each)\n")
        print("| detector | false positives per 100 frames | reference face missed per 100 frames "
              "| ms per call (median) | x short-range call | ms per frame at --redetect-every 10 |")
        print("|---|---|---|---|---|---|")
        short = build("short")
        for n, d in dets.items():
            fp = miss = 0
            times, ref_times = [], []
            for frames, ref in zip(clips, refs):
                for i, img in enumerate(frames):
                    t0 = time.perf_counter()
                    found = d.detect(img)
                    if i % 10 == 0:
                        times.append(time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        short.detect(img)
                        ref_times.append(time.perf_counter() - t0)
                    f, x = match(found, [ref[i]] if ref[i] is not None else [])
                    fp += x
                    miss += ref[i] is not None and not f[0]
            ms, ref_ms = float(np.median(times) * 1000), float(np.median(ref_times) * 1000)
            print(f"| {n} | {100 * fp / total:.2f} | {100 * miss / total:.2f} | {ms:.2f} | {ms / ref_ms:.2f} "
                  f"| {ms / 10:.3f} |")
        if args.pipeline:
            from stableface.pipeline import Pipeline

            max_faces = _config().max_faces
            base = Pipeline.from_weights(device="cpu", config=_config(redetect_every=10))
            pipe = Pipeline(build(args.pipeline), base.backbone, base.config)
            n_frames, ref_times = 0, []
            for frames in clips:
                pipe.reset()
                for i, img in enumerate(frames):
                    pipe.update(img, i * 40.0)
                    n_frames += 1
                    if i % 10 == 0:
                        t0 = time.perf_counter()
                        short.detect(img)
                        ref_times.append(time.perf_counter() - t0)
            t, c = pipe.timer.total["detect"], pipe.timer.count["detect"]
            ref_ms = float(np.median(ref_times) * 1000)
            print(f"\nwhole pipeline, detector {args.pipeline}, --redetect-every 10, --max-faces {max_faces}: detection "
                  f"ran on {c} of {n_frames} frames, {1000 * t / n_frames:.3f} ms per frame ({1000 * t / max(c, 1):.2f} ms "
                  f"per call; a short-range call took {ref_ms:.2f} ms (median) in the same run: "
                  f"{1000 * t / n_frames / ref_ms:.3f} short-range calls per frame)")

if __name__ == "__main__":
    main()
