"""Batches of sources: output names, the per-source streaming loop, and the engines that run them.

An engine takes jobs (a source and its outputs), streams events back (a source finished; how
many frames are done) and can be cancelled. Three engines share that interface: ``InlineEngine``
tracks sources one after another in this process (``--jobs 1``), ``LocalPool`` in worker
processes of this machine (``--jobs N``) and ``stableface.ray_engine.RayEngine`` on stateful
actors of a Ray cluster (``--engine ray``). A ``Tally`` turns the finished sources into the
error lines, the batch summary and the exit code; the CLI draws progress and prints.

Every output file is written by the atomic sinks (``NAME.<pid>.partial``, renamed when complete),
so a file under its final name is a finished one, except after an interrupt of a local run, where
the outputs are closed valid up to the last frame (``resumable`` engines remove them instead, so
that ``--skip-existing`` can trust the final names).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger("stableface")


class Interrupted(BaseException):
    """SIGTERM. Like ``KeyboardInterrupt`` it is not an ``Exception``: sinks left by it close their
    outputs (valid up to the last frame) instead of dropping them as failed."""

    def __init__(self, code: int) -> None:
        self.code = code


class PlanError(Exception):
    """The outputs of a batch cannot be written as asked (exists, is a folder, is an input, given
    twice, names collide): refused before any work. ``usage``: a command-line mistake (show usage)."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


_stopping: list[int] = []  # the exit code of the interrupt this process is stopping for, and a count of later ones


def _on_stop_signal(signum, frame) -> None:  # noqa: ARG001
    """The first SIGINT or SIGTERM raises (``KeyboardInterrupt``, ``Interrupted(143)``), so every ``finally``
    closes its outputs. Later ones do not raise: an exception thrown into the closing (a video encoder
    being flushed while the writer thread still encodes) hung or crashed it and lost the outputs. The
    third gives up on closing and ends the process at once."""
    code = 130 if signum == signal.SIGINT else 143
    if not _stopping:
        _stopping.append(code)
        if code == 130:
            raise KeyboardInterrupt
        raise Interrupted(143)
    _stopping.append(code)
    if len(_stopping) == 2:
        print("stableface: stopping: closing the outputs (a third interrupt quits without them)", file=sys.stderr,
              flush=True)
    else:
        os._exit(_stopping[0])


@contextmanager
def term_signals(sigint: bool = True) -> Iterator[None]:
    """SIGTERM becomes an exception like Ctrl-C, so every ``finally`` closes its outputs; an interrupt
    while they close is noted, not raised (``_on_stop_signal``). Once one has arrived the handlers stay
    until the process ends: the callers' own cleanup after this block is protected too. ``sigint=False``
    (a ``--jobs`` worker, whose parent decides on Ctrl-C): SIGTERM only."""
    old = {s: signal.signal(s, _on_stop_signal) for s in ((signal.SIGINT, signal.SIGTERM) if sigint else (signal.SIGTERM,))}
    try:
        yield
    finally:
        if not _stopping:
            for s, h in old.items():
                signal.signal(s, h)


def _quiet_opencv() -> None:
    """OpenCV logs its own warnings (e.g. a missing camera) to stderr; our one-line errors replace them."""
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except (ImportError, AttributeError):
        pass


def setup_logging(verbose: int, quiet: bool) -> None:
    """``stableface: message`` lines on stderr: warnings, ``-v`` info, ``-vv`` debug (the CLI and its workers)."""
    if verbose < 2:
        _quiet_opencv()
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="stableface: %(message)s", stream=sys.stderr, force=True)


