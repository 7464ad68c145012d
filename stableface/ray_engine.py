"""``track --engine ray``: one task per source on stateful workers (Ray actors) of a cluster.

Each worker builds its pipeline once (the models load once per worker, not per source) with as
many onnxruntime threads as the CPUs it holds, then tracks the sources it is given one at a time
with the same loop as a local run (``batch.track_guarded``): the results are the same. The driver
gives each idle worker the next source, so the source a dead worker was tracking is known: its
partial files are removed and it is tried once more on a new worker, then reported as failed.

Files are written by the workers, straight to their final paths through the atomic sinks
(``NAME.<pid>.partial``, renamed when complete): on one machine that is simply the path given;
on a cluster the sources and ``--out-dir`` must be at the same path on every node (a shared
file system), because a worker reads and writes where it runs, and the driver removes what a dead
worker left by its name. ``cancel()`` kills the workers and removes the partial files of the
sources they were tracking: only complete files remain.

Progress: each worker reports the frames written of its source to a small board actor a few
times a second; the driver reads the board and sends ``batch.Progress`` events.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from stableface.batch import Event, Finished, Job, Progress, SourceReport, _one_line, drop_partials

log = logging.getLogger("stableface")


class ClusterError(Exception):
    """Ray is missing, or the cluster cannot be reached or used: one line, exit 2."""


def _reachable(address: str, timeout: float = 3.0) -> None:
    """A ``host:port`` (or ``ray://host:port``) that accepts no connection: ClusterError at once
    (``ray.init`` would wait a minute and print its own warnings)."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray resolves them
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc})") from None


def connect(address: str | None) -> str:
    """Join the cluster at ``address`` (or $RAY_ADDRESS), or start a local Ray instance when neither
    is given; returns the address used. ClusterError when Ray is missing or the cluster is unreachable."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError("--engine ray needs Ray: pip install 'stableface[ray]'") from None
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if ray.is_initialized():
        return address
    if address != "local":
        _reachable(address)
    kwargs = {"include_dashboard": False} if address == "local" else {}
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, **kwargs)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ... for one problem
        raise ClusterError(f"cannot use the Ray cluster at {address} ({_one_line(exc)})") from None
    return address


class _Counting:
    """The pipeline, reporting the frames written to every output through ``report(frames, announced)``."""

    def __init__(self, pipe, report) -> None:
        self._pipe, self._report, self.frames = pipe, report, 0

    def __getattr__(self, name: str):
        return getattr(self._pipe, name)

    def track_pairs(self, source, sinks=None, on_written=None, *args, **kwargs):
        self._report(0, source.info.frame_count)

        def counted(result) -> None:  # (in the pipeline's writer thread, once the frame is in every output)
            self.frames += 1
            self._report(self.frames, None)
            if on_written is not None:
                on_written(result)

        return self._pipe.track_pairs(source, sinks, counted, *args, **kwargs)


class _Collect(logging.Handler):
    """The warnings a worker logs while it tracks a source, to be logged again by the driver."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


class SourceWorker:
    """A Ray actor: builds the pipeline once, then tracks one source per ``track`` call."""

    def __init__(self, build_args: tuple, sequence: bool, stabilizer: str, verbose: int, quiet: bool, board,
                 progress_every: float, cwd: str) -> None:
        import signal

        import ray

        from stableface.batch import build_pipeline, setup_logging

        try:  # the driver decides: it kills the workers (a worker left to close on SIGINT would keep a cut file)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        self.threads = max(1, int(round(cpus)))
        setup_logging(verbose, quiet)
        self.level = logging.getLogger("stableface").level
        self.pipe = build_pipeline(build_args, threads=self.threads)
        self.sequence, self.stabilizer, self.board, self.every = sequence, stabilizer, board, progress_every
        self.cwd = cwd  # relative sources and outputs mean what they mean on the driver (a shared path)

    def hello(self) -> tuple[int, str, float, int]:
        """(pid, host, CPUs held, the backbone session's onnxruntime intra-op threads)."""
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
        return os.getpid(), socket.gethostname(), cpus, self.pipe.backbone.session.get_session_options().intra_op_num_threads

    def track(self, index: int, attempt: int, spec: str, outs: list[str]) -> tuple[SourceReport, list[tuple[int, str]]]:
        from stableface.batch import track_guarded

        last = [0.0]

        def report(frames: int, announced: int | None) -> None:
            now = time.monotonic()
            if self.every and (announced is not None or frames == 0 or now - last[0] >= self.every):
                last[0] = now
                self.board.report.remote(index, attempt, frames, announced)

        try:
            os.chdir(self.cwd)
        except OSError as exc:
            return SourceReport(spec, error=f"{spec}: the driver's working folder {self.cwd} is not on the Ray worker's "
                                            f"node ({exc.strerror}): give absolute paths on a shared file system"), []
        logger = logging.getLogger("stableface")
        collect = _Collect()
        collect.setLevel(self.level)
        logger.addHandler(collect)
        try:
            rep = track_guarded(_Counting(self.pipe, report), spec, outs, self.sequence, False, self.stabilizer)
        finally:
            logger.removeHandler(collect)
        if self.every:
            self.board.report.remote(index, attempt, rep.frames, None)
        return rep, collect.records


