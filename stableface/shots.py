"""Shot-cut detection: a cheap frame-level test, confirmed by the tracked faces' landmarks.

    shots = ShotDetector()
    for image in images:
        if shots.update(image, confirm=landmarks_jumped):  # True: this frame starts a new shot
            ...

Everything is computed on a 32 x 32 colour thumbnail of each frame (a bilinear resize to
64 x 64, then 2 x 2 means): well under 0.5 ms a frame, a fraction of decoding it
(``benchmarks/cuts.py`` measures both). The thumbnails are compared with their gain taken out
(:func:`gain_normalized`), so that a fade or an exposure change is hardly a change. With ``d1``
and ``d2`` the mean absolute differences (grey levels, 0-255) between this frame's thumbnail and
those of the previous frame and of the one before it:

* ``ratio = d1 / (median of the last 8 d1 + 1)``: how much bigger this change is than the
  recent motion inside the shot (a busy shot needs a bigger change than a still one);
* ``continuity = max(d1, d2) / min(d1, d2)``: inside a shot motion accumulates, so the frame
  two back is further away than the previous one (``d2 > d1``); across a cut both lie in the
  other shot, ``d2 ~ d1``. A return from a one-frame flash has ``d2 << d1``;
* ``score = ln(ratio) - 5 ln(continuity)``;
* ``spread`` (for a candidate, ``score >= soft``): the fraction of the thumbnail's pixels that
  changed by at least ``spread_change`` (10 grey levels, the mean over the channels) since the
  previous frame. A cut changes most of the picture (between two of the shared clips: 0.88 and
  more); a motion against a still background changes only the part that moves.

Neither ``ratio`` nor ``continuity`` tells a cut from a motion that starts after stillness: the
recent motion is nil, and the frames 1 and 2 back are the same, so ``d2 ~ d1`` (a face that
stands still and then walks at 12 px a frame is as sudden as a cut). The landmarks cannot tell
either: the face's landmarks jump with it (12 px is more than a tenth of a 73 px face). So a
*local* change (``spread < min_spread``, the ``spread`` argument, 0.35) is never a cut on its
own frame ("hard" or "confirmed"); the next frame decides ("late", below): a motion goes on, a
cut stays put. A cut that changes only part of the picture (a jump cut that keeps the
background, the same person elsewhere; in the same-clip splices ``spread`` goes down to 0.2) is
then found one frame late, and a motion that stops after one step may be taken for a cut.
A frame starts a new shot (``kind``) when:

* ``"hard"``: the change is not local, ``score >= hard`` and ``d1 >= min_change``;
* ``"confirmed"``: otherwise, the change is not local, ``score >= soft`` and ``confirm()`` (the
  caller's landmark evidence, asked for these candidates only) says so; with no ``confirm`` (no
  tracked face) it does not. :func:`landmarks_changed` is that evidence for one face: its
  landmarks, decoded from this frame and from the previous one in the same crop, jump by a
  tenth of the face or lose confidence. So a small sudden change over most of the picture (a
  light switched on, a jump cut to almost the same pose and framing) is a cut only if the face
  says so;
* ``"late"``: the previous frame was a candidate (``score >= late_score``, ``d1 >= late_change``)
  that did not pass, and this frame confirms it: it is close to the previous frame and far from
  the one before (``d2 >= 3 d1``), so the previous frame began something new rather than a
  motion. The cut is reported one frame late, on this frame (the previous frame keeps the old
  shot);
* ``"gradual"``: a gradual transition (a dissolve): the hue-saturation histogram of the frame
  (:func:`colour_histogram`, brightness-weighted) has moved by ``gradual`` (half the L1
  distance) from those of the frames 10 and 9 frames back, with no cut in between. Dimming
  does not move it (auto exposure, a fade). The cut is reported part-way into the transition,
  once the colours have changed by that much (frames 1-9 of a 10-frame dissolve between the
  shared clips): the track before it ends, the face found there starts a new one. The colours
  of the next 10 frames are not compared with those before them (the rest of the transition),
  so a dissolve of up to about 15 frames is one cut; a slower one between similar colours may
  be missed (the change within 10 frames stays small) or, between very different ones, count
  twice. A dissolve that keeps the colours (the same scene) is not found.

A fade through black is one cut, where the next shot fades in: frames too dark to have colours
(``colour_histogram`` None) leave the colour reference as it was, so the first frame of the next
shot with colours is compared with the last ones of the shot before. Meanwhile (when that comparison
can be made: the reference is full) ``waiting`` is set, and the pipeline starts no track: a face the
detector finds on a dark frame of the fade-in would be ended by the cut a few frames later, and its
person given a second id. The wait is bounded: after ``DARK_FRAMES`` dark frames in a row the
reference is forgotten, with no cut (a long black gap, a night scene after a bright one, a dim scene
whose brightness hovers around ``DARK``), and faces start again; a long black is then a cut only if the
next shot comes in suddenly (``"hard"``), as before. A one-frame flash (or a broken frame) counts as a
cut at the flash; the frame after it does not.

The thresholds were chosen on spliced clips (``benchmarks/cuts.py --seed 100 --clips 30``) and
the unspliced clips; the benchmark reports on other splices (seed 0). ``spread`` was chosen there
and on planted motion onsets (``tests/test_shots.py``; a 0.5-1.5x astronaut photo starting to move
at 8-24 px a frame on grey and textured backgrounds, 256-1280 px wide: ``spread`` 0.08-0.26).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable

import cv2
import numpy as np

THUMB = 32  # thumbnail side (pixels)
HISTORY = 8  # frame differences in the motion baseline
FLOOR = 1.0  # grey levels added to the baseline: noise-free still footage is not "infinitely" quiet
PRIOR = 8.0  # baseline until 3 differences are known (a busy shot: conservative)
CONTINUITY_WEIGHT = 5.0
HARD = 0.8  # score of a cut on frame evidence alone (ratio 2.2 at continuity 1) ...
MIN_CHANGE = 10.0  # ... when the change d1 is this large (grey levels; cuts between the clips: 38 and more)
SOFT = 0.4  # score of a candidate that the landmarks may confirm (ratio 1.5 at continuity 1)
SPREAD = 0.35  # changed fraction of the thumbnail below which a change is local (see the module docstring) ...
SPREAD_CHANGE = 10.0  # ... a thumbnail pixel counting as changed when it changes by this much (grey levels)
LATE_SCORE = 0.2  # score of a candidate that the next frame may confirm ...
LATE_CHANGE = 6.0  # ... when its change d1 is this large (not a caption popping up) ...
LATE_CONTINUITY = 3.0  # ... with the next frame's d2 >= this x its d1
GRADUAL = 0.3  # histogram distance over GRADUAL_FRAMES (inside shots of the clips: at most 0.17)
GRADUAL_FRAMES = 10
DARK_FRAMES = 10  # frames too dark for colours in a row, after a shot with them, before its colours are forgotten
JUMP = 0.1  # landmark jump (median over points, fraction of the landmark box's larger side)
DROP = 0.15  # drop in mean landmark confidence
DARK = 16  # mean brightness (HSV V) below which a frame has no colours to compare
REF_MEAN, GAIN_OFFSET = 110.0, 20.0  # grey levels (see gain_normalized)
HUE_BINS, SAT_BINS = 8, 8


def thumbnail(image: np.ndarray) -> np.ndarray:
    """(THUMB, THUMB, 3) float32 thumbnail of a (H, W, 3) uint8 image: bilinear to 2x the side, then 2x2 means.

    (``cv2.INTER_AREA`` straight from the full frame is several times slower on 512 x 512.)"""
    half = cv2.resize(image, (2 * THUMB, 2 * THUMB), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(half, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


def colour_histogram(thumb: np.ndarray) -> np.ndarray | None:
    """Hue-saturation histogram (HUE_BINS * SAT_BINS,) of a BGR thumbnail, each pixel weighted by its
    brightness (HSV V), summing to 1: dimming the frame leaves it as it is, and dark pixels, whose hue
    is noise, weigh little. None for a frame too dark to have colours (mean V below DARK)."""
    hsv = cv2.cvtColor(thumb.astype(np.uint8), cv2.COLOR_BGR2HSV).reshape(-1, 3)
    v = hsv[:, 2].astype(np.float32)
    total = float(v.sum())
    if total < DARK * len(v):
        return None
    bins = (hsv[:, 0].astype(np.intp) * HUE_BINS // 180) * SAT_BINS + hsv[:, 1].astype(np.intp) * SAT_BINS // 256
    return (np.bincount(bins, weights=v, minlength=HUE_BINS * SAT_BINS) / total).astype(np.float32)


def gain_normalized(thumb: np.ndarray) -> np.ndarray:
    """The thumbnail with its gain taken out: ``(x + C) (REF_MEAN + C) / (mean + C)``. A frame of mean
    brightness REF_MEAN keeps its differences; a gain (a fade, an exposure change) changes little, and
    smoothly: the offset ``C`` keeps a nearly black frame's noise from being scaled up without bound."""
    return (thumb + GAIN_OFFSET) * ((REF_MEAN + GAIN_OFFSET) / (float(thumb.mean()) + GAIN_OFFSET))