def _file_key(path: str) -> tuple:
    """The same key for two names of one file (symlinks, ``..``, hard links)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", real)


def _name_parts(spec: str) -> tuple[str, list[str]]:
    """(stem, parent folder names from the root down) of a source, for ``--out-dir`` names."""
    if "://" in spec:  # a URL: the stem of its path's last part (``http://h/clip.mp4`` -> ``clip``), as a file's
        rest = spec.split("://", 1)[1].split("?", 1)[0]
        comps = [re.sub(r"[^\w.-]+", "_", c) for c in rest.split("/") if c]
        stem = Path(comps[-1]).stem if len(comps) > 1 else ""
        return (stem, comps[:-1]) if stem else ("stream", comps)
    p = Path(os.path.abspath(spec))
    return p.stem or "source", [re.sub(r"[^\w.-]+", "_", c) for c in p.parent.parts[1:]]


def out_dir_names(sources: list[str]) -> list[str]:
    """File stems for ``--out-dir``: each source's own stem; sources that share one get their parent
    folders' names prepended, one folder at a time, until they differ (``d1/a.mp4 -> d1_a``,
    ``d2/a.mp4 -> d2_a``). Names are compared ignoring case (as some file systems do); sources whose
    names still collide raise ``PlanError`` naming them."""
    parts = [_name_parts(s) for s in sources]
    depth = [0] * len(sources)

    def name(i: int) -> str:
        stem, parents = parts[i]
        return "_".join(parents[len(parents) - depth[i]:] + [stem]) if depth[i] else stem

    while True:
        groups: dict[str, list[int]] = defaultdict(list)
        for i in range(len(sources)):
            groups[name(i).casefold()].append(i)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            return [name(i) for i in range(len(sources))]
        grew = False
        for g in clashes:
            for i in g:
                if depth[i] < len(parts[i][1]):
                    depth[i] += 1
                    grew = True
        if not grew:
            g = clashes[0]
            raise PlanError(f"--out-dir: {sources[g[0]]} and {sources[g[1]]} would write the same file: "
                            "rename one, or run them separately")


def output_plan(sources: list[str], outputs: tuple[str, ...], out_dir: Path | None, fmt: str,
                overwrite: bool = False, inputs: tuple[str, ...] = (), skip_existing: bool = False) -> list[list[str]]:
    """The outputs of each source, checked before any work: formats, no folder given as ``-o``, no
    file written twice, no output that is also an input (even with ``overwrite``), none that exists
    (unless ``overwrite``; with ``skip_existing``, a source whose outputs are all there is exempt:
    it is done, see ``outputs_complete``). ``inputs``: more input files than ``sources`` (a
    --from-file list). PlanError says what is wrong."""
    from stableface.sinks import kind_of

    for o in outputs:
        try:
            kind_of(o)
        except ValueError as exc:
            raise PlanError(str(exc), usage=True) from None
        if o != "-" and Path(o).is_dir():
            raise PlanError(f"-o {o}: is a folder; -o takes a file name (for a folder, --out-dir)")
    if len(sources) > 1 and outputs and any(o != "-" for o in outputs):
        raise PlanError("with several sources use --out-dir DIR --format json|jsonl|csv (or -o - for JSONL on stdout)",
                        usage=True)
    names = out_dir_names(sources) if out_dir is not None else []
    plans: list[list[str]] = []
    for i, _ in enumerate(sources):
        outs = list(outputs)
        if out_dir is not None:
            outs.append(str(out_dir / f"{names[i]}.{fmt}"))
        plans.append(outs)
    read = {_file_key(s): s for s in [*sources, *inputs] if "://" not in s and not s.isdigit()}
    written: dict[tuple, str] = {}
    for outs in plans:
        if outs.count("-") > 1:
            raise PlanError("-o - is given twice")
        for o in outs:
            if o == "-":
                continue
            key = _file_key(o)
            if key in read:
                raise PlanError(f"{o} is also an input ({read[key]}): choose another output name")
            if key in written:
                raise PlanError(f"{o}: given twice as an output" + (f" (as {written[key]})" if written[key] != o else ""))
            written[key] = o
    if not overwrite:
        existing = sorted({o for outs in plans if not (skip_existing and outputs_complete(outs))
                           for o in outs if o != "-" and Path(o).exists()
                           and not (skip_existing and Path(o + CUT_SHORT).exists())})  # (redone: replaced)
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise PlanError(f"{existing[0]}{more} already exists: use --overwrite to replace it")
    return plans




CUT_SHORT = ".cut-short"
"""Beside an output an interrupt cut short (``NAME.cut-short``): the file is valid up to its last frame but
the source is not finished, and ``--skip-existing`` runs it again (which removes the mark)."""


def outputs_complete(outs: list[str]) -> bool:
    """A source is done when it has output files, every one stands under its final name (the sinks only
    ever rename a closed file in), and none is marked cut short by an interrupt (``CUT_SHORT``; a
    resumable run removes such files instead)."""
    files = [o for o in outs if o != "-"]
    return bool(files) and all(Path(o).is_file() and not Path(o + CUT_SHORT).exists() for o in files)


def mark_cut_short(outs: Iterable[str]) -> None:
    """Mark the outputs of a source an interrupt cut short (``CUT_SHORT``), so that a resumed batch redoes it."""
    for o in outs:
        if o != "-" and Path(o).is_file():
            try:
                Path(o + CUT_SHORT).write_text("cut short by an interrupt: valid up to its last frame; "
                                               "stableface track --skip-existing runs this source again\n")
            except OSError:
                pass


def clear_cut_short(outs: Iterable[str]) -> None:
    for o in outs:
        if o != "-":
            Path(o + CUT_SHORT).unlink(missing_ok=True)


@dataclass
class SourceReport:
    """What became of one source: frames written, faces, and what the source could not give."""

    spec: str
    frames: int = 0
    faces: int = 0
    unreadable: list[int] = field(default_factory=list)  # frames that could not be decoded
    dropped: int = 0  # live: stale frames skipped
    live: bool = False
    stop_reason: str | None = None  # why the source ended early
    error: str | None = None  # it failed: its outputs were removed

    @property
    def incomplete(self) -> bool:
        """A finite source that did not give all its frames (its outputs hold the others)."""
        return self.error is None and not self.live and (bool(self.unreadable) or self.stop_reason is not None)

    def incomplete_line(self) -> str:
        n = len(self.unreadable)
        what = (f"{n} of {self.frames + n} frames could not be decoded (frame{'s' if n > 1 else ''} "
                f"{_ranges(self.unreadable)})" if n else "decoding stopped early")
        reason = f"; {self.stop_reason}" if self.stop_reason else ""
        return f"{self.spec}: incomplete: {what}{reason}; the outputs hold the other {self.frames} frames"


def _ranges(numbers: list[int], limit: int = 6) -> str:
    """``[3, 4, 5, 9]`` -> ``3-5, 9``; more than ``limit`` runs are counted, not listed."""
    runs: list[list[int]] = []
    for v in sorted(numbers):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    text = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs[:limit])
    return text + (f" and {len(runs) - limit} more runs" if len(runs) > limit else "")


def _live_note(src, frames: int, ended: bool) -> None:
    """A live source says on stderr when it ended by itself, and how many stale frames it dropped."""
    dropped = (f"{src.dropped} stale frame{'s' if src.dropped != 1 else ''} dropped (processing was slower than "
               "the source)") if src.dropped else ""
    if ended and src.stop_reason:
        log.warning("%s: %s after %d frames%s", src.info.name, src.stop_reason, frames, f"; {dropped}" if dropped else "")
    elif dropped:
        log.warning("%s: %d frames; %s", src.info.name, frames, dropped)


class _LiveStatus:
    """One status line for a live source on a terminal (stderr), rewritten in place a few times a second:
    processing rate, faces in the last frame, frames written (and stale frames dropped)."""

    def __init__(self, name: str, every_s: float = 0.25) -> None:
        self.name, self.every_s, self.last, self.shown = name, every_s, 0.0, False

    def update(self, fps: float, faces: int, frames: int, dropped: int, force: bool = False) -> None:
        self.values = (fps, faces, frames, dropped)
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return
        self.last, self.shown = now, True
        text = (f"{self.name}: {fps:.1f} fps, {faces} face{'s' if faces != 1 else ''}, {frames} frames written"
                + (f", {dropped} dropped" if dropped else ""))
        sys.stderr.write("\r\x1b[K" + text)
        sys.stderr.flush()

    def end(self, frames: int, dropped: int) -> None:
        """The last values (the frames a lookahead held are written by now); the line then stays."""
        if self.shown:
            fps, faces = self.values[:2]
            self.update(fps, faces, frames, dropped, force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()


def _run_source(pipe, spec: str, outs: list[str], sequence: bool, show_progress: bool, stabilizer: str,
                show: bool = False, reconnect: int = 0) -> SourceReport:
    """Track one source into its outputs. Raises SourceError/SinkError.

    With a lookahead, the frames it still holds are written before the outputs close, also when
    the run is interrupted (KeyboardInterrupt, Interrupted): every processed frame, in order.
    The outputs are told which frames the source could not give (``Sink.footer``).
    """
    from contextlib import closing

    import cv2

    from stableface.draw import draw_result
    from stableface.sinks import SinkError, VideoSink, open_sink
    from stableface.video import open_source

    with ExitStack() as stack:
        src = stack.enter_context(open_source(spec, sequence=sequence, reconnect=reconnect))
        sinks = [stack.enter_context(open_sink(o, src.info, pipe.scheme, pipe.stabilizer_label, pipe.backbone.k,
                                               lookahead=pipe.config.lookahead, audio_from=src.media_path)) for o in outs]
        written = [0, 0]  # frames and faces in every output (counted by the writer thread)

        def on_written(result) -> None:
            written[0] += 1
            written[1] += len(result.faces)

        progress = status = None
        if show_progress and src.info.live:  # no end to show a bar to: a status line
            status = _LiveStatus(src.info.name)
        elif show_progress:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                       TimeRemainingColumn)

            progress = stack.enter_context(Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[fps]:>6.1f} fps"), TimeRemainingColumn(), transient=False,
                console=Console(stderr=True), redirect_stdout=False))
            task = progress.add_task(Path(spec).name if "://" not in spec else spec, total=src.info.frame_count, fps=0.0)
        t0 = time.perf_counter()
        window = None
        if show:
            window = "stableface"
            cv2.namedWindow(window, cv2.WINDOW_NORMAL)
        fps_ema = 0.0
        last = time.perf_counter()
        failed = ended = False
        pairs = pipe.track_pairs(src, sinks, on_written)  # its end writes what a lookahead holds, and the footers
        try:
            with closing(pairs):
                for frame, result in pairs:
                    now = time.perf_counter()
                    inst = 1.0 / max(now - last, 1e-6)
                    fps_ema = inst if fps_ema == 0 else 0.9 * fps_ema + 0.1 * inst
                    last = now
                    for s in sinks:
                        if isinstance(s, VideoSink):
                            s.fps_text = f"{fps_ema:.1f} fps"
                    if progress is not None:
                        progress.update(task, completed=written[0], fps=written[0] / max(now - t0, 1e-6))
                    if status is not None:
                        status.update(fps_ema, len(result.faces), written[0], src.dropped)
                    if window is not None:
                        cv2.imshow(window, draw_result(frame.image, result, f"{fps_ema:.1f} fps"))
                        key = cv2.waitKey(1) & 0xFF
                        if key in (ord("q"), 27):
                            break
                else:
                    ended = True
        except (SinkError, BrokenPipeError):
            failed = True  # an output is gone: nothing more can be written
            raise
        finally:
            if not failed:  # the end, a quit key or an interrupt: every frame is written by now
                if status is not None:
                    status.end(written[0], src.dropped)
                if src.info.live:
                    _live_note(src, written[0], ended)
        if progress is not None:  # containers can announce more frames than they hold
            progress.update(task, total=written[0], completed=written[0])
        if window is not None:
            cv2.destroyWindow(window)
    return SourceReport(spec, written[0], written[1], list(src.unreadable), src.dropped, src.info.live,
                        None if src.info.live else src.stop_reason)


def print_timings(pipe, frames: int) -> None:
    """``-v``: ms per frame of each stage of the tracking thread (they add up to its wall time: none
    is counted twice), then the reader's and writer's busy time, which overlaps them."""
    prof = pipe.profile()
    if frames and prof["frames"]:
        parts = ", ".join(f"{k} {v['ms_per_frame']:.2f}" for k, v in prof["stages"].items())
        log.info("per frame (ms): %s; total %.2f ms = %.1f fps", parts, prof["wall_seconds"] / prof["frames"] * 1000,
                 prof["fps"])
        if prof["background"]:
            log.info("overlapped, in the reader and writer threads (ms per frame): %s",
                     ", ".join(f"{k} {v['ms_per_frame']:.2f}" for k, v in prof["background"].items()))


def write_profile(pipe, path: Path | None, sources: int) -> None:
    """``--profile FILE``: the run's per-stage timing table as JSON (docs/formats.md)."""
    if path is None:
        return
    import json

    from stableface import __version__

    doc = {"stableface_version": __version__, "sources": sources, **pipe.profile()}
    try:
        path.write_text(json.dumps(doc, indent=1) + "\n")
    except OSError as exc:
        log.warning("--profile %s: cannot write it (%s)", path, exc.strerror)