class ProgressBoard:
    """A Ray actor (no CPU): the frames written of each source, by (source index, attempt)."""

    def __init__(self) -> None:
        self.jobs: dict[int, tuple[int, int, int | None]] = {}

    def report(self, index: int, attempt: int, frames: int, announced: int | None) -> None:
        old = self.jobs.get(index)
        if old is not None and old[0] > attempt:
            return  # a late word from an attempt that died
        if announced is None and old is not None and old[0] == attempt:
            announced = old[2]
        self.jobs[index] = (attempt, frames, announced)

    def snapshot(self) -> dict[int, tuple[int, int, int | None]]:
        return self.jobs


@dataclass
class _Actor:
    handle: object
    hello: object  # the ObjectRef of hello(), until it is answered
    pid: int | None = None
    host: str | None = None
    job: Job | None = None
    attempt: int = 0
    ref: object = None  # the running track() call


class RayEngine:
    """Sources as Ray tasks on ``workers`` stateful actors of ``cpus`` CPUs each (default: as many
    as the cluster's CPUs hold), behind ``batch.Engine``'s interface."""

    reports_frames = True  # sends batch.Progress: one bar over every frame of the batch
    drops_cut_short = True  # cancel() leaves complete files only

    def __init__(self, build_args: tuple, sequence: bool, stabilizer: str, verbose: int = 0, quiet: bool = False,
                 address: str | None = None, workers: int | None = None, cpus: int = 1,
                 progress_every: float = 0.25) -> None:
        self.args = (build_args, sequence, stabilizer, verbose, quiet)
        self.address, self.workers, self.cpus, self.every = address, workers, cpus, progress_every
        self.queue: deque[tuple[Job, int]] = deque()
        self.actors: list[_Actor] = []
        self.board = None
        self.n = 0
        self.indices: list[int] = []
        self._cls = None

    def connect(self) -> None:
        import ray

        self.address = connect(self.address)
        have = ray.cluster_resources().get("CPU", 0)
        if have < self.cpus:
            raise ClusterError(f"the Ray cluster at {self.address} has {have:g} CPUs: no worker of --ray-cpus {self.cpus} "
                               "fits on it")

    def submit(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self.queue.append((job, 1))
            self.indices.append(job.index)
            self.n += 1

    def _start_actor(self, ray) -> _Actor:
        if self._cls is None:
            self._cls = ray.remote(SourceWorker).options(num_cpus=self.cpus, max_restarts=0, max_task_retries=0)
        handle = self._cls.remote(*self.args, self.board, self.every, os.getcwd())
        return _Actor(handle, handle.hello.remote())

    def _size(self, ray) -> int:
        if self.workers:
            return self.workers
        return max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus))

    def events(self) -> Iterator[Event]:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayError

        self.board = ray.remote(ProgressBoard).options(num_cpus=0).remote() if self.every else None
        size = self._size(ray)
        self.actors = [self._start_actor(ray) for _ in range(min(size, len(self.queue)))]
        done = failed = start_deaths = 0
        finished_frames: dict[int, int] = {}
        next_progress = time.monotonic()
        while done < self.n:
            for a in self.actors:
                if a.pid is not None and a.job is None and self.queue:
                    (a.job, a.attempt) = self.queue.popleft()
                    a.ref = a.handle.track.remote(a.job.index, a.attempt, a.job.spec, list(a.job.outs))
            waiting = {(a.hello if a.pid is None else a.ref): a for a in self.actors if a.pid is None or a.ref is not None}
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=0.2) if waiting else ([], [])
            for ref in ready:
                a = waiting[ref]
                try:
                    value = ray.get(ref, timeout=30)
                except (RayActorError, GetTimeoutError) as exc:
                    self.actors.remove(a)
                    why = "" if isinstance(exc, RayActorError) else " (it stopped answering)"
                    if a.job is None:
                        start_deaths += 1
                        log.debug("a Ray worker failed to start", exc_info=True)
                        if start_deaths >= 3:
                            msg = _start_failure(exc)
                            while self.queue:
                                job = self.queue.popleft()[0]
                                done += 1
                                failed += 1
                                yield Finished(job, SourceReport(job.spec, error=f"{job.spec}: not tracked: Ray workers "
                                                                                 f"fail as they start ({msg})"))
                    else:
                        job, attempt = a.job, a.attempt
                        ray.kill(a.handle)
                        _wait_gone(a)
                        drop_partials(job.outs, a.pid)
                        if attempt < 2:
                            log.warning("%s: its Ray worker process died%s; trying it once more", job.spec, why)
                            self.queue.appendleft((job, attempt + 1))
                        else:
                            done += 1
                            failed += 1
                            yield Finished(job, SourceReport(job.spec, error=f"{job.spec}: its Ray worker process "
                                                                             f"died{why}, twice"))
                    if self.queue and len(self.actors) < min(size, len(self.queue) + sum(x.job is not None for x in self.actors)):
                        self.actors.append(self._start_actor(ray))
                    continue
                except RayError as exc:  # an error of Ray's own while it ran the task (not the source's: guarded)
                    job, a.job, a.ref = a.job, None, None
                    done += 1
                    failed += 1
                    yield Finished(job, SourceReport(job.spec, error=f"{job.spec}: failed on its Ray worker "
                                                                     f"({type(exc).__name__}: {_one_line(exc)})"))
                    continue
                if a.pid is None:
                    a.pid, a.host, cpus, threads = value
                    log.debug("Ray worker pid %d on %s: %g CPU, %d onnxruntime threads", a.pid, a.host, cpus, threads)
                    continue
                rep, records = value
                for level, message in records:
                    log.log(level, "%s", message)
                job, a.job, a.ref = a.job, None, None
                finished_frames[job.index] = rep.frames
                done += 1
                failed += bool(rep.error)
                yield Finished(job, rep)
            if self.board is not None and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + self.every
                yield self._progress(ray, finished_frames, done, failed)
        if self.board is not None:
            yield self._progress(ray, finished_frames, done, failed)

    def _progress(self, ray, finished: dict[int, int], done: int, failed: int) -> Progress:
        """Frames written, of a total that counts each finished source's frames, each running one's
        announced count, and the mean of those for each source not started yet (an estimate)."""
        try:
            board = ray.get(self.board.snapshot.remote(), timeout=5)
        except Exception:  # noqa: BLE001 - progress is best effort; the results do not depend on it
            board = {}
        frames = total = known = 0
        for index in self.indices:
            if index in finished:
                frames += finished[index]
                total += finished[index]
                known += 1
                continue
            _, written, announced = board.get(index, (0, 0, None))
            frames += written
            if announced is not None or written:
                total += max(announced or 0, written)
                known += 1
        if known == 0:
            return Progress(frames, None, done, failed)
        return Progress(frames, round(total + total / known * (len(self.indices) - known)), done, failed)

    def cancel(self) -> None:
        """Kill every worker, then remove the partial files of the sources they were tracking."""
        import ray

        self.queue.clear()
        for a in self.actors:
            ray.kill(a.handle)
        for a in self.actors:
            if a.job is not None:
                _wait_gone(a)
                if a.pid is not None:
                    drop_partials(a.job.outs, a.pid)
        self.actors = []

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a.handle)
        if self.board is not None:
            ray.kill(self.board)
        if ray.is_initialized():
            ray.shutdown()


def _wait_gone(a: _Actor, timeout: float = 5.0) -> None:
    """Until a killed worker's task has ended (and, on this host, its process is gone), so that nothing
    writes to its partial files any more when they are removed."""
    import ray

    if a.ref is not None:
        ray.wait([a.ref], timeout=timeout)
    if a.pid is not None and a.host == socket.gethostname():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(a.pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            time.sleep(0.02)


def _start_failure(exc: BaseException) -> str:
    """The first line of why a worker could not start (a weights error, an import error on a node)."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return _one_line(Exception(text[-1] if text else type(exc).__name__))