def frame_features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """What :meth:`ShotDetector.update` compares, for one (H, W, 3) uint8 image: its gain-normalised
    thumbnail and its colour histogram. A pure function of the image, so it can be computed ahead, in
    another thread (the pipeline's reader does, beside decoding)."""
    thumb = thumbnail(image)
    return gain_normalized(thumb), colour_histogram(thumb)


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return cv2.norm(a, b, cv2.NORM_L1) / a.size


def _spread(a: np.ndarray, b: np.ndarray, change: float) -> float:
    """The fraction of the thumbnail's pixels whose mean absolute change over the channels is at least ``change``."""
    return float(np.count_nonzero(cv2.absdiff(a, b).sum(axis=2) >= 3 * change)) / (a.shape[0] * a.shape[1])


class ShotDetector:
    """Frame-level cut test with a landmark confirmation; ``update(image) -> bool`` ("this frame starts a new shot").

    The first frame starts shot 0 and is never a cut. After each update, ``kind`` says why the
    frame starts a shot (``"hard"``, ``"confirmed"``, ``"late"``, ``"gradual"``) or is None, and
    ``score``, ``ratio``, ``continuity``, ``change`` (``d1``), ``spread`` (NaN unless ``score >= soft``)
    and ``colour_change`` hold its values; ``min_spread`` is the ``spread`` threshold.
    """

    def __init__(self, hard: float = HARD, soft: float = SOFT, min_change: float = MIN_CHANGE,
                 late_score: float = LATE_SCORE, late_change: float = LATE_CHANGE,
                 late_continuity: float = LATE_CONTINUITY, gradual: float = GRADUAL,
                 gradual_frames: int = GRADUAL_FRAMES, continuity_weight: float = CONTINUITY_WEIGHT,
                 history: int = HISTORY, spread: float = SPREAD, spread_change: float = SPREAD_CHANGE,
                 dark_frames: int = DARK_FRAMES) -> None:
        if not soft <= hard:
            raise ValueError(f"the soft threshold ({soft}) must not exceed the hard one ({hard})")
        if gradual_frames < 1:
            raise ValueError(f"gradual_frames must be at least 1, got {gradual_frames}")
        self.hard, self.soft, self.min_change = float(hard), float(soft), float(min_change)
        self.late_score, self.late_change, self.late_continuity = float(late_score), float(late_change), \
            float(late_continuity)
        self.gradual, self.continuity_weight = float(gradual), float(continuity_weight)
        self.min_spread, self.spread_change = float(spread), float(spread_change)
        self.dark_frames = max(1, int(dark_frames))
        self._thumbs: deque[np.ndarray] = deque(maxlen=2)
        self._diffs: deque[float] = deque(maxlen=history)
        self._hists: deque[np.ndarray] = deque(maxlen=gradual_frames)  # since the last cut (frames with colours)
        self.reset()

    def reset(self) -> None:
        """Forget the previous frames (call between unrelated sources)."""
        self._thumbs.clear()
        self._diffs.clear()
        self._hists.clear()
        self._pending = False
        self._hold = 0  # frames before the colour reference is taken again after a gradual cut
        self.kind: str | None = None
        self.score = self.ratio = self.continuity = self.change = self.colour_change = float("nan")
        self.spread = float("nan")
        self.candidates = 0  # frames that asked confirm()
        self.waiting = False  # the last frame is dark, after a full colour reference (see update)
        self._dark = 0  # such frames in a row

    def _baseline(self) -> float:
        if len(self._diffs) < 3:
            return max(PRIOR, max(self._diffs, default=0.0))
        return statistics.median(self._diffs)

    def update(self, image: np.ndarray, confirm: Callable[[], bool] | None = None,
               features: tuple[np.ndarray, np.ndarray | None] | None = None) -> bool:
        """Whether ``image`` starts a new shot; ``confirm`` is called (only) for a candidate.
        ``features``: ``frame_features(image)`` when it was computed ahead (else it is computed here)."""
        thumb, hist = features if features is not None else frame_features(image)
        self.kind = self._decide(thumb, hist, confirm) if self._thumbs else None
        # a dark frame after a shot whose colours the next ones will be compared with (a full reference):
        # what shows now may belong to the next shot, whose colours (when they come) end this one; the
        # pipeline starts no track until then, or until DARK_FRAMES dark frames in a row make the
        # reference stale: it is forgotten (no cut), and faces start again
        dark = self.kind is None and hist is None and len(self._hists) == self._hists.maxlen
        self._dark = self._dark + 1 if dark else 0
        if self._dark >= self.dark_frames:
            self._hists.clear()
            self._dark = 0
        self.waiting = self._dark > 0
        self._thumbs.append(thumb)
        if self.kind is not None:
            self._hists.clear()
            # the rest of a gradual transition is not a new one: the next reference comes after it
            self._hold = self._hists.maxlen if self.kind == "gradual" else 0
        if self._hold:
            self._hold -= 1
        elif hist is not None:  # a frame too dark for colours leaves the reference as it was (a fade through black)
            self._hists.append(hist)
        return self.kind is not None

    def _decide(self, thumb: np.ndarray, hist: np.ndarray | None, confirm: Callable[[], bool] | None) -> str | None:
        d1 = _mean_abs(thumb, self._thumbs[-1])
        d2 = _mean_abs(thumb, self._thumbs[0]) if len(self._thumbs) == 2 else d1
        self.change, self.ratio = d1, d1 / (self._baseline() + FLOOR)
        lo, hi = sorted((d1, d2))
        self.continuity = hi / lo if lo > 1e-6 else (1.0 if hi <= 1e-6 else np.inf)
        self.score = float(np.log(max(self.ratio, 1e-9)) - self.continuity_weight * np.log(self.continuity))
        pending, self._pending = self._pending, False
        # a local change (a motion onset, or a cut that keeps the background) is left to the next frame
        self.spread = _spread(thumb, self._thumbs[-1], self.spread_change) if self.score >= self.soft else float("nan")
        wide = self.spread >= self.min_spread
        if wide and self.score >= self.hard and d1 >= self.min_change:
            return "hard"  # the cut's own change stays out of the baseline
        if wide and self.score >= self.soft and confirm is not None:
            self.candidates += 1
            if confirm():
                return "confirmed"
        late = pending and d2 >= self.late_continuity * d1
        if late:
            self._diffs.pop()  # the previous frame's change was the cut's
        self._diffs.append(d1)
        if late:
            return "late"
        self._pending = self.score >= self.late_score and d1 >= self.late_change
        # the colour change since GRADUAL_FRAMES back, and since the frame after that (so that one odd
        # reference frame, a flash, is not enough)
        refs = list(self._hists)[:2] if len(self._hists) == self._hists.maxlen else []
        changes = [0.5 * cv2.norm(hist, r, cv2.NORM_L1) for r in refs if hist is not None]
        self.colour_change = min(changes) if len(changes) == 2 else float("nan")
        if self.colour_change >= self.gradual:
            self._pending = False  # this frame starts the new shot: the next one cannot start it again
            return "gradual"
        return None


def landmark_jump(before: np.ndarray, after: np.ndarray) -> float:
    """Median displacement of (K, 2) landmarks, as a fraction of the larger side of ``before``'s box."""
    side = float(np.max(before.max(axis=0) - before.min(axis=0)))
    if not (np.all(np.isfinite(before)) and np.all(np.isfinite(after))) or side <= 0:
        return np.inf
    return float(np.median(np.linalg.norm(after - before, axis=1))) / side


def landmarks_changed(before: np.ndarray, before_scores: np.ndarray, after: np.ndarray, after_scores: np.ndarray,
                      jump: float = JUMP, drop: float = DROP) -> bool:
    """Landmark evidence of a cut for one face: the landmarks of the same crop in two consecutive frames
    (source pixels, (K, 2), with their (K,) scores) jump by ``jump`` of the face, or their mean score drops by ``drop``."""
    return landmark_jump(before, after) >= jump or float(np.mean(before_scores) - np.mean(after_scores)) >= drop