# --jobs: each worker process builds its pipeline once
_WORKER: dict = {}


def build_pipeline(build_args: tuple, threads: int = 0):
    """The pipeline of ``build_args`` (weights, stabilizer, stabilizer_weights, device, max_faces,
    redetect_every, lookahead, flip_test, small_faces); ``threads``: onnxruntime intra-op threads of every
    model (0: ``onnx_util.default_threads()``, every CPU but one).
    Raises ``WeightsError``."""
    from stableface.pipeline import Pipeline, PipelineConfig

    weights, stabilizer, stabilizer_weights, device, max_faces, redetect_every, lookahead, flip_test, small_faces = build_args
    cfg = PipelineConfig(stabilizer=stabilizer, max_faces=max_faces, redetect_every=redetect_every, lookahead=lookahead,
                         flip_test=flip_test, detect_tiles=small_faces)
    return Pipeline.from_weights(weights, stabilizer_weights, device=device, config=cfg, threads=threads)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def track_guarded(pipe, spec: str, outs: list[str], sequence: bool, show_progress: bool, stabilizer: str,
                  reconnect: int = 0) -> SourceReport:
    """One source of a batch: a failure, foreseen or not, is that source's (its report says why, its
    outputs are removed), never the end of the batch. A closed ``-o -`` pipe still ends the run."""
    from stableface.sinks import SinkError
    from stableface.video import SourceError

    clear_cut_short(outs)  # (an earlier run's mark: this run writes them again, and marks them if it is cut short)
    try:
        return _run_source(pipe, spec, outs, sequence, show_progress, stabilizer, reconnect=reconnect)
    except (SourceError, SinkError) as exc:
        return SourceReport(spec, error=str(exc))
    except BrokenPipeError:
        raise
    except Exception as exc:  # a library error no check foresaw: this source fails, the batch goes on
        log.debug("%s failed", spec, exc_info=True)
        return SourceReport(spec, error=f"{spec}: failed ({type(exc).__name__}: {_one_line(exc)}; -vv shows where)")


