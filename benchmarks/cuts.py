"""Shot cuts on spliced real clips: cuts found, false cuts, the cost of the frame-level test, dissolves.

    python benchmarks/cuts.py [--videos ../shared/videos] [--clips 20] [--seed 0] [--lookahead 8]

Everything runs through the whole pipeline (``Pipeline.update``: the ``ShotDetector`` with the
pipeline's landmark confirmation, real detector and backbone), with the configuration of
``stableface track`` on files (``--lookahead 8``; ``--lookahead 0 --stabilizer convlstm`` is
``webcam``'s). It builds ``--clips`` clips spliced from the shared clips at known cut frames
(seeded): 3-4 segments of 20-80 frames each; each cut goes to a different clip, or (half of
them) to the same clip at least 2 s away, a jump cut. ``obama.mp4`` (1280 x 720) enters the
splices centre-cropped and resized to 512 x 512 like the others.

It prints:

* cuts found within 1 frame of the true cut (one-to-one), by kind; false cuts in the splices;
* false cuts per 1,000 frames on the unspliced clips, and, as a harder check that the
  thresholds were not tuned on, on the same clips played backwards and at 2x speed;
* the cost of the frame-level test (``ShotDetector.update`` without confirmation) per frame,
  as a ratio to decoding the same frames (the machine's speed drifts: the ratio is the figure),
  and how often the landmark confirmation ran;
* what happens at a 10-frame dissolve (``--dissolve``) between two clips, a 25-frame one and a
  fade through black (10 frames out, 10 in): cuts declared, and whether an id passes from one
  person to the other.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stableface.pipeline import Pipeline, PipelineConfig
from stableface.shots import ShotDetector
from stableface.types import Frame
from stableface.video import open_source

SIDE = 512
JUMP_GAP = 50  # frames (2 s at 25 fps) between the two sides of a same-clip cut


def load(videos: Path) -> dict[str, list[np.ndarray]]:
    clips = {}
    for p in sorted(videos.glob("*.mp4")):
        with open_source(str(p)) as src:
            clips[p.stem] = [f.image for f in src]
    return clips


def square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if (h, w) == (SIDE, SIDE):
        return img
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return cv2.resize(img[y:y + s, x:x + s], (SIDE, SIDE), interpolation=cv2.INTER_AREA)


@dataclass
class Splice:
    segments: list[tuple[str, int, int]]  # (clip, first frame, length)
    kinds: list[str]  # per cut: "other clip" or "same clip"

    @property
    def cuts(self) -> list[int]:
        return list(np.cumsum([n for _, _, n in self.segments])[:-1])

    def frames(self, clips: dict[str, list[np.ndarray]]) -> list[np.ndarray]:
        return [square(clips[c][s + i]) for c, s, n in self.segments for i in range(n)]


def make_splices(clips: dict[str, list[np.ndarray]], count: int, seed: int) -> list[Splice]:
    rng = np.random.default_rng(seed)
    names = sorted(clips)
    long = [c for c in names if len(clips[c]) >= 2 * 80 + JUMP_GAP // 2]  # room for a jump cut
    out = []
    for _ in range(count):
        segs: list[tuple[str, int, int]] = []
        kinds: list[str] = []
        for k in range(int(rng.integers(3, 5))):
            n = int(rng.integers(20, 81))
            prev = segs[-1] if segs else None
            same = prev is not None and prev[0] in long and rng.random() < 0.5
            if same:
                c, s0, n0 = prev
                n = min(n, len(clips[c]) // 2 - 10)
                starts = [s for s in range(len(clips[c]) - n + 1) if s >= s0 + n0 + JUMP_GAP or s + n + JUMP_GAP <= s0]
                same = bool(starts)
            if same:
                segs.append((c, int(rng.choice(starts)), n))
                kinds.append("same clip")
                continue
            c = str(rng.choice([x for x in names if prev is None or x != prev[0]]))
            n = min(n, len(clips[c]))
            segs.append((c, int(rng.integers(0, len(clips[c]) - n + 1)), n))
            if prev is not None:
                kinds.append("other clip")
        out.append(Splice(segs, kinds))
    return out


KINDS: Counter[str] = Counter()  # why each cut was declared (ShotDetector.kind)


def run(pipe: Pipeline, images: list[np.ndarray]) -> tuple[list[int], list[set[int]]]:
    """Frames where the pipeline declared a cut, and the face ids of every frame."""
    pipe.reset()
    cuts, ids = [], []
    shot = 0
    for i, img in enumerate(images):
        r = pipe.update(Frame(img, i, i * 40.0))
        if r.shot != shot:
            cuts.append(i)
            shot = r.shot
            KINDS[str(pipe.shots.kind)] += 1
        ids.append({f.id for f in r.faces})
    return cuts, ids


def match(true: list[int], found: list[int], tol: int = 1) -> tuple[list[bool], int]:
    """Which true cuts have a found cut within ``tol`` frames (one-to-one), and how many found cuts are false."""
    left = list(found)
    hit = []
    for c in true:
        near = [f for f in left if abs(f - c) <= tol]
        if near:
            left.remove(min(near, key=lambda f: abs(f - c)))
        hit.append(bool(near))
    return hit, len(left)


def frame_test_cost(clips: dict[str, list[np.ndarray]], videos: Path, repeats: int = 3) -> tuple[float, float]:
    """Seconds per frame: the frame-level test on the 512 x 512 clips, and decoding them (best of ``repeats``)."""
    paths = [p for p in sorted(videos.glob("*.mp4")) if clips[p.stem][0].shape[:2] == (SIDE, SIDE)]
    frames = [img for p in paths for img in clips[p.stem]]
    test = dec = np.inf
    for _ in range(repeats):
        det = ShotDetector()
        t0 = time.perf_counter()
        for img in frames:
            det.update(img)
        test = min(test, (time.perf_counter() - t0) / len(frames))
        t0 = time.perf_counter()
        n = 0
        for p in paths:
            with open_source(str(p)) as src:
                for _ in src:
                    n += 1
        dec = min(dec, (time.perf_counter() - t0) / n)
    return test, dec


def dissolve(a: list[np.ndarray], b: list[np.ndarray], n: int) -> list[np.ndarray]:
    """``a``, then ``n`` frames blending from ``a``'s next frames into ``b``'s, then the rest of ``b``."""
    mix = [cv2.addWeighted(a[len(a) - n + k], 1 - (k + 1) / (n + 1), b[k], (k + 1) / (n + 1), 0) for k in range(n)]
    return a[:len(a) - n] + mix + b[n:]


def fade_through_black(a: list[np.ndarray], b: list[np.ndarray], n: int) -> list[np.ndarray]:
    """``a`` fading out over its last ``n`` frames, then ``b`` fading in over its first ``n``."""
    out = [cv2.convertScaleAbs(f, alpha=1 - (k + 1) / n) for k, f in enumerate(a[len(a) - n:])]
    into = [cv2.convertScaleAbs(f, alpha=(k + 1) / n) for k, f in enumerate(b[:n])]
    return a[:len(a) - n] + out + into + b[n:]


def transitions(pipe: Pipeline, clips: dict[str, list[np.ndarray]], rng: np.random.Generator, count: int, n: int,
                make, label: str) -> None:
    """Gradual transitions of ``n`` frames between two clips (40 frames of each around it)."""
    names = [c for c in sorted(clips) if len(clips[c]) >= 80]
    print(f"\n{label} ({n} frames, 40 frames of each clip around it):")
    blank = [np.zeros((1, 1, 3), np.uint8)] * 40
    span = len(make(blank, blank, n)) - 80 + 2 * n  # frames from the first blended one to the first of b alone
    for _ in range(count):
        a, b = rng.choice(names, 2, replace=False)
        sa, sb = int(rng.integers(0, len(clips[a]) - 40 + 1)), int(rng.integers(0, len(clips[b]) - 40 + 1))
        imgs = make([square(x) for x in clips[a][sa:sa + 40]], [square(x) for x in clips[b][sb:sb + 40]], n)
        found, ids = run(pipe, imgs)
        start = 40 - n  # the first blended frame
        end = start + span  # the first frame of b alone
        before, after = ids[start - 1], ids[end]
        faceless = [i - start for i in range(start, end) if not ids[i]]
        print(f"  {a} -> {b}: cuts at {[f - start for f in found]} (transition frames 0..{end - start - 1}); "
              f"ids {sorted(before)} before, {sorted(after)} after"
              + (" (same id: passed to the other person)" if before & after else "")
              + (f"; no face on transition frames {faceless}" if faceless else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "videos")
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lookahead", type=int, default=8)
    ap.add_argument("--stabilizer", default="convlstm")
    ap.add_argument("--dissolve", type=int, default=10, help="frames of each crossfade")
    ap.add_argument("--dissolves", type=int, default=6, help="how many crossfades (clip pairs)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    clips = load(args.videos)
    cfg = PipelineConfig(stabilizer=args.stabilizer, lookahead=args.lookahead)
    pipe = Pipeline.from_weights(device="cpu", config=cfg, threads=args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.python_version()}; pipeline: stabilizer={pipe.stabilizer_label}, lookahead={args.lookahead}")

    splices = make_splices(clips, args.clips, args.seed)
    hits: dict[str, list[bool]] = {"other clip": [], "same clip": []}
    false_in_splices = frames_spliced = 0
    spanning: Counter = Counter()  # true cuts with a face id on both sides, by kind
    misses = []
    for k, sp in enumerate(splices):
        imgs = sp.frames(clips)
        found, ids = run(pipe, imgs)
        hit, false = match(sp.cuts, found)
        for c, kind, h in zip(sp.cuts, sp.kinds, hit):
            hits[kind].append(h)
            spanning[kind] += bool(ids[c - 1] & ids[c])
            if not h:
                misses.append(f"splice {k} frame {c} ({kind})")
        false_in_splices += false
        frames_spliced += len(imgs)
    allhits = hits["other clip"] + hits["same clip"]
    print(f"\nspliced: {len(splices)} clips, {frames_spliced} frames, {len(allhits)} cuts (seed {args.seed})")
    print(f"  cuts found within 1 frame: {sum(allhits)}/{len(allhits)} = {100 * np.mean(allhits):.1f}%")
    for kind, h in hits.items():
        print(f"    {kind}: {sum(h)}/{len(h)} = {100 * np.mean(h):.1f}%")
    print(f"  false cuts in the splices: {false_in_splices} ({1000 * false_in_splices / frames_spliced:.2f} per 1,000 frames)")
    print(f"  true cuts with an id on both sides: {sum(spanning.values())} (to another person, a cut to another clip: "
          f"{spanning['other clip']}; the same person, a jump cut within a clip: {spanning['same clip']})")
    if misses:
        print("  missed: " + "; ".join(misses))
    print("  why the cuts were declared: " + ", ".join(f"{k} {v}" for k, v in KINDS.most_common()))

    print("\nunspliced clips (false cuts; every frame of each clip):")
    for label, variant in (("as recorded", lambda f: f), ("played backwards", lambda f: f[::-1]),
                           ("2x speed", lambda f: f[::2])):
        frames = false = 0
        where = []
        pipe.shots.candidates = 0
        asked = 0
        for name, imgs in clips.items():
            found, _ = run(pipe, variant(imgs))
            asked += pipe.shots.candidates
            frames += len(variant(imgs))
            false += len(found)
            where += [f"{name}@{f}" for f in found]
        print(f"  {label}: {false} in {frames} frames = {1000 * false / frames:.2f} per 1,000; "
              f"landmark confirmation asked on {asked} frames ({100 * asked / frames:.1f}%)"
              + (f"  [{', '.join(where)}]" if where else ""))

    test, dec = frame_test_cost(clips, args.videos)
    print(f"\nframe-level test: {test * 1000:.3f} ms per 512 x 512 frame; decoding: {dec * 1000:.3f} ms; "
          f"ratio {test / dec:.3f}")

    rng = np.random.default_rng(args.seed + 1)
    transitions(pipe, clips, rng, args.dissolves, args.dissolve, dissolve, "dissolves")
    transitions(pipe, clips, rng, 3, 2 * args.dissolve + 5, dissolve, "longer dissolves")
    transitions(pipe, clips, rng, 3, args.dissolve, fade_through_black, "fades through black")


if __name__ == "__main__":
    main()
