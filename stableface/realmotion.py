"""Annotated video with real motion and exact ground truth, rendered from annotated stills.

The motion comes from real talking-head clips: each clip is tracked (raw backbone), smoothed over
time so that only the head and face motion is left, and split into a similarity per frame (head
pose in the image plane) and a non-rigid residual (speech, expression, the 2-D trace of yaw).
That motion is varied (speed, amplitude, reversed time, the rigid part of one clip with the
non-rigid part of another) and applied to an annotated still with a piecewise-affine warp over
a triangulation of its 68 points plus border points that follow the head. The frames get
lighting drift, motion blur and sensor noise and go through a real video codec (H.264 at a
given bit rate, through PyAV), so blocking and temporally correlated noise are there. The ground
truth is the warped annotation: exact, 68 iBUG points per frame.

Coordinates are continuous pixel coordinates (origin at the top-left pixel's top-left corner),
as everywhere in stableface. Everything is seeded: the same spec and seed give the same clips.

    clips = motion_library(videos, pipeline)             # name -> MotionClip (cached)
    frames, gt = render(sample, script, RenderSpec(), rng)
    write_clip("out/clip000.mp4", frames, gt, fps=25, bitrate=1.5e6)   # also writes out/clip000.npy
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stableface import ibug
from stableface.crop import apply, invert as inverse
from stableface.grid import compose
from stableface.stabilizer import fit_similarity


# ---------------------------------------------------------------- similarity transforms

def to_params(m: np.ndarray) -> np.ndarray:
    """(log scale, angle, tx, ty) of a similarity."""
    scale = np.hypot(m[0, 0], m[1, 0])
    return np.array([np.log(scale), np.arctan2(m[1, 0], m[0, 0]), m[0, 2], m[1, 2]])


def from_params(p: np.ndarray) -> np.ndarray:
    s, a = np.exp(p[0]), p[1]
    return np.array([[s * np.cos(a), -s * np.sin(a), p[2]], [s * np.sin(a), s * np.cos(a), p[3]]])


# ---------------------------------------------------------------- motion from real clips

def smooth_track(track: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Zero-phase Gaussian over time of a (T, K, 2) track (edges reflected); NaN frames are filled first."""
    t = np.array(track, np.float64)
    ok = np.isfinite(t).all(axis=(1, 2))
    if not ok.any():
        raise ValueError("no tracked frame to take the motion from")
    idx = np.arange(len(t))
    flat = t.reshape(len(t), -1)
    for j in range(flat.shape[1]):
        flat[:, j] = np.interp(idx, idx[ok], flat[ok, j])
    r = int(np.ceil(3 * sigma))
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    w /= w.sum()
    padded = np.pad(flat, ((r, r), (0, 0)), mode="reflect")
    out = np.stack([np.convolve(padded[:, j], w, mode="valid") for j in range(flat.shape[1])], axis=1)
    return out.reshape(t.shape)


@dataclass(frozen=True)
class MotionClip:
    """A clip's motion: per-frame similarity parameters relative to its mean pose, and the
    non-rigid residual in the frame of its mean shape (units of the mean inter-ocular distance)."""

    name: str
    pose: np.ndarray  # (T, 4): log scale, angle, tx, ty (tx, ty in mean-IOD units), relative to the mean pose
    residual: np.ndarray  # (T, K, 2), mean-IOD units
    fps: float = 25.0

    @classmethod
    def from_track(cls, name: str, track: np.ndarray, fps: float = 25.0, sigma: float = 2.0) -> MotionClip:
        t = smooth_track(track, sigma)
        mean = t.mean(axis=0)
        iod = float(ibug.interocular(mean))
        unit = (mean - mean.mean(axis=0)) / iod
        d = unit[ibug.RIGHT_EYE_OUTER] - unit[ibug.LEFT_EYE_OUTER]
        c, s = np.cos(-np.arctan2(d[1], d[0])), np.sin(-np.arctan2(d[1], d[0]))
        unit = unit @ np.array([[c, -s], [s, c]]).T  # canonical mean shape: IOD 1, centred, eyes level
        sims = [fit_similarity(unit, x) for x in t]  # canonical -> frame
        ref = from_params(np.mean([to_params(m) for m in sims], axis=0))
        pose, resid = [], []
        for m, x in zip(sims, t):
            rel = compose(m, inverse(ref))  # mean pose -> this frame's pose, in image coordinates
            # express the relative pose in the reference frame: ref^-1 o rel o ref
            p = to_params(compose(inverse(ref), compose(rel, ref)))
            pose.append(p)
            resid.append(apply(inverse(m), x) - unit)
        return cls(name, np.array(pose), np.array(resid), fps)

    def __len__(self) -> int:
        return len(self.pose)