class Tally:
    """The batch's account: each finished source's lines as it ends (through ``echo``), then the
    summary and the exit code (0 all done; 1 a source failed or was incomplete)."""

    def __init__(self, n: int, echo: Callable[[str], None], quiet: bool = False) -> None:
        self.n, self.echo, self.quiet = n, echo, quiet
        self.failures: list[str] = []
        self.incomplete: list[str] = []
        self.faceless: list[str] = []
        self.frames = self.done = 0

    def add(self, rep: SourceReport, progress: bool = False) -> None:
        """The lines for one finished source, and its place in the summary."""
        self.done += 1
        self.frames += rep.frames
        if rep.error:
            self.failures.append(rep.error)
            self.echo(f"stableface: error: {rep.error}")
            return
        if not self.quiet and not progress:
            log.info("%s: %d frames, %d faces", rep.spec, rep.frames, rep.faces)
        if rep.incomplete:
            line = rep.incomplete_line()
            self.incomplete.append(line)
            self.echo(f"stableface: error: {line}")
        if rep.frames and not rep.faces:  # worth a warning, even without -v
            self.faceless.append(rep.spec)
            log.warning("no face found in %s", rep.spec)

    def summarise(self) -> int:
        """The batch's last lines; the exit code."""
        if self.faceless and self.n > 1:
            log.warning("%d of %d sources had no face in any frame", len(self.faceless), self.n)
        if self.n > 1:
            for what, lines in (("failed", self.failures),
                                ("incomplete (their outputs hold the frames that could be decoded)", self.incomplete)):
                if lines:
                    self.echo(f"stableface: {len(lines)} of {self.n} sources {what}:")
                    for f in lines:
                        self.echo(f"  - {f}")
        return 1 if self.failures or self.incomplete else 0


