"""Detection-to-track association, per-track state (crop, landmarks, stabilizer), expiry.

A track is started from a detection, then followed from its own landmarks: its crop is
re-derived from the landmarks, inside a dead band, so that the crop holds still while the face
does (crop boxes never jitter more than the landmarks). Periodic re-detections keep ids honest:
a detection that overlaps a live track is that track; one that is part of a live track's face
(``inside``: an eye that a small tile showed) is nothing; one that overlaps none starts a new
track (up to ``max_faces``); a track whose landmark confidence drops below ``min_score``, or that
no re-detection confirms ``max_misses`` times in a row while its landmarks are less sure than
``sure_score``, ends and its stabilizer is reset. A track is never handed to another face: a
detection that overlaps no live track starts a new one (with a new id) or, with ``max_faces``
tracks already live, is ignored, however high its score; a track that is lost ends, for good.

Ids are 0, 1, 2, ... in order of appearance: a track is *confirmed* by the first ``observe`` it
survives (its face is shown). A track that ends before that (a detector false positive, a
duplicate of a face already tracked) gives its id back, so it consumes none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from stableface.crop import CropBox, box_from_landmarks
from stableface.types import Detection, Stabilizer

# Calibrated on the training images: BlazeFace box -> the backbone's crop (median offsets).
DET_CENTER_DY = 0.06
DET_SIDE_SCALE = 1.26


def crop_from_detection(det: Detection) -> CropBox:
    x0, y0, x1, y1 = det.box
    s = max(x1 - x0, y1 - y0)
    return CropBox((x0 + x1) / 2, (y0 + y1) / 2 + DET_CENTER_DY * s, max(DET_SIDE_SCALE * s, 1.0), 0.0)


def points_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """The box (x0, y0, x1, y1) of points (N, 2)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def box_side(box: tuple[float, ...]) -> float:
    return max(box[2] - box[0], box[3] - box[1])


def inside(box: tuple[float, ...], outer: tuple[float, ...], ratio: float = 0.5) -> bool:
    """Whether ``box`` is part of ``outer``: its centre lies inside it and it is at most ``ratio`` of its side
    (a detection of an eye or a mouth in a small tile of a close-up face)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return outer[0] <= cx <= outer[2] and outer[1] <= cy <= outer[3] and box_side(box) <= ratio * box_side(outer)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class DeadBand:
    """How far the wanted crop may drift from the current one before the crop moves."""

    shift: float = 0.05  # of the crop side
    scale: float = 0.08  # relative change of side
    angle_deg: float = 5.0

    def follow(self, current: CropBox | None, wanted: CropBox) -> CropBox:
        if current is None:
            return wanted
        moved = np.hypot(wanted.cx - current.cx, wanted.cy - current.cy) > self.shift * current.side
        scaled = abs(wanted.side / current.side - 1.0) > self.scale
        turned = abs(np.rad2deg(wanted.angle - current.angle)) > self.angle_deg
        return wanted if (moved or scaled or turned) else current


@dataclass(eq=False)  # a track is an entity: compared (``in``, ``remove``) by identity, not field by field
class Track:
    id: int
    stabilizer: Stabilizer
    crop: CropBox
    landmarks: np.ndarray | None = None
    scores: np.ndarray | None = None
    age: int = 0  # frames since the track started
    misses: int = 0  # consecutive re-detections that did not confirm it
    detection_score: float = 0.0
    history: list[int] = field(default_factory=list)
    confirmed: bool = False  # survived an observation: its id has been shown

    _box: tuple | None = field(default=None, repr=False)  # (the landmarks it was computed from, box)
    _score: tuple | None = field(default=None, repr=False)  # (the scores it was computed from, score)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Box of the landmarks (source pixels); the crop's bounds before the first landmarks.
        Cached per landmarks array (dedupe asks for it for every pair of tracks after every face)."""
        if self.landmarks is None:
            return self.crop.bounds()
        if self._box is not None and self._box[0] is self.landmarks:
            return self._box[1]
        box = points_box(self.landmarks)
        self._box = (self.landmarks, box)
        return box

    @property
    def score(self) -> float:
        """Mean landmark score in [0, 1] (cached per scores array), or the detection's before the first landmarks."""
        if self.scores is None:
            return self.detection_score
        if self._score is None or self._score[0] is not self.scores:
            self._score = (self.scores, float(np.clip(np.mean(self.scores), 0.0, 1.0)))
        return self._score[1]


