"""The stream: source -> detector -> tracker -> crop -> backbone -> stabilizer -> decode -> uncrop -> sinks.

    from stableface import Pipeline
    pipe = Pipeline.from_weights()            # shipped weights, ConvLSTM stabilizer
    result = pipe.update(frame)               # one Frame -> FrameResult
    for result in pipe.track("clip.mp4"):     # a whole source
        ...

With ``PipelineConfig(lookahead=N)``, ``stream`` and ``track`` smooth each track over N frames
ahead (``stableface.lookahead``): their results lag the source by N frames, and the last N come
when the source ends. ``update`` is never delayed.

A shot cut (``stableface.shots``; ``PipelineConfig(shot_cuts=False)`` turns it off) ends every
track, detection runs on the cut frame and new ids follow; ``FrameResult.shot`` counts the cuts.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stableface import codec, crop as C
from stableface.backbone import HeatmapBackbone
from stableface.detector import BlazeFace, FaceDetector, UnionDetector
from stableface.lookahead import Lookahead
from stableface.shots import ShotDetector, landmarks_changed
from stableface.sinks import Sink, SinkError
from stableface.stabilizer import (ConvLSTMStabilizer, ConvLSTMStep, Decoder, NoStabilizer, OneEuroStabilizer,
                                   Stabilizer)
from stableface.tracker import Track, Tracker
from stableface.types import Face, Frame, FrameResult
from stableface.video import Source, open_source
from stableface.weights import resolve

STABILIZERS = ("convlstm", "none", "one-euro")
log = logging.getLogger("stableface")


class Timer:
    """Accumulates seconds per stage (for benchmarks and ``-v``)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    def add(self, stage: str, seconds: float) -> None:
        self.total[stage] += seconds
        self.count[stage] += 1

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer.add(self.name, time.perf_counter() - self.t0)