@dataclass(frozen=True)
class Job:
    """One source of a batch and the outputs it writes; ``index``: its place in the batch."""

    index: int
    spec: str
    outs: tuple[str, ...]


@dataclass(frozen=True)
class Finished:
    """A source is done (or failed: ``report.error``)."""

    job: Job
    report: SourceReport


@dataclass(frozen=True)
class Progress:
    """Frames written so far over the whole batch, of ``total`` (an estimate from the containers'
    frame counts while sources are still to come; None: unknown), and sources finished / failed."""

    frames: int
    total: int | None
    done: int
    failed: int


Event = Finished | Progress


class Engine(Protocol):
    """Runs the jobs it is given; ``events()`` streams what happens until every job has finished;
    ``cancel()`` stops at once: queued jobs are dropped and running ones stopped."""

    def submit(self, jobs: Iterable[Job]) -> None: ...

    def events(self) -> Iterator[Event]: ...

    def cancel(self) -> None: ...


def jobs_of(specs: list[str], plans: list[list[str]], skip: Callable[[list[str]], bool] = lambda outs: False) -> list[Job]:
    return [Job(i, spec, tuple(outs)) for i, (spec, outs) in enumerate(zip(specs, plans)) if not skip(outs)]


def remove_outputs(outs: Iterable[str]) -> None:
    """The files of a source an interrupt cut short (resumable runs: a final name means finished)."""
    for o in outs:
        if o != "-":
            Path(o).unlink(missing_ok=True)