class Tracker:
    def __init__(self, stabilizer_factory: Callable[[], Stabilizer], max_faces: int = 1, iou_threshold: float = 0.2,
                 max_misses: int = 2, min_score: float = 0.15, crop_scale: float = 1.3, rotate: bool = True,
                 dead_band: DeadBand | None = None, sure_score: float = 1.0) -> None:
        if max_faces < 1:
            raise ValueError("max_faces must be at least 1")
        self.factory = stabilizer_factory
        self.max_faces, self.iou_threshold = max_faces, iou_threshold
        self.max_misses, self.min_score, self.sure_score = max_misses, min_score, sure_score
        self.crop_scale, self.rotate = crop_scale, rotate
        self.dead_band = dead_band or DeadBand()
        self.tracks: list[Track] = []
        self.next_id = 0
        self._shown = 0  # ids below this belong to confirmed tracks

    def reset(self) -> None:
        for t in self.tracks:
            t.stabilizer.reset()
        self.tracks, self.next_id, self._shown = [], 0, 0

    def settled(self) -> bool:
        """All ``max_faces`` tracks are live and sure of their landmarks: a detection could neither start
        a face (no room) nor end a track (none unsure), so re-detecting has nothing to do."""
        return len(self.tracks) >= self.max_faces and all(t.score >= self.sure_score for t in self.tracks)

    def associate(self, detections: list[Detection], misses: bool = True) -> list[Detection]:
        """Match detections to live tracks; returns the detections that start new tracks.

        Tracks confirmed by a detection get ``misses = 0``; the others count a miss and end
        after ``max_misses`` in a row, unless their landmarks are at least ``sure_score`` sure (the
        detector misses turned and small faces that the landmarks still hold). ``misses=False``
        (detections of part of the frame, a tile): the others count none.
        """
        unmatched = list(range(len(detections)))
        for t in sorted(self.tracks, key=lambda tr: -tr.age):
            best, best_iou = None, self.iou_threshold
            for j in unmatched:
                v = iou(t.box, detections[j].box)
                if v > best_iou:
                    best, best_iou = j, v
            if best is None:
                if misses:
                    t.misses = 0 if t.landmarks is not None and t.score >= self.sure_score else t.misses + 1
            else:
                t.misses = 0
                t.detection_score = detections[best].score
                unmatched.remove(best)
        for t in [t for t in self.tracks if t.misses >= self.max_misses]:
            self.end(t)
        room = self.max_faces - len(self.tracks)
        # a detection that is part of a tracked face (an eye or a mouth that a small tile showed) is no new face
        fresh = [detections[j] for j in unmatched if not any(inside(detections[j].box, t.box) for t in self.tracks)]
        fresh = fresh[:max(0, room)]
        return fresh

    def start(self, detection: Detection, crop: CropBox | None = None) -> Track:
        t = Track(self.next_id, self.factory(), crop or crop_from_detection(detection), detection_score=detection.score)
        self.next_id += 1
        self.tracks.append(t)
        return t

    def end(self, track: Track) -> None:
        track.stabilizer.reset()
        self.tracks.remove(track)
        if not track.confirmed and track.id >= self._shown:  # never shown: its id goes back
            for t in self.tracks:
                if t.id > track.id:  # unconfirmed too (ids at or above _shown are)
                    t.id -= 1
            self.next_id -= 1

    def observe(self, track: Track, landmarks: np.ndarray, scores: np.ndarray) -> bool:
        """Record a track's new landmarks, move its crop if needed; False (and end it) when lost."""
        track.landmarks, track.scores = landmarks, scores
        track.age += 1
        if not np.all(np.isfinite(landmarks)) or track.score < self.min_score:
            self.end(track)
            return False
        wanted = box_from_landmarks(landmarks, self.crop_scale, rotate=self.rotate)
        track.crop = self.dead_band.follow(track.crop, wanted)
        self.dedupe()
        if not track.confirmed and any(t is track for t in self.tracks):
            track.confirmed = True
            self._shown = max(self._shown, track.id + 1)
        return True

    def dedupe(self) -> None:
        """Two tracks that converged on the same face: the younger one ends."""
        for a in list(self.tracks):
            for b in list(self.tracks):
                if a is not b and a in self.tracks and b in self.tracks and a.landmarks is not None \
                        and b.landmarks is not None and iou(a.box, b.box) > 0.5:
                    self.end(b if b.age < a.age or (b.age == a.age and b.id > a.id) else a)
