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
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stableface import codec, crop as C, onnx_util
from stableface.backbone import HeatmapBackbone
from stableface.detector import BlazeFace, FaceDetector, PartialDetections, UnionDetector, small_face_tiles
from stableface.lookahead import Lookahead
from stableface.shots import ShotDetector, frame_features, landmarks_changed
from stableface.sinks import Sink, SinkError
from stableface.stabilizer import (DEVIATION, ConvLSTMStabilizer, ConvLSTMStep, Decoder, DeviationConfig, MotionConfig, NoStabilizer,
                                   OneEuroStabilizer, Stabilizer, update_many)
from stableface.tracker import Track, Tracker, box_side, inside, points_box
from stableface.types import Face, Frame, FrameResult
from stableface.video import Source, open_source
from stableface.weights import resolve

STABILIZERS = ("convlstm", "none", "one-euro")
log = logging.getLogger("stableface")


class Timer:
    """Accumulates seconds per stage (for benchmarks, ``-v`` and ``--profile``).

    Stages may nest: a stage's time excludes the stages opened inside it (PDC inside the
    stabilizer counts as ``pdc`` only), so the stages of one thread add up to its wall time
    without counting any second twice. One timer serves one thread."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self._open: list[_Stage] = []

    def add(self, stage: str, seconds: float) -> None:
        self.total[stage] += seconds
        self.count[stage] += 1

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)

    def clear(self) -> None:
        self.total.clear()
        self.count.clear()


class _Stage:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.inner = 0.0
        self.timer._open.append(self)
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        dt = time.perf_counter() - self.t0
        open_ = self.timer._open
        open_.pop()
        self.timer.add(self.name, dt - self.inner)
        if open_:
            open_[-1].inner += dt


class _TimedDecoder(Decoder):
    def __init__(self, timer: Timer, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timer = timer

    def decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.timer.stage("pdc"):
            return super().decode(heatmaps)


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
    flip_test: bool = False  # average each crop's heatmaps with its mirror's (HeatmapBackbone.flip_test)
    flow: bool = True  # follow each face by image flow: the ConvLSTM's face motion, the lookahead's face frame
    detect_tiles: bool = True  # from_weights: the full-range detector also on tiles of the frame (small faces, detector.small_face_tiles)
    deviation: DeviationConfig | None = DEVIATION  # the ConvLSTM's deviation guard (None: the network's output as it is)


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
        onnx_util.single_threaded_opencv()
        self.detector, self.backbone, self.config, self.step = detector, backbone, config, stabilizer_step
        self.timer = Timer()  # the tracking thread's stages
        self.background = _ThreadTimer()  # the reader's and writer's (they overlap the others)
        self.wall, self.frames_done = 0.0, 0  # for profile()
        self.decoder = _TimedDecoder(self.timer, backbone.size, backbone.stride, config.decoder, config.pdc_threshold,
                                     config.pdc_mode, getattr(backbone, "offset", None))  # any object with the backbone interface
        self.tracker = Tracker(self.new_stabilizer, max_faces=config.max_faces, crop_scale=backbone.crop_scale,
                               rotate=config.rotate_crops, min_score=config.min_score, sure_score=config.sure_score)
        self.lookahead = Lookahead(config.lookahead)
        # the frames whose results the lookahead still holds, and their shots (the lookahead rebuilds
        # results without them), by frame number: a Ctrl-C between holding a frame and handing its
        # result to the lookahead leaves a stale entry, never a frame paired with another's result
        self._held: dict[int, tuple[Frame, int]] = {}
        self.shots = ShotDetector()
        self._prepared: dict[int, tuple[np.ndarray, dict]] = {}  # the reader thread's work (_ahead), by frame index
        self.reset()

    @classmethod
    def from_weights(cls, weights: str | Path | None = None, stabilizer_weights: str | Path | None = None,
                     device: str = "auto", config: PipelineConfig = PipelineConfig(), threads: int = 0) -> Pipeline:
        """Build from shipped weights (default) or a folder / backbone ``.onnx`` given by the user."""
        ws = resolve(weights, stabilizer_weights)
        backbone = HeatmapBackbone(ws.backbone, device, threads, flip_test=config.flip_test)
        dets: list[FaceDetector] = [BlazeFace(ws.detector, device=device, threads=threads)]
        tiles = None
        if ws.detector_full is not None:
            dets.append(BlazeFace(ws.detector_full, device=device, threads=threads))
            if config.detect_tiles:  # small faces: the full-range model on tiles of the frame too
                tiles = small_face_tiles(dets[-1], dets[0])  # (half tiles: a second look at weak ones)
        # the step is tiny: one thread beats two on small CPUs (benchmarks/model_speed.py)
        # under a lookahead the ConvLSTM is not run; weights the user named are still loaded and checked
        wanted = config.stabilizer == "convlstm" and (not config.lookahead or stabilizer_weights is not None)
        step = ConvLSTMStep(ws.stabilizer, device, threads or 1) if wanted else None
        return cls(UnionDetector(dets, tiles), backbone, config, step)

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
        if self.config.lookahead:  # the raw landmarks, and the face's frame for the smoother (by image flow)
            return NoStabilizer(self.decoder, MotionConfig() if self.config.flow else None)
        if self.config.stabilizer == "convlstm":
            assert self.step is not None
            return ConvLSTMStabilizer(self.step, self.decoder, deviation=self.config.deviation)
        if self.config.stabilizer == "one-euro":
            return OneEuroStabilizer(self.decoder, self.config.one_euro_min_cutoff, self.config.one_euro_beta)
        return NoStabilizer(self.decoder)

    def reset(self) -> None:
        """Forget every track (call between unrelated sources)."""
        self.tracker.reset()
        self.lookahead.reset()
        self._held.clear()
        self.shots.reset()
        if hasattr(self.detector, "reset"):
            self.detector.reset()
        self.shot = 0
        self._last_image: np.ndarray | None = None
        self.last_detect = None
        self.last_timestamp = None
        self._frame_count = 0
        self._t0 = time.monotonic()
        self._source_name, self.nonfinite = None, 0  # faces dropped for NaN/Inf heatmaps (warned once per source)
        # whether the next re-detections will be used: tracks live, not all settled (set by the tracking
        # thread each frame, read by the reader's _ahead; a stale value only wastes one detection or
        # leaves it to the tracking thread)
        self._redetect_wanted = False
        self._sweep = 0  # windows of the detector's tiles still to visit since the last search (``sweep``)

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

    def _by_block(self) -> bool:
        """Whether re-detections take the model of their block (``redetect(image, turn)``), so that the
        reader thread can run them ahead: for a detector that says it may run in another thread."""
        return bool(getattr(self.detector, "thread_safe", False)) and hasattr(self.detector, "redetect")

    def _ahead(self) -> Callable[[Frame], dict] | None:
        """The per-frame work the reader thread does beside decoding, none of which depends on the
        tracks: the shot test's thumbnail and histogram (``"shots"``), and on the first frame of each
        block of ``redetect_every`` frames of the source, that block's re-detection (``"detections"``,
        with ``"block"``), unless the tracking thread has said it will not use it. The tracking thread
        uses what it needs (``_update``). The frames are counted as ``_update`` counts them (every
        frame of a finite source reaches it, in order)."""
        every = self.config.redetect_every if self._by_block() else 0
        if not (self.config.shot_cuts or every):
            return None
        detector, seen = self.detector, [0]

        def ahead(frame: Frame) -> dict:
            out = {"shots": frame_features(frame.image)} if self.config.shot_cuts else {}
            n, seen[0] = seen[0], seen[0] + 1
            if every and n % every == 0 and self._redetect_wanted:
                out["block"], out["detections"] = n // every, detector.redetect(frame.image, n // every)
            return out

        return ahead

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
        with self.timer.stage("tracker"):  # what the stages inside do not take: association, bookkeeping
            return self._update(frame, timestamp_ms)

    def _update(self, frame: Frame | np.ndarray, timestamp_ms: float | None) -> FrameResult:
        if not isinstance(frame, Frame):
            if timestamp_ms is None:  # live use without timestamps: the wall clock
                timestamp_ms = (time.monotonic() - self._t0) * 1000.0
            frame = Frame(np.ascontiguousarray(frame), self._frame_count, float(timestamp_ms))
        if self.last_timestamp is not None and frame.timestamp_ms <= self.last_timestamp:
            raise ValueError(f"timestamps must increase: got {frame.timestamp_ms} ms after {self.last_timestamp} ms "
                             "(call reset() before starting another video)")
        self.last_timestamp = frame.timestamp_ms
        self.frames_done += 1
        image, tracker = frame.image, self.tracker
        ahead = self._prepared.pop(frame.index, None)  # what the reader thread made of this frame (_ahead)
        ahead = ahead[1] if ahead is not None and ahead[0] is image else {}
        if self.config.shot_cuts:
            with self.timer.stage("shots"):
                cut = self.shots.update(image, lambda: self._landmarks_jumped(image), ahead.get("shots"))
            if cut:
                self._end_shot()
            self._last_image = image
        self._frame_count += 1
        every = self.config.redetect_every
        # while faces are tracked, a re-detection is due on the first frame of each block of `every`
        # frames of the source (after a detection in the block): the reader can run it ahead there
        block = (self._frame_count - 1) // every if every else 0
        due = self.last_detect is None or bool(every) and block != self.last_detect
        # a re-detection can only start a face where there is room, or end an unsure track: else it is skipped
        if due and tracker.settled():
            due, self.last_detect = False, block
        # after a search has found faces, the search's tiles go on, one a frame (passing over those mostly
        # under a tracked face), until each has had its turn: the faces of a new shot that only a tile
        # shows are found within as many frames as there are tiles. A due re-detection goes first (the
        # reader may have run it ahead; the sweep waits a frame); with no room for a face the sweep has
        # nothing to do (a tile's detections end no track)
        sweep = getattr(self.detector, "sweep", None) if tracker.tracks and self._sweep > 0 and not due else None
        if len(tracker.tracks) >= tracker.max_faces:
            sweep, self._sweep = None, 0
        # a dark frame in a fade through black (shots.waiting): a face found here may be the next shot's,
        # which the colours, when they come back, decide; no detection runs (a due one, or the sweep's
        # window, waits for a frame with colours)
        waiting = self.config.shot_cuts and self.shots.waiting
        if (not tracker.tracks or due or sweep is not None) and not waiting:
            with self.timer.stage("detect"):  # searching: every detector (and a tile in turn); re-detecting: one model in turn, by block
                redetect = getattr(self.detector, "redetect", None) if tracker.tracks else None
                if sweep is not None:  # (windows mostly under a tracked face's crop are passed over; at least one is taken)
                    detections = sweep(image, covered=[t.crop.inner() for t in tracker.tracks], limit=self._sweep)
                    self._sweep -= max(1, self.detector.swept)
                elif redetect is None:
                    search = getattr(self.detector, "search", self.detector.detect)
                    detections = search(image)
                    self._sweep = len(self.detector.windows(image)) - 1 if callable(getattr(self.detector, "sweep", None)) else 0
                elif ahead.get("block") == block:
                    detections = ahead["detections"]
                else:
                    detections = redetect(image, block) if self._by_block() else redetect(image)
            self.last_detect = block
            fresh = tracker.associate(detections, misses=not isinstance(detections, PartialDetections))
            if fresh:
                new = [tracker.start(d) for d in fresh]
                # a first pass from the detector's box places the landmark crop
                hm = self._heatmaps(self._crops(image, [t.crop for t in new]))
                placed: list[tuple[float, float, float, float]] = []  # landmark boxes of the faces started here
                for i in sorted(range(len(new)), key=lambda i: -box_side(fresh[i].box)):  # largest first
                    t, h = new[i], hm[i]
                    if any(inside(fresh[i].box, b) for b in placed):  # part of a face found on this frame
                        tracker.end(t)
                        continue
                    if not self._finite(h, frame):
                        tracker.end(t)
                        continue
                    pts, scores = self.decoder(h, t.crop)
                    if float(np.mean(scores)) < self.config.start_score:
                        tracker.end(t)  # a detector false positive: no face-like heatmaps
                        continue
                    if not _centre_inside(pts, image):  # a face mostly past the frame's edge: it would end at once
                        tracker.end(t)
                        continue
                    t.crop = C.box_from_landmarks(pts, self.backbone.crop_scale, rotate=self.config.rotate_crops)
                    placed.append(points_box(pts))
        seen: list[tuple[Track, np.ndarray, np.ndarray]] = []
        tracks = list(tracker.tracks)
        if tracks:
            crops = self._crops(image, [t.crop for t in tracks])
            hm = self._heatmaps(crops)
            ok = []
            for i, (t, h) in enumerate(zip(tracks, hm)):
                if self._finite(h, frame):
                    ok.append(i)
                else:
                    tracker.end(t)  # (its stabilizer never sees them)
            tracks = [tracks[i] for i in ok]
            with self.timer.stage("stabilizer"):  # all faces at once (one ConvLSTM call)
                outs = update_many([t.stabilizer for t in tracks], hm[ok], [t.crop for t in tracks], frame.timestamp_ms,
                                   crops[ok] if self.config.flow else None)
            for t, (pts, scores) in zip(tracks, outs):
                if not _centre_inside(pts, image):  # the face's centre has left the frame: it is gone
                    tracker.end(t)
                    continue
                if tracker.observe(t, pts, scores):
                    seen.append((t, pts, scores))
        live = {id(t) for t in tracker.tracks}  # by identity: a track that ended may have given its id to another
        faces = sorted((Face(t.id, t.box, t.score, pts, scores, getattr(t.stabilizer, "frame", None))
                        for t, pts, scores in seen if id(t) in live),
                       key=lambda f: f.id)
        self._redetect_wanted = bool(tracker.tracks) and not tracker.settled()
        return FrameResult(frame.index, frame.timestamp_ms, tuple(faces), self.shot)

    def stream(self, source: Source, on_frame: Callable[[Frame, FrameResult], None] | None = None) -> Iterator[tuple[Frame, FrameResult]]:
        """(frame, result) for every frame of an open source, in order; resets tracks first.

        With a lookahead of N the pairs lag the source by N frames and the last N come after the
        source ends; each result comes with its own frame. If the loop stops early (an exception, a
        break), ``drain()`` gives the pairs still held.
        """
        self.reset()
        self._source_name = getattr(getattr(source, "info", None), "name", None)  # (any iterable of Frames will do)
        frames = iter(source)
        while True:
            with self.timer.stage("read"):  # decoding, or waiting for the reader
                frame = next(frames, None)
            if frame is None:
                break
            result = self.update(frame)
            if on_frame:
                on_frame(frame, result)
            if not self.lookahead.n:
                yield frame, result
                continue
            with self.timer.stage("lookahead"):
                if frame.index in self._held:  # the lookahead refuses it too: keep the frame that is held
                    raise ValueError(f"frame indices must increase: got frame {frame.index} twice")
                self._held[frame.index] = (frame, result.shot)
                ready = [self._pair(out) for out in self.lookahead.update(result)]
            yield from ready
        yield from self.drain()

    def drain(self) -> Iterator[tuple[Frame, FrameResult]]:
        """The (frame, result) pairs the lookahead still holds, oldest first, smoothed with what there
        is; for the end of a source, or after an interrupted ``stream()``. Each pair is taken out
        as it is yielded, so a drain that stops early can be resumed by another."""
        while True:
            with self.timer.stage("lookahead"):
                out = self.lookahead.pop()
                pair = None if out is None else self._pair(out)
            if pair is None:
                return
            yield pair

    def _pair(self, result: FrameResult) -> tuple[Frame, FrameResult]:
        frame, shot = self._held.pop(result.frame)
        for stale in [i for i in self._held if i < result.frame]:  # held, but never reached the lookahead
            del self._held[stale]
        return frame, (result if result.shot == shot else replace(result, shot=shot))

    def track(self, source: str | Source | Iterable[Frame], sinks: list[Sink] | None = None,
              on_written: Callable[[FrameResult], None] | None = None, queue_size: int = 8,
              overlap: bool = True) -> Iterator[FrameResult]:
        """Results for every frame of ``source`` (a path, URL, camera index, open Source or any
        iterable of Frames), written to ``sinks``: ``track_pairs`` without the frames."""
        pairs = self.track_pairs(source, sinks, on_written, queue_size, overlap)
        with closing(pairs):  # a consumer that stops early stops the loop at once
            for _, result in pairs:
                yield result

    def track_pairs(self, source: str | Source | Iterable[Frame], sinks: list[Sink] | None = None,
                    on_written: Callable[[FrameResult], None] | None = None, queue_size: int = 8,
                    overlap: bool = True) -> Iterator[tuple[Frame, FrameResult]]:
        """(frame, result) for every frame of ``source`` (a path, URL, camera index, open Source or
        any iterable of Frames), written to ``sinks``: the one loop from frames to outputs (the CLI,
        ``demo`` and the speed benchmarks run it).

        One result per frame, in order. Decoding and writing overlap the models: a reader thread
        decodes up to ``queue_size`` frames ahead of a finite source (a live source has its own
        reader, which keeps only the newest frame), and a writer thread writes the results in order
        (``on_written(result)`` once a result is in every sink; it runs in that thread). Both
        queues are bounded, so memory stays flat; no frame of a finite source is ever dropped.
        ``overlap=False`` does both in the calling thread, one after the other.

        If the consumer stops early or the run is interrupted, the results the lookahead still
        holds are written to ``sinks`` (not yielded), every queued result is written, and the sinks
        are told what the source could not give (``Sink.footer``) before this returns, so the sinks
        hold every processed frame. An error of the reader or of a sink is raised here, in the
        consumer's thread; after a sink's error nothing more is written.
        """
        t_start = time.perf_counter()  # (opening the source is part of the run)
        if isinstance(source, str):
            with self.timer.stage("read"):
                src = open_source(source)
        else:
            src = source
        sinks = sinks or []
        live = bool(getattr(getattr(src, "info", None), "live", False))
        self._redetect_wanted = False  # (a new source: searching first)
        reader = _Reader(src, queue_size, self.background, self._ahead()) if overlap and not live else None
        self._prepared = reader.prepared if reader is not None else {}
        writer = _Writer(sinks, on_written, self.background, queue_size if overlap and sinks else 0)
        failed = False
        try:
            for frame, result in self.stream(reader if reader is not None else src):
                with self.timer.stage("write"):
                    writer.put(frame, result)
                t = time.perf_counter()
                yield frame, result
                self.timer.add("caller", time.perf_counter() - t)
        except (SinkError, BrokenPipeError):
            failed = True  # an output is gone: nothing more can be written
            raise
        except BaseException:
            failed = writer.error is not None
            raise
        finally:
            try:
                try:
                    if reader is not None:
                        reader.stop()
                    if not failed:
                        with self.timer.stage("write"):
                            for frame, result in self.drain():
                                writer.put(frame, result)
                finally:  # the writer thread is joined whatever happened above: the sinks close after it
                    with self.timer.stage("write"):
                        writer.close()
                if not failed and writer.error is None:
                    for s in sinks:
                        if hasattr(s, "footer"):  # (any object with write() is a sink here)
                            s.footer(list(getattr(src, "unreadable", ())), int(getattr(src, "dropped", 0)))
            finally:
                self._prepared = {}
                self.wall += time.perf_counter() - t_start
                if isinstance(source, str):
                    src.close()

    def profile(self) -> dict:
        """Where the time of the runs since the last ``clear_profile()`` went (``docs/formats.md``):
        the stages of the tracking thread, which add up to its wall time, and the reader's and
        writer's busy time, which overlaps them."""
        frames = max(self.frames_done, 0)
        per = (lambda v: v / frames * 1000.0) if frames else (lambda v: 0.0)
        total = sum(self.timer.total.values())
        stages = {k: {"seconds": round(v, 6), "ms_per_frame": round(per(v), 4), "calls": self.timer.count[k],
                      "share": round(v / self.wall, 4) if self.wall else 0.0}
                  for k, v in sorted(self.timer.total.items(), key=lambda kv: -kv[1])}
        other = max(self.wall - total, 0.0)
        stages["other"] = {"seconds": round(other, 6), "ms_per_frame": round(per(other), 4), "calls": 0,
                           "share": round(other / self.wall, 4) if self.wall else 0.0}
        background = {k: {"seconds": round(v, 6), "ms_per_frame": round(per(v), 4), "calls": self.background.count[k]}
                      for k, v in sorted(self.background.total.items())}
        return {"stableface_profile": 1, "frames": frames, "wall_seconds": round(self.wall, 6),
                "fps": round(frames / self.wall, 3) if self.wall else 0.0, "stages": stages, "background": background}

    def clear_profile(self) -> None:
        self.timer.clear()
        self.background.clear()
        self.wall = 0.0
        self.frames_done = 0