class InlineEngine:
    """Sources one after another in this process; each one draws its own bar (``show_progress``).
    A closed ``-o -`` pipe (BrokenPipeError) and interrupts come out of ``events()``; ``current``
    is then the job that was running."""

    def __init__(self, pipe, sequence: bool, stabilizer: str, show_progress: bool, reconnect: int = 0,
                 resumable: bool = False) -> None:
        self.pipe, self.sequence, self.stabilizer = pipe, sequence, stabilizer
        self.show_progress, self.reconnect, self.resumable = show_progress, reconnect, resumable
        self.drops_cut_short = resumable  # cancel() leaves complete files only
        self.queue: deque[Job] = deque()
        self.current: Job | None = None

    def submit(self, jobs: Iterable[Job]) -> None:
        self.queue.extend(jobs)

    def events(self) -> Iterator[Event]:
        while self.queue:
            self.current = job = self.queue.popleft()
            rep = track_guarded(self.pipe, job.spec, list(job.outs), self.sequence, self.show_progress, self.stabilizer,
                                reconnect=self.reconnect)
            self.current = None
            yield Finished(job, rep)

    def cancel(self) -> None:
        self.queue.clear()
        if self.current is not None:  # (its sinks have closed: what partial files are left, an interrupt left)
            drop_partials(self.current.outs, os.getpid())
            (remove_outputs if self.resumable else mark_cut_short)(self.current.outs)


