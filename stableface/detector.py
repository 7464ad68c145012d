"""Face detection: the ``FaceDetector`` protocol and MediaPipe BlazeFace run by onnxruntime.

Anchor generation, box decoding and weighted NMS follow MediaPipe's
``face_detection_short_range`` / ``face_detection_full_range`` graphs, in numpy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np

from stableface import onnx_util
from stableface.types import Detection


MIN_SIDE = 64  # px: a frame whose shorter side is smaller gets no tiles (none would hold a face worth a model run)
MAX_ASPECT = 6.0  # nor does a frame more than 6 times as wide as high (or high as wide): a strip, not footage


class PartialDetections(list):
    """Detections of part of the frame (one tile): a tracked face they do not hold may lie outside it,
    so the tracker counts no miss for it (``Tracker.associate(..., misses=False)``)."""


class FaceDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in a BGR frame (H, W, 3) uint8, best first; an empty list when none."""


@dataclass(frozen=True)
class AnchorSpec:
    size: int
    strides: tuple[int, ...]
    per_cell: tuple[int, ...]  # anchors per grid cell for each stride (MediaPipe's layer merging)
    score_threshold: float = 0.5
    nms_iou: float = 0.3


SHORT_RANGE = AnchorSpec(128, (8, 16), (2, 6))
# 0.4, not the 0.6 used before: small faces in wide frames score 0.4-0.6 (benchmarks/detector_recall.py)
FULL_RANGE = AnchorSpec(192, (4,), (1,), score_threshold=0.4)