class _TimedDecoder(Decoder):
    def __init__(self, timer: Timer, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timer = timer

    def __call__(self, heatmaps: np.ndarray, crop: C.CropBox, offset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        with self.timer.stage("pdc"):
            return super().__call__(heatmaps, crop, offset)


@dataclass(frozen=True)
class PipelineConfig:
    stabilizer: str = "convlstm"
    max_faces: int = 4  # interviews, panels, group shots (README)
    redetect_every: int = 10  # frames between detections while tracks live (0: never)
    decoder: str = "pdc"
    pdc_threshold: float = codec.DEFAULT_PDC_THRESHOLD
    pdc_mode: str = codec.DEFAULT_PDC_MODE  # continuous (default) or hard (Algorithm 1)
    one_euro_min_cutoff: float = 4.0  # tuned by benchmarks/stabilizer_eval.py
    one_euro_beta: float = 1.0
    rotate_crops: bool = True
    start_score: float = 0.55  # mean heatmap peak needed to start a track from a detection
    min_score: float = 0.3  # a track whose mean heatmap peak falls below this ends
    sure_score: float = 0.55  # a track this sure of its landmarks is kept when re-detection misses its face
    lookahead: int = 0  # frames of fixed-lag smoothing per track in stream()/track() (0: none, no delay)
    shot_cuts: bool = True  # detect shot cuts (stableface.shots): a cut ends every track


class Pipeline:
    """Frame-by-frame face landmark tracking with per-face stabilizer state."""

    def __init__(self, detector: FaceDetector, backbone: HeatmapBackbone, config: PipelineConfig = PipelineConfig(),
                 stabilizer_step: ConvLSTMStep | None = None) -> None:
        if config.stabilizer not in STABILIZERS:
            raise ValueError(f"unknown stabilizer {config.stabilizer!r}: use one of {', '.join(STABILIZERS)}")
        if config.stabilizer == "convlstm" and not config.lookahead and stabilizer_step is None:
            raise ValueError("the convlstm stabilizer needs a ConvLSTM step model")
        if stabilizer_step is not None:
            stabilizer_step.check(backbone.k, backbone.heatmap_size, f"backbone {backbone.path}")
        self.detector, self.backbone, self.config, self.step = detector, backbone, config, stabilizer_step
        self.timer = Timer()
        self.decoder = _TimedDecoder(self.timer, backbone.size, backbone.stride, config.decoder, config.pdc_threshold,
                                     config.pdc_mode)
        self.tracker = Tracker(self.new_stabilizer, max_faces=config.max_faces, crop_scale=backbone.crop_scale,
                               rotate=config.rotate_crops, min_score=config.min_score, sure_score=config.sure_score)
        self.lookahead = Lookahead(config.lookahead)
        self._held: deque[Frame] = deque()  # the frames whose results the lookahead still holds
        self._held_shots: deque[int] = deque()  # and their shots (the lookahead rebuilds results without them)
        self.shots = ShotDetector()
        self.reset()

    @classmethod
    def from_weights(cls, weights: str | Path | None = None, stabilizer_weights: str | Path | None = None,
                     device: str = "auto", config: PipelineConfig = PipelineConfig(), threads: int = 0) -> Pipeline:
        """Build from shipped weights (default) or a folder / backbone ``.onnx`` given by the user."""
        ws = resolve(weights, stabilizer_weights)
        backbone = HeatmapBackbone(ws.backbone, device, threads)
        dets: list[FaceDetector] = [BlazeFace(ws.detector, device=device)]
        if ws.detector_full is not None:
            dets.append(BlazeFace(ws.detector_full, device=device))
        # the step is tiny: one thread beats two on small CPUs (benchmarks/model_speed.py)
        # under a lookahead the ConvLSTM is not run; weights the user named are still loaded and checked
        wanted = config.stabilizer == "convlstm" and (not config.lookahead or stabilizer_weights is not None)
        step = ConvLSTMStep(ws.stabilizer, device, threads or 1) if wanted else None
        return cls(UnionDetector(dets), backbone, config, step)

    @property
    def stabilizer_label(self) -> str:
        """What made the landmarks, for output headers: the stabilizer, or ``none`` under a lookahead."""
        return "none" if self.config.lookahead else self.config.stabilizer

    @property
    def scheme(self) -> str:
        return self.backbone.scheme

    def new_stabilizer(self) -> Stabilizer:
        """The factory the tracker calls for every new face: state is never shared.

        With a lookahead the landmarks are the raw ones, smoothed afterwards over +-N frames: a
        causal stabilizer would only add the lag that a smoother which sees the future does not
        need (``benchmarks/real_motion.py``: jitter error 0.46% of IOD smoothing the ConvLSTM's
        track, 0.37% smoothing the raw one)."""
        if self.config.lookahead:
            return NoStabilizer(self.decoder)
        if self.config.stabilizer == "convlstm":
            assert self.step is not None
            return ConvLSTMStabilizer(self.step, self.decoder)
        if self.config.stabilizer == "one-euro":
            return OneEuroStabilizer(self.decoder, self.config.one_euro_min_cutoff, self.config.one_euro_beta)
        return NoStabilizer(self.decoder)

    def reset(self) -> None:
        """Forget every track (call between unrelated sources)."""
        self.tracker.reset()
        self.lookahead.reset()
        self._held.clear()
        self._held_shots.clear()
        self.shots.reset()
        self.shot = 0
        self._last_image: np.ndarray | None = None
        self.last_detect = None
        self.last_timestamp = None
        self._frame_count = 0
        self._t0 = time.monotonic()
        self._source_name, self.nonfinite = None, 0  # faces dropped for NaN/Inf heatmaps (warned once per source)

    def _finite(self, heatmaps: np.ndarray, frame: Frame) -> bool:
        """False for heatmaps holding NaN or Inf (a broken backbone): that face is dropped from this frame."""
        if np.isfinite(heatmaps).all():
            return True
        if not self.nonfinite:
            log.warning("%sframe %d: the backbone's heatmaps hold NaN or Inf: such a face is dropped from its frame "
                        "(said once per source)", f"{self._source_name}: " if self._source_name else "", frame.index)
        self.nonfinite += 1
        return False

    def _crops(self, image: np.ndarray, boxes: list[C.CropBox]) -> np.ndarray:
        with self.timer.stage("crop"):
            return np.stack([C.warp(image, b, self.backbone.size) for b in boxes])

    def _heatmaps(self, crops: np.ndarray) -> np.ndarray:
        with self.timer.stage("backbone"):
            return self.backbone(crops)

    def _landmarks_jumped(self, image: np.ndarray) -> bool:
        """Landmark evidence for a cut candidate (``shots.landmarks_changed``): a tracked face whose
        landmarks, decoded from the previous frame and this one in the same crop, jump or lose confidence."""
        tracks = [t for t in self.tracker.tracks if t.landmarks is not None]
        if not tracks or self._last_image is None:
            return False
        hm = self.backbone(np.stack([C.warp(im, t.crop, self.backbone.size) for t in tracks
                                     for im in (self._last_image, image)]))
        return any(landmarks_changed(*self.decoder(hm[2 * i], t.crop),
                                     *self.decoder(hm[2 * i + 1], t.crop))
                   for i, t in enumerate(tracks))

    def _end_shot(self) -> None:
        """A shot cut: every track ends (its stabilizer is reset); detection runs on this frame."""
        for t in list(self.tracker.tracks):
            self.tracker.end(t)
        self.last_detect = None
        self.shot += 1

    def update(self, frame: Frame | np.ndarray, timestamp_ms: float | None = None) -> FrameResult:
        """Process one frame (a ``Frame`` or a BGR image) and return its faces."""
        if not isinstance(frame, Frame):
            if timestamp_ms is None:  # live use without timestamps: the wall clock
                timestamp_ms = (time.monotonic() - self._t0) * 1000.0
            frame = Frame(np.ascontiguousarray(frame), self._frame_count, float(timestamp_ms))
        if self.last_timestamp is not None and frame.timestamp_ms <= self.last_timestamp:
            raise ValueError(f"timestamps must increase: got {frame.timestamp_ms} ms after {self.last_timestamp} ms "
                             "(call reset() before starting another video)")
        self.last_timestamp = frame.timestamp_ms
        image, tracker = frame.image, self.tracker
        if self.config.shot_cuts:
            with self.timer.stage("shots"):
                cut = self.shots.update(image, lambda: self._landmarks_jumped(image))
            if cut:
                self._end_shot()
            self._last_image = image
        self._frame_count += 1
        n = self._frame_count
        every = self.config.redetect_every
        # a re-detection can only start a face where there is room, or end an unsure track: else it is skipped
        due = every and n - self.last_detect >= every if self.last_detect is not None else True
        if due and len(tracker.tracks) >= tracker.max_faces and all(t.score >= tracker.sure_score for t in tracker.tracks):
            due, self.last_detect = False, n
        if not tracker.tracks or due:
            with self.timer.stage("detect"):
                detections = self.detector.detect(image)
            self.last_detect = n
            fresh = tracker.associate(detections)
            if fresh:
                new = [tracker.start(d) for d in fresh]
                # a first pass from the detector's box places the landmark crop
                hm = self._heatmaps(self._crops(image, [t.crop for t in new]))
                for t, h in zip(new, hm):
                    if not self._finite(h, frame):
                        tracker.end(t)
                        continue
                    pts, scores = self.decoder(h, t.crop)
                    if float(np.mean(scores)) < self.config.start_score:
                        tracker.end(t)  # a detector false positive: no face-like heatmaps
                        continue
                    t.crop = C.box_from_landmarks(pts, self.backbone.crop_scale, rotate=self.config.rotate_crops)
        seen: list[tuple[Track, np.ndarray, np.ndarray]] = []
        tracks = list(tracker.tracks)
        if tracks:
            hm = self._heatmaps(self._crops(image, [t.crop for t in tracks]))
            for t, h in zip(tracks, hm):
                if not self._finite(h, frame):
                    tracker.end(t)  # (its stabilizer never sees them)
                    continue
                with self.timer.stage("stabilizer"):
                    pts, scores = t.stabilizer.update(h, t.crop, frame.timestamp_ms)
                if tracker.observe(t, pts, scores):
                    seen.append((t, pts, scores))
        live = {id(t) for t in tracker.tracks}  # by identity: a track that ended may have given its id to another
        faces = sorted((Face(t.id, t.box, t.score, pts, scores) for t, pts, scores in seen if id(t) in live),
                       key=lambda f: f.id)
        return FrameResult(frame.index, frame.timestamp_ms, tuple(faces), self.shot)

    def stream(self, source: Source, on_frame: Callable[[Frame, FrameResult], None] | None = None) -> Iterator[tuple[Frame, FrameResult]]:
        """(frame, result) for every frame of an open source, in order; resets tracks first.

        With a lookahead of N the pairs lag the source by N frames and the last N come after the
        source ends; each result comes with its own frame. If the loop stops early (an exception, a
        break), ``drain()`` gives the pairs still held.
        """
        self.reset()
        self._source_name = getattr(getattr(source, "info", None), "name", None)  # (any iterable of Frames will do)
        for frame in source:
            result = self.update(frame)
            if on_frame:
                on_frame(frame, result)
            if not self.lookahead.n:
                yield frame, result
                continue
            self._held.append(frame)
            self._held_shots.append(result.shot)
            for out in self.lookahead.update(result):
                yield self._pair(out)
        yield from self.drain()

    def drain(self) -> Iterator[tuple[Frame, FrameResult]]:
        """The (frame, result) pairs the lookahead still holds, oldest first, smoothed with what there
        is; for the end of a source, or after an interrupted ``stream()``. Each pair is taken out
        as it is yielded, so a drain that stops early can be resumed by another."""
        while (out := self.lookahead.pop()) is not None:
            yield self._pair(out)

    def _pair(self, result: FrameResult) -> tuple[Frame, FrameResult]:
        frame, shot = self._held.popleft(), self._held_shots.popleft()
        assert frame.index == result.frame, (frame.index, result.frame)
        return frame, (result if result.shot == shot else replace(result, shot=shot))

    def _write(self, sinks: list[Sink], frame: Frame, result: FrameResult) -> None:
        for s in sinks:
            with self.timer.stage("write"):
                s.write(result, frame.image if s.needs_image else None)

    def track(self, source: str | Source, sinks: list[Sink] | None = None) -> Iterator[FrameResult]:
        """Results for every frame of ``source`` (a path, URL, camera index or open Source), written to ``sinks``.

        One result per frame, in order. If the consumer stops early or the run is interrupted,
        the results the lookahead still holds are written to ``sinks`` (not yielded) before this
        returns, so the sinks hold every processed frame.
        """
        src = open_source(source) if isinstance(source, str) else source
        sinks = sinks or []
        failed = False
        try:
            for frame, result in self.stream(src):
                self._write(sinks, frame, result)
                yield result
        except (SinkError, BrokenPipeError):
            failed = True
            raise
        finally:
            try:
                if not failed:
                    for frame, result in self.drain():
                        self._write(sinks, frame, result)
            finally:
                if isinstance(source, str):
                    src.close()