# --jobs: each worker process builds its pipeline once
_WORKER: dict = {}


def _worker_init(build_args: tuple, sequence: bool, stabilizer: str, verbose: int = 0, quiet: bool = False,
                 threads: int = 0) -> None:
    import signal as _signal

    from stableface.onnx_util import WeightsError

    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # the parent decides; it terminates the pool
    setup_logging(verbose, quiet)  # the pipeline's warnings reach stderr as the parent's do
    try:
        _WORKER.update(pipe=build_pipeline(build_args, threads), sequence=sequence, stabilizer=stabilizer)
    except WeightsError as exc:  # the parent checked them; the files changed since
        print(f"stableface: error: {exc}", file=sys.stderr)
        sys.exit(2)


def _worker_run(job: tuple[str, list[str]]) -> SourceReport:
    spec, outs = job
    with term_signals(sigint=False):
        return track_guarded(_WORKER["pipe"], spec, outs, _WORKER["sequence"], False, _WORKER["stabilizer"])


def _worker_main(conn, build_args: tuple, sequence: bool, stabilizer: str, verbose: int, quiet: bool,
                 threads: int) -> None:
    """A --jobs worker: builds its pipeline once, says so, then tracks the sources it is sent, one at
    a time, sending back each one's report; ``None`` ends it."""
    _worker_init(build_args, sequence, stabilizer, verbose, quiet, threads)
    conn.send("ready")
    try:
        while (job := conn.recv()) is not None:
            conn.send(_worker_run(job))
    except Interrupted as exc:  # the parent stops the batch: outputs were closed; no traceback
        sys.exit(exc.code)
    except (EOFError, OSError):  # the parent is gone
        sys.exit(1)


class _Worker:
    """One worker process, and the source it is tracking now (None: idle, or still starting)."""

    def __init__(self, ctx, args: tuple) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.job: Job | None = None


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def drop_partials(outs: Iterable[str], pid: int) -> None:
    """The partial and lock files that process ``pid`` left: a dead worker (a run that is killed cannot
    remove its own), or this process once an interrupt has ended its source (one that came while a
    sink was opening, before the run held it, leaves its files behind)."""
    from stableface.sinks import holder_of, lock_path, partial_path

    for o in outs:
        if o != "-":
            for keep in (False, True):
                p = partial_path(Path(o), keep_suffix=keep)
                p.with_name(p.name.replace(f".{os.getpid()}.", f".{pid}.")).unlink(missing_ok=True)
            if holder_of(o) in (None, str(pid)):  # its lock died with it, or it is ours (and its source is over)
                lock_path(Path(o)).unlink(missing_ok=True)


