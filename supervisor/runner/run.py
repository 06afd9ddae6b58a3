"""run_child: one job's child from spawn to reaped, as one awaitable that never raises."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from supervisor.aio import wait_all
from supervisor.queue.redaction import piece_room, scrub
from supervisor.runner.child_texts import error_tail, shown_message
from supervisor.runner.coalesce import ProgressCallback, ProgressCoalescer
from supervisor.runner.config import RunnerConfig
from supervisor.runner.containment import ORPHANS, ProcessTree
from supervisor.runner.env import job_env
from supervisor.runner.forkserver import FORK_SERVER, ForkServerLost, ForkServerTimeout
from supervisor.runner.oom import looks_out_of_memory, oom_kills
from supervisor.runner.outcome import ChildOutcome, EndReason, describe_end
from supervisor.runner.output import BoundedOutput
from supervisor.runner.pipes import PipeReader, PipeWriter, unread_bytes
from supervisor.runner.protocol import (
    MESSAGE_LIMIT,
    PROGRESS_PREFIX,
    LineBudget,
    ProgressState,
    ProtocolLine,
    ProtocolScanner,
    parse_last_result,
    parse_progress,
)
from supervisor.runner.sampling import start_sampling
from supervisor.runner.spawn import (
    ExitStatus,
    SpawnedChild,
    SpawnSpec,
    start_error,
    start_failure,
)
from supervisor.runner.stop import StopRequest
from supervisor.runner.workdir import new_workdir, remove_left_dir

log = logging.getLogger(__name__)

# A child that ignores SIGKILL this long is stuck in the kernel; give up waiting for it.
_KILL_WAIT_S = 30.0


async def run_child(
    config: RunnerConfig,
    *,
    job_id: str,
    attempt: int,
    job_json: bytes,
    timeout_s: float,
    stop: StopRequest,
    on_progress: ProgressCallback | None = None,
    secrets: Sequence[str] = (),
) -> ChildOutcome:
    """Run one child to its end. Whatever the child does, this returns an outcome.

    The job's `secrets` are scrubbed from every text the outcome and `on_progress` carry
    but the result (a value, scrubbed by the caller) before any of it is cut to its limit,
    so a cut never leaves a part of one behind."""
    run = _ChildRun(
        config,
        job_id=job_id,
        attempt=attempt,
        stop=stop,
        on_progress=on_progress,
        secrets=secrets,
    )
    try:
        workdir = new_workdir(config.tmp_root, config.user)
    except (OSError, KeyError) as exc:  # this host's fault (a full disk), not the job's
        return run.start_failed(f"cannot create a working directory: {exc}", host_fault=True)
    try:
        return await run.run(workdir, job_json, timeout_s)
    finally:
        try:
            os.rmdir(workdir)  # most children leave it empty: one call
        except OSError:  # what the child left: removed off the loop, mostly in the background
            await remove_left_dir(config, workdir)


class _ChildRun:
    def __init__(
        self,
        config: RunnerConfig,
        *,
        job_id: str,
        attempt: int,
        stop: StopRequest,
        on_progress: ProgressCallback | None,
        secrets: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.secrets = tuple(secrets)
        self.message_room = piece_room(self.secrets, MESSAGE_LIMIT)
        self.job_id = job_id
        self.attempt = attempt
        self.stop = stop
        self.on_progress = on_progress
        self.started = time.monotonic()
        self.stderr = BoundedOutput(config.max_output_bytes, config.head_bytes)
        self.scanner = ProtocolScanner(config.max_line_bytes, config.max_result_bytes)
        self.progress = ProgressState()
        self.budget = LineBudget(config.protocol_lines_per_s, time.monotonic())
        self.result_line: ProtocolLine | None = None  # the last one: only it counts
        self.result: Any = None
        self.result_error: str | None = None
        self.we_killed = False
        self.draining = False  # the child has ended; what its pipes hold is read
        self.held_back_in_drain = False  # the line budget paused that reading
        self.outlived_kill = False  # waited _KILL_WAIT_S after SIGKILL in vain: never again
        self.strays = 0
        self.server_lost = False
        self.oom_kills_at_start: int | None = None
        self.coalescer: ProgressCoalescer | None = None

    # ---- output -------------------------------------------------------------------

    def _on_stdout(self, data: bytes) -> float:
        """Only protocol lines matter on stdout; other text there is not kept. How long
        to wait before reading on (see LineBudget)."""
        lines = self.scanner.feed(data)
        for line in lines:
            self._handle(line)
        if not lines:
            return 0.0
        wait = self.budget.spend(len(lines), time.monotonic())
        self.held_back_in_drain |= self.draining and wait > 0
        return wait

    def _handle(self, line: ProtocolLine) -> None:
        if not line.data.startswith(PROGRESS_PREFIX):
            self.result_line = line  # a RESULT line: parsed once, at the end
            return
        rest = line.data.rstrip(b"\r")[len(PROGRESS_PREFIX) :]
        parsed = parse_progress(rest, self.message_room, truncated=line.truncated)
        if self.progress.apply(parsed) and self.coalescer is not None:
            self.coalescer.update(self.progress.percent, self.progress.message)

    def _shown(self, message: str | None) -> str | None:
        """A progress message as it may leave the runner, scrubbed only when it is handed
        on (at most once per coalescing interval, and at the end), not for every line."""
        # The coalescer hands on the newest message, the one the state holds; any other
        # is taken for cut, which can only drop more of it.
        cut = message != self.progress.message or self.progress.message_cut
        return shown_message(message, self.secrets, cut=cut)

    def _hand_on(self, percent: float, message: str | None) -> None:
        assert self.on_progress is not None
        self.on_progress(percent, self._shown(message))

    # ---- lifecycle ----------------------------------------------------------------

    async def run(self, workdir: str, job_json: bytes, timeout_s: float) -> ChildOutcome:
        cfg = self.config
        env = job_env(
            cfg.inherited_env,
            extra=cfg.extra_env,
            job_id=self.job_id,
            attempt=self.attempt,
            workdir=workdir,
        )
        spec = SpawnSpec(cfg.command, env, workdir, cfg.limits, cfg.user, cfg.group)
        server = cfg.fork_server or FORK_SERVER
        self.started = time.monotonic()
        self.oom_kills_at_start = oom_kills()
        try:
            child = await server.spawn(spec)
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            # A server that gave no answer or spare in time (stopped, perhaps by a job
            # beside this one), or died meanwhile after serving others, is this host's
            # fault, not this job's. One that cannot start, or dies before it ever served
            # a start, is a broken deploy: a plain start failure, which shows.
            if isinstance(exc, ForkServerLost):
                # It may have started the command before it died: an orphan of this run,
                # killed now, before the job can run again under the same attempt.
                ORPHANS.sweep()
            host = isinstance(exc, ForkServerTimeout | ForkServerLost)
            return self.start_failed(start_error(exc, cfg.command), host_fault=host)
        orphan_token: int | None = ORPHANS.run_started(self.job_id, self.attempt, child.pid)
        self.coalescer = ProgressCoalescer(
            None if self.on_progress is None else self._hand_on, cfg.progress_interval_s
        )
        tree = ProcessTree(child.pid)
        writer = PipeWriter(child.stdin_fd, job_json, lambda: os.close(child.stdin_fd))
        readers = (
            PipeReader(child.stdout_fd, self._on_stdout, cfg.read_chunk_bytes),
            PipeReader(child.stderr_fd, self.stderr.append, cfg.read_chunk_bytes),
        )
        stop_sampling = start_sampling(tree, child.exited, cfg.rss_sample_interval_s)
        try:
            ended = await self._supervise(child, tree, timeout_s)
            status = child.exited.result() if child.exited.done() else ExitStatus(None, None)
            never_started = (
                start_failure(child, status.exit_code) if ended is EndReason.EXITED else None
            )
            wall = time.monotonic() - self.started
            # The group is killed while its id cannot have been reused: right after the reap.
            tree.root_exited()
            self.strays += tree.kill_strays()
            self.draining = True
            for reader in readers:  # what is left is read now, at the budget's rate
                reader.resume()
            eofs = [r.eof for r in readers]
            await wait_all(eofs, cfg.drain_timeout_s)
            # Still held: likely a descendant that escaped before any sample saw it, now
            # adopted by the supervisor if it is a subreaper (see orphans). Until here the
            # job counts as running, so the periodic sweep leaves its orphans to us.
            held = not all(eof.done() for eof in eofs)
            assert orphan_token is not None
            killed = ORPHANS.sweep_after_run(orphan_token, pipes_held=held)
            ORPHANS.run_ended(orphan_token)
            orphan_token = None
            if killed:
                self.strays += killed
                await wait_all(eofs, cfg.drain_timeout_s)
            # Protocol lines the budget held back until the drain ended: the last RESULT
            # may be among them, so no result stands (the job fails saying so). Text that
            # a process left holding the pipe writes on is no such line.
            flooded = self.held_back_in_drain and not readers[0].eof.done()
            unread = unread_bytes(child.stdout_fd) if flooded else 0
            for reader in readers:  # nothing more is read, nor a later RESULT taken
                reader.stop()
            for line in self.scanner.finish():
                self._handle(line)
            result = await parse_last_result(self.result_line)
            if result is not None:
                self.result, self.result_error = result.value, result.error
            if unread:
                self.result = None
                self.result_error = (
                    f"{unread} bytes of its output were not read: more protocol lines than "
                    f"{cfg.protocol_lines_per_s:g} a second for {cfg.drain_timeout_s:g} s "
                    "after it exited"
                )
        finally:
            stop_sampling()
            writer.close()
            for reader in readers:
                reader.stop()
            for fd in (child.stdout_fd, child.stderr_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if child.start_report is not None:
                child.start_report.close()
            try:
                # Cancelled: never leave the child behind (one that outlived SIGKILL once
                # is not waited for again).
                if not child.exited.done() and not self.outlived_kill:
                    await self._kill_and_reap(child, tree)
            finally:  # even if a second cancel cut the wait short
                self.strays += tree.kill_strays()
                if orphan_token is not None:
                    self.strays += ORPHANS.sweep_after_run(orphan_token, pipes_held=False)
                    ORPHANS.run_ended(orphan_token)
        self.coalescer.flush()
        if never_started is not None:
            return self.start_failed(never_started)
        # With secrets to scrub, off the loop: every slot shares it, and a payload may name
        # hundreds of them, one of them long.
        texts = (
            await asyncio.to_thread(self._scrubbed_texts)
            if self.secrets
            else self._scrubbed_texts()
        )
        return self._outcome(ended, status, wall, timeout_s, tree, texts)

    async def _supervise(
        self, child: SpawnedChild, tree: ProcessTree, timeout_s: float
    ) -> EndReason:
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not woken.done():
                woken.set_result(None)

        # Callbacks rather than asyncio.wait over a task awaiting the stop request: one
        # future and one timer per child instead of a task, waiter and callbacks.
        child.exited.add_done_callback(wake)
        unsubscribe = self.stop.on_request(wake)
        timer = loop.call_later(max(timeout_s, 0.0), wake)
        try:
            await woken
        finally:
            timer.cancel()
            unsubscribe()
            child.exited.remove_done_callback(wake)
        if child.exited.done():
            status = child.exited.result()
            if status.exit_code is None and status.signal is None:
                # Lost with the fork server, not ended by itself: as at a shutdown, the job
                # goes back to the queue (the daemon bounds how often, see execution).
                self.server_lost = True
                return EndReason.SHUTDOWN
            return EndReason.EXITED
        if not self.stop.requested:
            self.stop.request(EndReason.TIMEOUT)
        reason = self.stop.reason or EndReason.TIMEOUT
        await self._terminate(child, tree)
        return reason

    async def _terminate(self, child: SpawnedChild, tree: ProcessTree) -> None:
        """TERM the group and escaped descendants, wait the grace, then KILL them all."""
        tree.sample(fresh=True)
        tree.signal_all(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(child.exited), self.config.kill_grace_s)
            return
        except TimeoutError:
            pass
        await self._kill_and_reap(child, tree)

    async def _kill_and_reap(self, child: SpawnedChild, tree: ProcessTree) -> None:
        self.we_killed = True
        tree.sample(fresh=True)
        tree.signal_all(signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(child.exited), _KILL_WAIT_S)
        except TimeoutError:
            self.outlived_kill = True
            log.error("child %d survived SIGKILL for %.0fs", child.pid, _KILL_WAIT_S)

    # ---- outcome ------------------------------------------------------------------

    def start_failed(self, message: str, *, host_fault: bool = False) -> ChildOutcome:
        return ChildOutcome(
            ended=EndReason.START_FAILED,
            exit_code=None,
            signal=None,
            wall_s=time.monotonic() - self.started,
            cpu_s=0.0,
            peak_rss_bytes=0,
            progress=0.0,
            progress_message=None,
            result=None,
            error=describe_end(
                EndReason.START_FAILED,
                exit_code=None,
                signum=None,
                timeout_s=0,
                stderr_tail="",
                oom_killed=False,
                start_error=scrub(message, self.secrets),
            ),
            host_fault=host_fault,
        )

    def _outcome(
        self,
        ended: EndReason,
        status: ExitStatus,
        wall: float,
        timeout_s: float,
        tree: ProcessTree,
        texts: tuple[str, str | None, str | None],
    ) -> ChildOutcome:
        if ended is EndReason.EXITED and status.exit_code == 0 and self.result_error:
            ended = EndReason.BAD_RESULT
        oom = ended is EndReason.EXITED and looks_out_of_memory(
            exit_code=status.exit_code,
            signum=status.signal,
            we_killed=self.we_killed,
            kills_at_start=self.oom_kills_at_start,
            memory_limited=self.config.limits.memory_bytes is not None,
            stderr_end=self.stderr.last(8192),
        )
        stderr_tail, progress_message, result_error = texts
        return ChildOutcome(
            ended=ended,
            exit_code=status.exit_code,
            signal=status.signal,
            wall_s=wall,
            cpu_s=max(tree.cpu_s, status.cpu_s),
            peak_rss_bytes=max(tree.peak_rss_bytes, status.max_rss_bytes),
            progress=self.progress.percent,
            progress_message=progress_message,
            result=None if ended is EndReason.BAD_RESULT else self.result,
            error=describe_end(
                ended,
                exit_code=status.exit_code,
                signum=status.signal,
                timeout_s=timeout_s,
                stderr_tail=stderr_tail,
                oom_killed=oom,
                result_error=result_error,
            ),
            oom_killed=oom,
            stderr_tail=stderr_tail,
            dropped_bytes=self.stderr.dropped_bytes,
            progress_lines=self.progress.lines,
            progress_rejected=self.progress.rejected,
            stray_processes_killed=self.strays,
            server_lost=self.server_lost,
        )

    def _scrubbed_texts(self) -> tuple[str, str | None, str | None]:
        """The child's texts the outcome carries, scrubbed of the job's secrets: the end
        of stderr the error is made from, the last progress message, why the result line
        was unusable."""
        result_error = self.result_error and scrub(self.result_error, self.secrets)
        return (
            error_tail(self.stderr, self.secrets),
            self._shown(self.progress.message),
            result_error,
        )