def anchors(spec: AnchorSpec) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1] (fixed anchor size 1, as MediaPipe's face graphs)."""
    out = []
    for stride, n in zip(spec.strides, spec.per_cell):
        g = int(np.ceil(spec.size / stride))
        ys, xs = np.mgrid[0:g, 0:g]
        centres = np.stack([(xs + 0.5) / g, (ys + 0.5) / g], axis=-1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, n, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's blending NMS: overlapping detections are averaged, weighted by score."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    alive = np.ones(len(scores), dtype=bool)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        overlap = _iou(boxes[i], boxes) > iou
        group = overlap & alive
        alive &= ~group
        w = scores[group][:, None]
        out.append(((boxes[group] * w).sum(0) / w.sum(), (keypoints[group] * w[:, :, None]).sum(0) / w.sum(), float(scores[i])))
    return out


class BlazeFace:
    """MediaPipe BlazeFace (short- or full-range) from an ONNX file.

    The frame is letterboxed to the model's square input, so boxes keep their aspect.
    """

    def __init__(self, path: str | Path, spec: AnchorSpec | None = None, device: str = "auto",
                 score_threshold: float | None = None, threads: int = 0) -> None:
        self.session = onnx_util.session(path, device, threads)
        inp = self.session.get_inputs()[0]
        size = inp.shape[-1] if isinstance(inp.shape[-1], int) else 128
        self.spec = spec or (SHORT_RANGE if size == 128 else FULL_RANGE)
        if self.spec.size != size:
            raise onnx_util.WeightsError(f"{path}: detector input is {size}px, expected {self.spec.size}px")
        self.input_name = inp.name
        self.nchw = inp.shape[1] == 3
        self.anchors = anchors(self.spec)
        self.score_threshold = self.spec.score_threshold if score_threshold is None else score_threshold
        outs = self.session.get_outputs()
        shapes = {o.name: o.shape[-1] for o in outs}
        self.reg_name = next(n for n, s in shapes.items() if s == 16)
        self.cls_name = next(n for n, s in shapes.items() if s == 1)
        n_anchors = outs[0].shape[1]
        if isinstance(n_anchors, int) and n_anchors != len(self.anchors):
            raise onnx_util.WeightsError(f"{path}: {n_anchors} anchors in the model, {len(self.anchors)} expected")

    def with_threshold(self, score_threshold: float) -> BlazeFace:
        """The same model (one onnxruntime session) with another score threshold."""
        other = copy.copy(self)
        other.score_threshold = float(score_threshold)
        return other

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        h, w = image.shape[:2]
        s = self.spec.size
        scale = s / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        canvas = np.zeros((s, s, 3), dtype=np.uint8)
        px, py = (s - nw) // 2, (s - nh) // 2
        canvas[py:py + nh, px:px + nw] = resized
        return canvas, scale, px, py

    def detect(self, image: np.ndarray) -> list[Detection]:
        canvas, scale, px, py = self._letterbox(image)
        x = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0
        x = x.transpose(2, 0, 1)[None] if self.nchw else x[None]
        reg, cls = self.session.run([self.reg_name, self.cls_name], {self.input_name: x})
        reg, cls = reg[0], cls[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(cls, -80.0, 80.0)))
        keep = scores >= self.score_threshold
        if not keep.any():
            return []
        reg, scores, anc = reg[keep], scores[keep], self.anchors[keep]
        s = float(self.spec.size)
        cx = reg[:, 0] / s + anc[:, 0]
        cy = reg[:, 1] / s + anc[:, 1]
        bw, bh = reg[:, 2] / s, reg[:, 3] / s
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        kps = reg[:, 4:16].reshape(-1, 6, 2) / s + anc[:, None, :]
        out = []
        for box, kp, score in weighted_nms(boxes, kps, scores, self.spec.nms_iou):
            # normalised letterbox coordinates -> source pixels
            b = (box.reshape(2, 2) * s - [px, py]) / scale
            k = (kp * s - [px, py]) / scale
            out.append(Detection(box=tuple(float(v) for v in b.reshape(-1)), score=score, keypoints=k.astype(np.float32)))
        return out


def merge(found: list[Detection], iou: float = 0.3) -> list[Detection]:
    """Detections of several runs over one frame, best first; one that overlaps a better one by more
    than ``iou`` is the same face and is dropped. (One inside a better, larger one is kept: on frames
    composed of small faces, a large box on the background holds some of them and outscores them,
    ``benchmarks/detector_recall.py``; a part of a tracked face starts no track, ``Tracker.associate``,
    nor does a part of a face started on the same frame, ``Pipeline``.)"""
    out: list[Detection] = []
    for d in sorted(found, key=lambda d: -d.score):
        if not out or _iou(np.array(d.box), np.array([o.box for o in out])).max() <= iou:
            out.append(d)
    return out


class MultiRangeDetector:
    """Short-range BlazeFace first; the full-range model when it finds nothing (small/far faces)."""

    def __init__(self, detectors: list[FaceDetector]) -> None:
        self.detectors = detectors

    def detect(self, image: np.ndarray) -> list[Detection]:
        for d in self.detectors:
            found = d.detect(image)
            if found:
                return found
        return []


COVERED = 0.75  # a window this much under a tracked face's crop (its upright inner square) is passed over by the sweep


def _share_under(window: tuple[int, int, int], box: tuple[float, ...]) -> float:
    """The share of a square window (x, y, side) that lies under ``box`` (x0, y0, x1, y1)."""
    x, y, side = window
    ix = max(0.0, min(x + side, box[2]) - max(x, box[0]))
    iy = max(0.0, min(y + side, box[3]) - max(y, box[1]))
    return ix * iy / float(side * side)


class UnionDetector:
    """Every detector runs on the frame; their detections are merged (``merge``).

    ``tiles`` (``TiledDetector`` levels, usually the full-range model on tiles of the frame's shorter
    side, then on tiles of half that side) show small faces larger than the whole frame shrunk to the
    model's input: ``detect`` runs every tile of every level. The pipeline's calls spread the tiles
    over frames; the windows are every level's tiles, coarsest level first:

    * ``search`` (no face tracked) runs every detector on the frame and one window, in turn;
    * ``sweep`` runs the next window of the search's turn alone, so that the pipeline can go on
      through the windows once faces are found (a shot's faces are then all found within as many
      frames as there are windows, 3 + 15 at 640x360, plus those of due re-detections); windows
      mostly under a tracked face's crop are passed over;
    * ``redetect`` (the periodic re-detections while faces are tracked) runs one model per call, in
      turn: each detector on the frame, then one window of each level (``short, full, tile 0, half
      tile 0, short, full, tile 1, half tile 1, ...``), so a re-detection costs one model.

    A window's detections come as ``PartialDetections``: they start and confirm faces, and end none.
    A frame that is one tile (square, or a tile of its whole) has no tiles of that level to run."""

    def __init__(self, detectors: list[FaceDetector], tiles: TiledDetector | list[TiledDetector] | None = None) -> None:
        self.detectors = detectors
        self.levels: list[TiledDetector] = [] if tiles is None else [tiles] if isinstance(tiles, TiledDetector) \
            else list(tiles)
        self._turn = 0
        self._search = 0
        self.swept = 0  # windows the last ``sweep`` took

    @property
    def thread_safe(self) -> bool:
        """``detect``/``redetect`` may run in another thread beside this one (the pipeline's reader runs
        re-detections ahead): BlazeFace keeps no state between calls, nor do tiles of it."""
        return all(isinstance(d, BlazeFace) for d in self.detectors) and all(t.thread_safe for t in self.levels)

    def _level_windows(self, image: np.ndarray) -> list[list[tuple[int, int, int]]]:
        h, w = image.shape[:2]
        return [t.tiles(w, h) for t in self.levels]

    def windows(self, image: np.ndarray) -> list[tuple[TiledDetector, tuple[int, int, int]]]:
        """Every level's tiles of this frame, coarsest level first: (level, window)."""
        return [(t, win) for t, wins in zip(self.levels, self._level_windows(image)) for win in wins]

    def _whole(self, image: np.ndarray) -> list[Detection]:
        return [d for det in self.detectors for d in det.detect(image)]

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Every detector on the frame and on every tile."""
        found = self._whole(image)
        for t, w in self.windows(image):
            found += t.detect_window(image, w)
        return merge(found)

    def _next_search(self, turn: int | None) -> int:
        if turn is None:
            turn, self._search = self._search, self._search + 1
        return turn

    def search(self, image: np.ndarray, turn: int | None = None) -> list[Detection]:
        """Every detector on the frame, and the ``turn``-th window in turn (or the next one)."""
        turn = self._next_search(turn)
        found = self._whole(image)
        wins = self.windows(image)
        if wins:
            t, w = wins[turn % len(wins)]
            found += t.detect_window(image, w)
        return merge(found)

    def sweep(self, image: np.ndarray, turn: int | None = None, covered: list[tuple[float, ...]] | tuple = (),
              limit: int = 1) -> list[Detection]:
        """The next window of the search's turn (or the ``turn``-th), alone: partial detections.

        A window ``COVERED`` or more under one of the ``covered`` boxes (tracked faces' crops: a new
        face there would lie mostly under a tracked one) is passed over unrun, and the next one taken,
        up to ``limit`` windows in all; ``self.swept`` says how many this call took (passed over or run)."""
        self.swept = 0
        wins = self.windows(image)
        while wins and self.swept < limit:
            k = self._next_search(None if turn is None else turn + self.swept)
            self.swept += 1
            t, w = wins[k % len(wins)]
            if not any(_share_under(w, b) >= COVERED for b in covered):
                return PartialDetections(merge(t.detect_window(image, w)))
        return PartialDetections()

    def redetect(self, image: np.ndarray, turn: int | None = None) -> list[Detection]:
        """One model's detections: the ``turn``-th job of the cycle (modulo its length), or the next one."""
        if turn is None:
            turn, self._turn = self._turn, self._turn + 1
        levels = [(t, wins) for t, wins in zip(self.levels, self._level_windows(image)) if wins]
        n = len(self.detectors)
        rnd, q = divmod(turn, n + len(levels))
        if q < n:
            return merge(list(self.detectors[q].detect(image)))
        t, wins = levels[q - n]
        return PartialDetections(merge(t.detect_window(image, wins[rnd % len(wins)])))

    def reset(self) -> None:
        self._turn = 0
        self._search = 0


class TiledDetector:
    """A detector on the whole frame and on overlapping square tiles of it, merged (``merge``).

    The detector shrinks the whole frame to its input (128 px for short-range BlazeFace): a face
    60 px wide in a 640x360 frame is 12 px there, below what the model finds. Tiles of
    ``tile`` x the frame's shorter side, overlapping by at least ``overlap`` of a tile, show such
    faces larger. A tile detection cut by the tile's border is dropped (the whole face is in a
    neighbouring tile or in the full frame).
    """

    def __init__(self, detector: FaceDetector, tile: float = 1.0, overlap: float = 0.25, whole: bool = True,
                 min_gain: float = 1.5, min_score: float = 0.0, min_tile: int = 0,
                 check: Callable[[np.ndarray, Detection], bool] | None = None, check_from: float = 0.0) -> None:
        if not 0 < tile <= 1:
            raise ValueError("tile must be in (0, 1]")
        self.detector, self.tile, self.overlap, self.whole, self.min_gain = detector, tile, overlap, whole, min_gain
        # a tile's detections scoring under ``min_score`` are dropped (the half-height tiles of
        # ``small_face_tiles``: textures score up to 0.55 there, benchmarks/detector_recall.py), unless
        # they score ``check_from`` or more and ``check(frame, detection)``, a second look (``ZoomCheck``),
        # finds the face; frames whose tiles would be under ``min_tile`` px get none
        self.min_score, self.min_tile, self.check = min_score, min_tile, check
        self.check_from = min_score if check is None else check_from
        # tiles show a face max(w, h) / side times larger than the whole frame does (both go to one
        # square input): below ``min_gain`` (a 4:3 or 5:4 frame with tiles of its height: 1.33, 1.25)
        # they cost a model run each for little, and ``tiles`` gives none

    def windows(self, width: int, height: int) -> list[tuple[int, int, int]]:
        """(x0, y0, side) of each tile."""
        side = max(1, round(self.tile * min(width, height)))

        def starts(length: int) -> list[int]:
            if length <= side:
                return [0]
            n = int(np.ceil((length - side) / (side * (1 - self.overlap)))) + 1
            return [round(float(v)) for v in np.linspace(0, length - side, n)]

        return [(x, y, side) for y in starts(height) for x in starts(width)]

    def tiles(self, width: int, height: int) -> list[tuple[int, int, int]]:
        """The windows that show the frame at least ``min_gain`` times larger than the whole does: none
        where one tile is the whole frame, the frame is too nearly square (tiles of its shorter side:
        16:9 gains 1.78, three tiles; tiles of half of it gain 2 or more on any frame), or the tiles
        would be under ``min_tile`` px."""
        wins = self.windows(width, height)
        if (len(wins) == 1 and wins[0][2] >= max(width, height)) or wins[0][2] < self.min_tile:
            return []
        if min(width, height) < MIN_SIDE or max(width, height) > MAX_ASPECT * min(width, height):
            return []  # a strip of a frame, not footage: no tiles worth their runs
        return wins if max(width, height) >= self.min_gain * wins[0][2] else []

    @property
    def thread_safe(self) -> bool:
        """No state between calls: a BlazeFace on tiles, checked by nothing or by a thread-safe check."""
        return isinstance(self.detector, BlazeFace) and (self.check is None or getattr(self.check, "thread_safe", False))

    def detect_window(self, image: np.ndarray, window: tuple[int, int, int]) -> list[Detection]:
        """The detector on one tile, in frame coordinates; a detection cut by the tile's border (the
        whole face is in a neighbouring tile or in the full frame) is dropped."""
        h, w = image.shape[:2]
        x, y, side = window
        out = []
        for d in self.detector.detect(image[y:y + side, x:x + side]):
            if d.score < self.check_from:
                continue
            x0, y0, x1, y1 = d.box
            margin = 0.02 * side
            cut = (x0 < margin and x > 0) or (y0 < margin and y > 0) \
                or (x1 > side - margin and x + side < w) or (y1 > side - margin and y + side < h)
            if cut:
                continue
            found = Detection((x0 + x, y0 + y, x1 + x, y1 + y), d.score, d.keypoints + [x, y])
            if d.score >= self.min_score or self.check(image, found):  # (a weak one: the second look)
                out.append(found)
        return out

    def detect(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        found = list(self.detector.detect(image)) if self.whole else []
        for win in self.tiles(w, h) if self.whole else self.windows(w, h):
            found += self.detect_window(image, win)
        return merge(found)


HALF_TILE_SCORE = 0.6  # half-height tiles: a detection needs this score (textures reach 0.55 there; faces of 24-32 px mostly score over 0.6) ...
WEAK_SCORE = 0.35  # ... or this one and the second look (ZoomCheck)
ZOOM = 3.0  # the second look: a square of this x the detection's box around it, where the short-range model ...
ZOOM_SCORES = (0.6, 0.5)  # ... and the full-range one find a face scoring this much


class ZoomCheck:
    """A second look at a weak detection: each of ``looks`` (detector, score) on a square of ``zoom`` x the
    detection's box side around its centre (past the frame's edge: black), shown at the model's input, must
    find a face scoring ``score`` or more, centred within half the box's side of the detection's centre,
    0.5-2 x its side. The looks run in turn; the first that finds nothing ends the check.

    A face of 24 px in a half-height tile scores 0.35-0.6 in the full-range model, as textures do. Seen
    larger (72 px shown at 128: the face 43 px), the short-range model tells most of them apart, and the
    full-range model, seen larger too, the rest (on the validation faces and the shared clips,
    ``benchmarks/detector_recall.py``): one look alone takes a shirt's pattern for a face."""

    def __init__(self, looks: list[tuple[FaceDetector, float]], zoom: float = ZOOM) -> None:
        self.looks, self.zoom = list(looks), float(zoom)
        self.calls = 0  # checks made (approximate when the pipeline's reader thread re-detects ahead)

    @property
    def thread_safe(self) -> bool:
        """Every look is a BlazeFace (no state between calls; ``calls`` aside)."""
        return all(isinstance(d, BlazeFace) for d, _ in self.looks)

    def __call__(self, image: np.ndarray, d: Detection) -> bool:
        self.calls += 1
        x0, y0, x1, y1 = d.box
        s = max(x1 - x0, y1 - y0)
        side = max(8, int(round(self.zoom * s)))
        ox, oy = (x0 + x1 - side) / 2, (y0 + y1 - side) / 2
        crop = cv2.warpAffine(image, np.float32([[1, 0, -ox], [0, 1, -oy]]), (side, side),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return all(self._finds(det, score, crop, side, s) for det, score in self.looks)

    @staticmethod
    def _finds(det: FaceDetector, score: float, crop: np.ndarray, side: int, s: float) -> bool:
        for e in det.detect(crop):
            a0, b0, a1, b1 = e.box
            if e.score >= score and np.hypot((a0 + a1 - side) / 2, (b0 + b1 - side) / 2) < 0.5 * s \
                    and 0.5 * s <= max(a1 - a0, b1 - b0) <= 2 * s:
                return True
        return False


def small_face_tiles(full: FaceDetector, short: FaceDetector | None = None) -> list[TiledDetector]:
    """The tile levels the shipped detector runs the full-range model on: square tiles of the frame's
    shorter side (frames wider than 3:2), then tiles of half that side (frames whose shorter side is at
    least 256 px), where a face of 24 px in a 640x360 frame is 26 px at the model's input instead of 13.

    A half tile's detection needs ``HALF_TILE_SCORE``; with ``short`` (the short-range model; ``full``
    a ``BlazeFace``), one scoring ``WEAK_SCORE`` to that is kept when a second look (``ZoomCheck``: both
    models, ``ZOOM_SCORES``) finds the face."""
    if short is None:
        return [TiledDetector(full, whole=False),
                TiledDetector(full, tile=0.5, whole=False, min_score=HALF_TILE_SCORE, min_tile=128)]
    weak = full.with_threshold(min(WEAK_SCORE, full.score_threshold))  # type: ignore[attr-defined]
    return [TiledDetector(full, whole=False),
            TiledDetector(weak, tile=0.5, whole=False, min_score=HALF_TILE_SCORE, min_tile=128,
                          check=ZoomCheck([(short, ZOOM_SCORES[0]), (full, ZOOM_SCORES[1])]), check_from=WEAK_SCORE)]