def worker_threads(jobs: int, cpus: int | None = None) -> int:
    """onnxruntime threads of each of ``jobs`` workers on ``cpus`` CPUs (default: those this process
    may use): a share each, at least one, so that the workers together do not oversubscribe the machine."""
    from stableface.onnx_util import available_cpus

    return max(1, (cpus if cpus is not None else available_cpus()) // max(1, jobs))


class LocalPool:
    """Sources in ``jobs`` worker processes of this machine (spawned: no inherited onnxruntime threads).

    A worker tracks one source at a time, so the source of a worker that dies (SIGKILL, out of
    memory) is known: its partial files are removed and it is tried once more in a new worker,
    then reported as failed; the rest of the batch goes on. ``cancel()`` (Ctrl-C / SIGTERM): queued
    sources are dropped, the workers are stopped (SIGTERM: each closes its outputs up to its last
    frame, which ``resumable`` then removes; one that takes longer than a second is killed).
    """

    def __init__(self, jobs: int, build_args: tuple, sequence: bool, stabilizer: str, verbose: int = 0,
                 quiet: bool = False, resumable: bool = False) -> None:
        self.jobs, self.resumable = jobs, resumable
        self.drops_cut_short = resumable  # cancel() leaves complete files only
        self.args = (build_args, sequence, stabilizer, verbose, quiet, worker_threads(jobs))
        self.queue: deque[Job] = deque()
        self.workers: list[_Worker] = []
        self.n = 0

    def submit(self, jobs: Iterable[Job]) -> None:
        jobs = list(jobs)
        self.queue.extend(jobs)
        self.n += len(jobs)

    def events(self) -> Iterator[Event]:
        import multiprocessing as mp
        from multiprocessing.connection import wait

        ctx = mp.get_context("spawn")
        tries: dict[int, int] = defaultdict(int)
        done = 0
        start_deaths = 0  # workers that died before taking a source
        workers = self.workers
        workers.extend(_Worker(ctx, self.args) for _ in range(min(self.jobs, len(self.queue))))
        while done < self.n:
            for w in workers:
                if w.ready and w.job is None and self.queue:
                    w.job = self.queue.popleft()
                    tries[w.job.index] += 1
                    try:
                        w.conn.send((w.job.spec, list(w.job.outs)))
                    except OSError:
                        pass  # it has just died: its sentinel says so below
            ready = wait([w.conn for w in workers] + [w.proc.sentinel for w in workers], timeout=1.0)
            for w in list(workers):
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = None  # it died: its sentinel says so below
                    if msg == "ready":
                        w.ready = True
                    elif isinstance(msg, SourceReport):
                        job, w.job = w.job, None
                        done += 1
                        yield Finished(job, msg)
                if w.proc.sentinel in ready or not w.proc.is_alive():
                    w.proc.join()
                    workers.remove(w)
                    why = _death(w.proc.exitcode)
                    if w.job is None:
                        start_deaths += 1
                    else:
                        job = w.job
                        drop_partials(job.outs, w.proc.pid)
                        if tries[job.index] < 2:
                            log.warning("%s: its worker process died (%s); trying it once more", job.spec, why)
                            self.queue.appendleft(job)
                        else:
                            done += 1
                            remove_outputs(job.outs)  # a failed source leaves no output (a SIGTERMed worker closes them)
                            yield Finished(job, SourceReport(job.spec, error=f"{job.spec}: its worker process died "
                                                                            f"({why}), twice"))
                    if start_deaths >= 3:  # workers that cannot even start: the rest cannot be tracked
                        while self.queue:
                            job = self.queue.popleft()
                            done += 1
                            yield Finished(job, SourceReport(job.spec, error=f"{job.spec}: not tracked: worker "
                                                                            f"processes die as they start ({why})"))
                    elif self.queue and len(workers) < min(self.jobs, len(self.queue) + sum(x.job is not None for x in workers)):
                        workers.append(_Worker(ctx, self.args))
        for w in workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in workers:
            w.proc.join(timeout=5)

    def cancel(self) -> None:
        self.queue.clear()
        for w in self.workers:
            if w.proc.is_alive():
                w.proc.terminate()  # SIGTERM: a worker closes its outputs up to its last frame
        deadline = time.monotonic() + 1.0
        for w in self.workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            if w.job is not None:  # (a worker stopped while a sink was opening leaves its partial file too)
                drop_partials(w.job.outs, w.proc.pid)
                (remove_outputs if self.resumable else mark_cut_short)(w.job.outs)