def _centre_inside(pts: np.ndarray, image: np.ndarray) -> bool:
    """Whether the centre of the landmarks' box lies inside the image (False for non-finite landmarks)."""
    if not np.isfinite(pts).all():
        return False
    cx, cy = (pts.min(axis=0) + pts.max(axis=0)) / 2
    h, w = image.shape[:2]
    return bool(0 <= cx < w and 0 <= cy < h)


class _Reader:
    """Decodes a finite source ahead of the pipeline in a thread, through a bounded queue (nothing is
    dropped); its errors are raised in the consumer. Looks like the source (``info``) to ``stream``.

    With ``prepare``, the thread also computes ``prepare(frame)`` for each frame, beside decoding,
    into ``prepared`` (frame index -> (image, value)); the consumer pops it, and uses it only if the
    image is the very one it holds (an iterable may repeat an index)."""

    def __init__(self, src: Source | Iterable[Frame], queue_size: int, timer: _ThreadTimer,
                 prepare: Callable[[Frame], object] | None = None) -> None:
        from stableface.video import _Pump

        self.info = getattr(src, "info", None)
        self._timer = timer
        self._prepare = prepare
        self.prepared: dict[int, tuple[np.ndarray, object]] = {}
        self._pump = _Pump(self._timed(iter(src)), newest=False, maxsize=max(1, queue_size))

    def _timed(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        while True:
            t = time.perf_counter()
            frame = next(frames, None)
            self._timer.add("decode", time.perf_counter() - t)
            if frame is None:
                return
            if self._prepare is not None:
                t = time.perf_counter()
                self.prepared[frame.index] = (frame.image, self._prepare(frame))
                self._timer.add("ahead", time.perf_counter() - t)  # Pipeline._ahead: shot test features, re-detections
            yield frame

    def __iter__(self) -> Iterator[Frame]:
        while True:
            try:
                yield self._pump.get()
            except StopIteration:
                return

    def stop(self) -> None:
        """Stop and wait for the thread (the source may be closed then)."""
        self._pump.stop(wait_s=10.0)


class _ThreadTimer(Timer):
    """A timer the reader and writer threads add to (locked; no nesting across threads)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            super().add(stage, seconds)


class _Writer:
    """Writes (frame, result) pairs to every sink, in order, in a thread behind a bounded queue
    (``queue_size`` 0: in the caller's thread). A sink's error stops the writing and is raised by
    the next ``put`` or by ``close``, in the caller's thread."""

    def __init__(self, sinks: list[Sink], on_written: Callable[[FrameResult], None] | None, timer: _ThreadTimer,
                 queue_size: int) -> None:
        self.sinks, self.on_written, self.timer = sinks, on_written, timer
        self.error: BaseException | None = None
        self._raised = False
        self._cond = threading.Condition()
        self._items: deque[tuple[Frame, FrameResult] | None] = deque()
        self._size = queue_size
        self._thread = None
        if queue_size:
            self._thread = threading.Thread(target=self._run, daemon=True, name="stableface-writer")
            self._thread.start()

    def _write(self, frame: Frame, result: FrameResult) -> None:
        t = time.perf_counter()
        for s in self.sinks:
            s.write(result, frame.image if s.needs_image else None)
        if self._thread is not None:  # (in the caller's thread, its own "write" stage has this time)
            self.timer.add("write", time.perf_counter() - t)
        if self.on_written is not None:
            self.on_written(result)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                item = self._items[0]
            if item is None:
                return
            try:
                self._write(*item)
            except BaseException as exc:  # noqa: BLE001 (handed to the caller, raised there)
                with self._cond:
                    self.error = exc
                    self._items.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                self._items.popleft()
                self._cond.notify_all()

    def _raise(self) -> None:
        if self.error is not None and not self._raised:
            self._raised = True
            raise self.error

    def put(self, frame: Frame, result: FrameResult) -> None:
        if self._thread is None:
            if self.error is None:
                try:
                    self._write(frame, result)
                except BaseException as exc:
                    self.error, self._raised = exc, True
                    raise
            return
        with self._cond:
            while len(self._items) >= self._size and self.error is None:
                self._cond.wait(0.1)  # in short steps: signals reach the caller
            self._raise()
            if self.error is None:
                self._items.append((frame, result))
                self._cond.notify_all()

    def close(self) -> None:
        """Wait until every queued pair is written; raise the writer's error if not raised yet."""
        if self._thread is not None:
            with self._cond:
                if self.error is None:
                    self._items.append(None)
                    self._cond.notify_all()
            while self._thread.is_alive():
                self._thread.join(0.1)
        self._raise()