@dataclass(frozen=True)
class MotionScript:
    """What one rendered clip does: poses (T, 4) and residuals (T, K, 2), both as in ``MotionClip``."""

    pose: np.ndarray
    residual: np.ndarray
    label: str


def _resample(x: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Linear interpolation of (T, ...) at fractional ``times``, ping-ponging past the ends."""
    n = len(x)
    period = 2 * (n - 1) if n > 1 else 1
    tt = np.mod(times, period)
    tt = np.where(tt > n - 1, period - tt, tt)
    i0 = np.clip(np.floor(tt).astype(int), 0, n - 1)
    i1 = np.clip(i0 + 1, 0, n - 1)
    f = (tt - i0).reshape(-1, *([1] * (x.ndim - 1)))
    return x[i0] * (1 - f) + x[i1] * f


def make_script(clips: Sequence[MotionClip], n_frames: int, rng: np.random.Generator, vary: bool = True) -> MotionScript:
    """A motion script of ``n_frames`` from one clip (or, with ``vary``, sometimes the rigid part of
    one clip and the non-rigid part of another), at a random speed and amplitude, sometimes reversed."""
    a = clips[int(rng.integers(len(clips)))]
    b = clips[int(rng.integers(len(clips)))] if vary and rng.random() < 0.3 else a
    speed = float(rng.uniform(0.7, 1.5)) if vary else 1.0
    rigid_amp = float(rng.uniform(0.6, 1.5)) if vary else 1.0
    shape_amp = float(rng.uniform(0.7, 1.3)) if vary else 1.0
    reverse = bool(vary and rng.random() < 0.3)
    start_a, start_b = rng.uniform(0, len(a)), rng.uniform(0, len(b))
    times = np.arange(n_frames) * speed
    if reverse:
        times = times[::-1]
    pose = _resample(a.pose, start_a + times)
    pose = (pose - pose.mean(axis=0)) * rigid_amp  # relative to this script's own mean pose
    resid = _resample(b.residual, start_b + times) * shape_amp
    label = f"{a.name}" + (f"+{b.name}" if b is not a else "") + f" x{speed:.2f} amp {rigid_amp:.2f}/{shape_amp:.2f}" \
        + (" reversed" if reverse else "")
    return MotionScript(pose, resid, label)


# ---------------------------------------------------------------- rendering

@dataclass(frozen=True)
class RenderSpec:
    width: int = 720
    height: int = 576
    fps: float = 25.0
    upscale: float = 2.0  # the stills are small: faces ~300 px wide after this, like SD interview footage
    background: int = 110
    noise: tuple[float, float] = (2.0, 6.0)  # sensor noise sigma (of 255), per clip
    exposure: float = 0.5  # motion blur: fraction of the frame interval the shutter is open
    light_drift: float = 0.12  # peak relative change of brightness over the clip
    bitrate: tuple[float, float] = (0.8e6, 2.5e6)  # H.264 bits per second, per clip


def _border(w: int, h: int, margin: float = 0.6) -> np.ndarray:
    mx, my = margin * w, margin * h
    xs, ys = [-mx, w / 2, w + mx], [-my, h / 2, h + my]
    return np.array([[x, y] for y in ys for x in xs if not (x == w / 2 and y == h / 2)], np.float64)


def triangulate(points: np.ndarray, bounds: tuple[float, float, float, float]) -> np.ndarray:
    """Delaunay triangles (M, 3) of point indices (OpenCV's Subdiv2D)."""
    x0, y0, x1, y1 = bounds
    sub = cv2.Subdiv2D((int(np.floor(x0)) - 2, int(np.floor(y0)) - 2, int(np.ceil(x1 - x0)) + 5, int(np.ceil(y1 - y0)) + 5))
    for p in points:
        sub.insert((float(p[0]), float(p[1])))
    tris = []
    for t in sub.getTriangleList().reshape(-1, 3, 2):
        idx = [int(np.argmin(((points - v) ** 2).sum(1))) for v in t]
        if len(set(idx)) == 3 and np.allclose(points[idx], t, atol=1e-3):
            tris.append(idx)
    return np.array(tris, np.int32)


class PiecewiseAffine:
    """Warps an image so that ``src`` points land on ``dst`` points, triangle by triangle (one remap)."""

    def __init__(self, src: np.ndarray, triangles: np.ndarray, size: tuple[int, int]) -> None:
        self.src, self.tris, (self.w, self.h) = np.asarray(src, np.float64), triangles, size
        ys, xs = np.mgrid[0:self.h, 0:self.w]
        self.px = (xs + 0.5).astype(np.float32), (ys + 0.5).astype(np.float32)

    def __call__(self, image: np.ndarray, dst: np.ndarray) -> np.ndarray:
        index = np.zeros((self.h, self.w), np.int32)
        coef = np.zeros((len(self.tris) + 1, 2, 3), np.float32)
        coef[0] = [[1, 0, 0], [0, 1, 0]]
        for i, t in enumerate(self.tris):
            d, s = dst[t], self.src[t]
            a = np.hstack([d, np.ones((3, 1))])
            if abs(np.linalg.det(a)) < 1e-9:
                continue
            coef[i + 1] = np.linalg.solve(a, s).T  # target -> source
            cv2.fillConvexPoly(index, np.round(d * 16).astype(np.int32), i + 1, lineType=cv2.LINE_8, shift=4)
        c = coef[index]  # (H, W, 2, 3)
        x, y = self.px
        mx = c[..., 0, 0] * x + c[..., 0, 1] * y + c[..., 0, 2] - 0.5
        my = c[..., 1, 0] * x + c[..., 1, 1] * y + c[..., 1, 2] - 0.5
        return cv2.remap(image, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _motion_blur(img: np.ndarray, v: np.ndarray, exposure: float) -> np.ndarray:
    length = float(np.hypot(*v)) * exposure
    if length < 1.0:
        return img
    n = int(np.ceil(length)) | 1
    k = np.zeros((n, n), np.float32)
    c = n // 2
    d = v / max(np.hypot(*v), 1e-9) * (length / 2)
    cv2.line(k, (int(round(c - d[0])), int(round(c - d[1]))), (int(round(c + d[0])), int(round(c + d[1]))), 1.0, 1)
    return cv2.filter2D(img, -1, k / k.sum())


def render(image: np.ndarray, points: np.ndarray, script: MotionScript, spec: RenderSpec,
           rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames (BGR uint8, spec size) and ground truth (T, K, 2) of ``script`` applied to a still.

    The still is upscaled by ``spec.upscale`` and centred on a flat canvas; the face's mean pose
    is the still's. Pixel noise and lighting drift are applied here; the codec comes at writing.
    """
    w, h = spec.width, spec.height
    big = cv2.resize(image, None, fx=spec.upscale, fy=spec.upscale, interpolation=cv2.INTER_CUBIC)
    canvas = np.full((h, w, 3), spec.background, np.uint8)
    ox, oy = (w - big.shape[1]) / 2, (h - big.shape[0]) / 2
    x0, y0 = int(round(ox)), int(round(oy))
    sx0, sy0 = max(0, -x0), max(0, -y0)
    dx0, dy0 = max(0, x0), max(0, y0)
    ww, hh = min(big.shape[1] - sx0, w - dx0), min(big.shape[0] - sy0, h - dy0)
    canvas[dy0:dy0 + hh, dx0:dx0 + ww] = big[sy0:sy0 + hh, sx0:sx0 + ww]
    still = np.asarray(points, np.float64) * spec.upscale + [x0, y0]
    iod = float(ibug.interocular(still))
    centre = still.mean(axis=0)
    # canonical (mean-IOD units, centred) -> still: rotation of the still's eyes, scale iod
    d = still[ibug.RIGHT_EYE_OUTER] - still[ibug.LEFT_EYE_OUTER]
    ang = np.arctan2(d[1], d[0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    border = _border(w, h)
    src = np.vstack([still, border])
    warp = PiecewiseAffine(src, triangulate(src, (border[:, 0].min(), border[:, 1].min(), border[:, 0].max(),
                                                  border[:, 1].max())), (w, h))
    sigma = float(rng.uniform(*spec.noise))
    phase, period = rng.uniform(0, 2 * np.pi), rng.uniform(3, 8) * spec.fps
    tint = rng.uniform(-1, 1, size=3) * spec.light_drift / 4  # colour cast, and a gradient that drifts across the face
    grad = rng.uniform(-1, 1, size=2) * spec.light_drift * 2 / 3
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xx / w - 0.5) * grad[0] + (yy / h - 0.5) * grad[1])[..., None]
    frames, gts, prev = [], [], None
    for t in range(len(script.pose)):
        deformed = still + (script.residual[t] @ rot.T) * iod
        p = script.pose[t]
        # the relative pose acts about the face's centre, translation in IOD units along the still's axes
        m = from_params(np.array([p[0], p[1], 0.0, 0.0]))
        shift = rot @ p[2:] * iod
        target = (deformed - centre) @ m[:, :2].T + centre + shift
        sim = fit_similarity(still, target)
        dst = np.vstack([target, apply(sim, border)])
        img = warp(canvas, dst).astype(np.float32)
        gain = 1.0 + spec.light_drift * np.sin(2 * np.pi * t / period + phase)
        img = img * (gain * (1.0 + tint) + ramp * np.sin(2 * np.pi * t / (2 * period) + phase))
        if prev is not None and spec.exposure > 0:
            img = _motion_blur(img, (target - prev).mean(axis=0), spec.exposure)
        img = img + rng.normal(0.0, sigma, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        gts.append(target)
        prev = target
    return frames, np.array(gts, np.float32)


def write_clip(path: str | Path, frames: Sequence[np.ndarray], gt: np.ndarray, fps: float = 25.0,
               bitrate: float = 1.5e6, codec: str = "libx264") -> Path:
    """Encode ``frames`` (H.264 through PyAV, yuv420p) to ``path`` and the ground truth beside it as ``.npy``."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - the benchmark's own requirement
        raise RuntimeError("rendering real-motion clips needs PyAV: pip install av") from exc
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    h, w = frames[0].shape[:2]
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.bit_rate = int(bitrate)
        stream.options = {"preset": "veryfast", "g": str(int(2 * fps))}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)
    np.save(path.with_suffix(".npy"), gt.astype(np.float32))
    return path


def read_clip(path: str | Path) -> list[np.ndarray]:
    """Decoded frames of a clip, through OpenCV (the pipeline decodes files with PyAV; both use FFmpeg's
    H.264 decoder, and the shipped stabilizer's training sequences were read this way)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames


# ---------------------------------------------------------------- clip sets

VALIDATION_MOTION = ("WDA_KatieHill_000", "WDA_BobMenendez_000", "RD_Radio34_000")
"""Clips whose motion drives the benchmark; the others drive ``finetune``'s real-motion sequences."""


def raw_tracker(weights: str | Path | None = None, threads: int = 1) -> Callable[[Path], np.ndarray]:
    """``path -> (T, K, 2)`` raw landmarks of the first face (NaN where none), for ``motion_library``."""
    from stableface.pipeline import Pipeline, PipelineConfig

    pipe = Pipeline.from_weights(weights, device="cpu", config=PipelineConfig(stabilizer="none"), threads=threads)

    def track(path: Path) -> np.ndarray:
        rows = [r.faces[0].landmarks if r.faces else np.full((pipe.backbone.k, 2), np.nan) for r in pipe.track(str(path))]
        return np.array(rows, np.float64)

    return track


def motion_library(videos: Path, tracker: Callable[[Path], np.ndarray], cache: Path | None = None) -> dict[str, MotionClip]:
    """MotionClips of every video in ``videos``; ``tracker(path) -> (T, 68, 2)`` raw track (NaN where no face).

    Tracks are cached in ``cache`` as ``NAME.track.npy`` (they are derived from the clips: never commit them).
    """
    out = {}
    for v in sorted(Path(videos).glob("*.mp4")):
        cached = cache / f"{v.stem}.track.npy" if cache else None
        if cached is not None and cached.exists():
            track = np.load(cached)
        else:
            track = tracker(v)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.save(cached, track)
        cap = cv2.VideoCapture(str(v))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        cap.release()
        out[v.stem] = MotionClip.from_track(v.stem, track, fps)
    return out


def split_motion(library: dict[str, MotionClip]) -> tuple[list[MotionClip], list[MotionClip]]:
    """(training, validation) motion clips: validation is ``VALIDATION_MOTION``."""
    val = [c for n, c in library.items() if n in VALIDATION_MOTION]
    train = [c for n, c in library.items() if n not in VALIDATION_MOTION]
    return train, val


# ---------------------------------------------------------------- training sequences

def training_sequences(samples: Sequence, backbone, videos: Path, length: int, per_image: int, seed: int,
                       progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Real-motion training sequences, seen through the crop a tracker would hold.

    The motion of the shared clips that the benchmark does not use, varied, applied to ``samples``
    (``training.data.Sample``: training stills), rendered through H.264 (480x480, 1.5x upscale),
    cut by one crop per sequence placed from the first frame's landmarks (rolled upright, jittered
    like a detector's). Yields ``(crops (T, S, S, 3) uint8, ground truth (T, K, 2) crop pixels)``;
    ``finetune`` trains on them and ``stableface calibrate stabilizer`` measures on them.
    """
    import tempfile

    from stableface.crop import CropBox, box_from_landmarks, to_crop, warp

    lib = motion_library(videos, raw_tracker(backbone.path), Path(tempfile.gettempdir()) / "stableface-motion-cache")
    motion, _ = split_motion(lib)
    if not motion:
        raise ValueError(f"{videos}: no clip whose motion is not held out for the benchmark")
    rng = np.random.default_rng(seed)
    spec = RenderSpec(width=480, height=480, upscale=1.5)
    total, done = len(samples) * per_image, 0
    with tempfile.TemporaryDirectory() as tmp:
        for s in samples:
            for _ in range(per_image):
                script = make_script(motion, length, rng)
                frames, gt = render(s.image, s.points, script, spec, rng)
                path = write_clip(Path(tmp) / "clip.mp4", frames, gt, spec.fps, float(rng.uniform(*spec.bitrate)))
                frames = read_clip(path)[:length]
                done += 1
                if len(frames) < length:
                    continue
                base = box_from_landmarks(gt[0], backbone.crop_scale, rotate=True)
                j = 0.03 * base.side
                box = CropBox(base.cx + rng.normal(0, j), base.cy + rng.normal(0, j), base.side * rng.uniform(0.95, 1.05),
                              base.angle)
                yield np.stack([warp(f, box, backbone.size) for f in frames]), to_crop(gt, box, backbone.size).astype(np.float32)
                if progress:
                    progress(done, total)
