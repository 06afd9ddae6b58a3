"""The zoo: each misbehaving child is a real process run through run_child."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path

import psutil
import pytest

from supervisor.runner import ChildOutcome, EndReason, ResourceLimits, StopRequest
from tests.runner.conftest import RunFn, child_cmd, fast_config, wait_gone

MiB = 1024 * 1024


async def _measure_rss_growth(coro: Awaitable[ChildOutcome]) -> tuple[ChildOutcome, int]:
    """Run `coro` while sampling this process's RSS; return its value and the growth."""
    me = psutil.Process()
    base = me.memory_info().rss
    peak = base
    task = asyncio.ensure_future(coro)
    while not task.done():
        peak = max(peak, me.memory_info().rss)
        await asyncio.wait({task}, timeout=0.02)
    return task.result(), peak - base


async def test_flood_with_newlines_keeps_supervisor_memory_bounded(run: RunFn) -> None:
    cfg = fast_config(child_cmd("flood.py", str(200 * MiB), "lines"))
    outcome, growth = await _measure_rss_growth(run(cfg))
    assert growth < 10 * MiB, growth
    assert outcome.succeeded
    assert outcome.progress == 100 and outcome.progress_message == "flooded"


async def test_flood_without_newlines_keeps_supervisor_memory_bounded(run: RunFn) -> None:
    cfg = fast_config(child_cmd("flood.py", str(200 * MiB), "raw"))
    outcome, growth = await _measure_rss_growth(run(cfg))
    assert growth < 10 * MiB, growth
    assert outcome.succeeded
    # The PROGRESS line after the flood starts mid-line, so it is log text, not protocol.
    assert outcome.progress == 100


async def test_invalid_utf8_is_tolerated(run: RunFn) -> None:
    outcome = await run(fast_config(child_cmd("bad_utf8.py")))
    assert outcome.ended is EndReason.EXITED and outcome.exit_code == 1
    assert outcome.progress == 40
    assert outcome.progress_message is not None and "caf\u00e9" in outcome.progress_message
    assert outcome.error is not None and outcome.error.startswith("Worker exited with code 1: ")
    assert "broken stderr" in outcome.error


async def test_ten_megabyte_single_line(run: RunFn) -> None:
    outcome = await run(fast_config(child_cmd("long_line.py"), max_output_bytes=64 * 1024))
    assert outcome.succeeded
    assert outcome.progress == 60 and outcome.progress_message == "after"
    assert outcome.progress_lines == 2  # the cut 10 MB line counted once, then "after"


async def test_ignores_sigterm_is_killed_after_grace(run: RunFn) -> None:
    stop = StopRequest()
    ready = asyncio.Event()
    task = asyncio.ensure_future(
        run(fast_config(child_cmd("ignore_term.py")), stop=stop, on_progress=lambda *_: ready.set())
    )
    await asyncio.wait_for(ready.wait(), 10)  # its SIGTERM handler is in place
    stop.request(EndReason.CANCELLED)
    stop.request(EndReason.SHUTDOWN)  # first reason wins
    outcome = await task
    assert outcome.ended is EndReason.CANCELLED
    assert outcome.signal == signal.SIGKILL
    assert not outcome.oom_killed
    assert outcome.error == "Job cancelled; worker stopped"


async def test_sleeps_forever_times_out(run: RunFn) -> None:
    outcome = await run(fast_config(child_cmd("sleep_forever.py")), timeout_s=0.5)
    assert outcome.ended is EndReason.TIMEOUT
    assert outcome.signal == signal.SIGTERM
    assert outcome.error is not None and outcome.error.startswith("Worker timed out after 0.5s")
    assert outcome.progress == 1


async def test_grandchild_holding_the_pipe_does_not_hang(run: RunFn) -> None:
    outcome = await run(fast_config(child_cmd("grandchild_pipe.py")))
    assert outcome.succeeded
    grandchild = int((outcome.progress_message or "").split()[-1])
    assert not wait_gone([grandchild])


async def test_grandchild_escaping_with_setsid_is_killed_on_timeout(run: RunFn) -> None:
    outcome = await run(fast_config(child_cmd("grandchild_setsid.py", "stay")), timeout_s=1.0)
    assert outcome.ended is EndReason.TIMEOUT
    escaped = int((outcome.progress_message or "").split()[-1])
    assert not wait_gone([escaped])


async def test_orphaned_escaped_grandchild_is_killed_after_child_exits(run: RunFn) -> None:
    outcome = await run(fast_config(child_cmd("grandchild_setsid.py", "exit", "0.3")))
    assert outcome.succeeded
    escaped = int((outcome.progress_message or "").split()[-1])
    assert not wait_gone([escaped])
    assert outcome.stray_processes_killed >= 1


async def test_sigsegv_is_reported_as_signal(run: RunFn) -> None:
    outcome = await run(fast_config(child_cmd("segv.py")))
    assert outcome.ended is EndReason.EXITED
    assert outcome.signal == signal.SIGSEGV and outcome.exit_code is None
    assert not outcome.succeeded and not outcome.permanent_failure
    assert outcome.error == "Worker killed by signal SIGSEGV: crashing now"


async def test_exit_codes(run: RunFn) -> None:
    results = {}
    for code in (0, 1, 65, 75):
        results[code] = await run(
            fast_config(child_cmd("exit_code.py", str(code))), job_json=b'{"job_id": "abc"}'
        )
    ok = results[0]
    assert ok.succeeded and ok.error is None and ok.result == {"echo": {"job_id": "abc"}}
    assert ok.progress == 100 and ok.exit_code == 0 and ok.signal is None
    for code in (1, 65, 75):
        o = results[code]
        assert o.ended is EndReason.EXITED and o.exit_code == code and not o.succeeded
        assert o.error == f"Worker exited with code {code}: failing with {code} for abc"
    assert results[65].permanent_failure
    assert not results[75].permanent_failure and not results[1].permanent_failure


async def test_progress_garbage_is_ignored_and_counted(run: RunFn) -> None:
    outcome = await run(fast_config(child_cmd("progress_garbage.py")))
    assert outcome.succeeded
    assert outcome.progress == 50
    assert outcome.progress_lines == 10  # lines that start with 'PROGRESS:'
    assert outcome.progress_rejected == 8


async def test_progress_never_goes_backwards_and_callbacks_are_coalesced(run: RunFn) -> None:
    seen: list[tuple[float, str | None]] = []
    outcome = await run(
        fast_config(child_cmd("progress_backwards.py"), progress_interval_s=10.0),
        on_progress=lambda pct, msg: seen.append((pct, msg)),
    )
    assert outcome.progress == 100 and outcome.progress_message == "at 100"
    assert outcome.progress_rejected == 3
    # At most one call per interval, and the final value always delivered.
    assert seen[-1] == (100.0, "at 100")
    assert len(seen) <= 2
    assert [p for p, _ in seen] == sorted(p for p, _ in seen)


async def test_memory_hog_over_the_limit(run: RunFn) -> None:
    cfg = fast_config(
        child_cmd("memory_hog.py", "1024"), limits=ResourceLimits(memory_bytes=256 * MiB)
    )
    outcome = await run(cfg)
    assert outcome.ended is EndReason.EXITED and outcome.exit_code == 1
    assert outcome.oom_killed
    assert outcome.error is not None and "(out of memory)" in outcome.error
    assert "MemoryError" in outcome.error
    assert outcome.peak_rss_bytes < 300 * MiB


async def test_exit_0_with_a_result_that_is_not_json_fails_for_good(run: RunFn) -> None:
    """A child that promised a result and broke it: a bug, not bad luck; not retried."""
    outcome = await run(fast_config(child_cmd("bad_result.py")))
    assert outcome.ended is EndReason.BAD_RESULT and outcome.exit_code == 0
    assert not outcome.succeeded and outcome.permanent_failure
    assert outcome.result is None
    assert outcome.error is not None
    assert outcome.error.startswith("Worker exited 0 with an unusable RESULT line: ")
    assert "not valid JSON" in outcome.error


async def test_a_cut_result_line_fails_for_good(run: RunFn) -> None:
    cmd = (sys.executable, "-S", "-c", "print('RESULT: [' + '1,' * 5000 + '1]')")
    outcome = await run(fast_config(cmd, max_result_bytes=1024))
    assert outcome.ended is EndReason.BAD_RESULT and outcome.permanent_failure
    assert outcome.error is not None and "was cut" in outcome.error


async def test_child_that_reads_no_stdin_with_a_large_payload(run: RunFn) -> None:
    payload = json.dumps({"job_id": "big", "blob": "x" * 1_000_000}).encode()
    outcome = await run(fast_config(child_cmd("no_stdin.py")), job_json=payload)
    assert outcome.succeeded and outcome.progress == 100


async def test_missing_interpreter_is_a_start_failure(run: RunFn) -> None:
    outcome = await run(fast_config(("/nonexistent/python", "-m", "ingest_worker")))
    assert outcome.ended is EndReason.START_FAILED
    assert outcome.error == "Worker failed to start: /nonexistent/python: not found"
    assert not outcome.succeeded


async def test_bad_path_is_a_start_failure_of_the_child(run: RunFn) -> None:
    outcome = await run(fast_config((sys.executable, "-S", "/nonexistent/worker.py")))
    assert outcome.ended is EndReason.EXITED and outcome.exit_code == 2
    assert "No such file" in (outcome.error or "")


async def test_peak_rss_and_cpu_of_the_tree_are_recorded(run: RunFn) -> None:
    outcome = await run(fast_config(child_cmd("memory_hog.py", "64")))
    assert outcome.succeeded
    assert outcome.peak_rss_bytes > 64 * MiB
    assert outcome.cpu_s > 0
    assert outcome.wall_s > 0


async def test_environment_is_an_allowlist(run: RunFn, monkeypatch: pytest.MonkeyPatch) -> None:
    mp = monkeypatch
    mp.setenv("SUPABASE_SERVICE_KEY", "sb-secret")
    mp.setenv("LANGFUSE_SECRET_KEY", "lf-secret")
    mp.setenv("REDIS_URL", "redis://:pw@host/0")
    mp.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    mp.setenv("WATCHDOG_USEC", "1000")
    mp.setenv("OPERATOR_ALLOWED", "yes")
    mp.setenv("LC_ALL", "C.UTF-8")
    cfg = fast_config(
        child_cmd("print_env.py"),
        env_passthrough=("OPERATOR_ALLOWED",),
        extra_env={"EMBED_MODEL": "small"},
    )
    outcome = await run(cfg, job_json=b'{"job_id": "envjob"}', job_id="envjob-1")
    env = outcome.result["env"]
    for secret in (
        "SUPABASE_SERVICE_KEY",
        "LANGFUSE_SECRET_KEY",
        "REDIS_URL",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
    ):
        assert secret not in env
    assert "sb-secret" not in json.dumps(env)
    assert env["OPERATOR_ALLOWED"] == "yes" and env["EMBED_MODEL"] == "small"
    assert env["LC_ALL"] == "C.UTF-8" and env["PATH"] == os.environ["PATH"]
    assert env["INGEST_JOB_ID"] == "envjob-1" and env["INGEST_ATTEMPT"] == "1"
    cwd = outcome.result["cwd"]
    assert env["HOME"] == cwd and os.path.basename(cwd).startswith("ingest-job-")
    assert not await asyncio.to_thread(os.path.exists, cwd)  # removed with the job
    assert outcome.result["stdin"] == '{"job_id": "envjob"}'


async def test_cancelling_run_child_itself_still_kills_the_child(run: RunFn) -> None:
    started: list[str | None] = []
    ready = asyncio.Event()

    def on_progress(pct: float, msg: str | None) -> None:
        started.append(msg)
        ready.set()

    task = asyncio.ensure_future(
        run(fast_config(child_cmd("sleep_forever.py")), on_progress=on_progress)
    )
    await asyncio.wait_for(ready.wait(), 10)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not wait_gone([int(started[0] or "0")], timeout=2)


def _lines_written(outcome: ChildOutcome) -> int:
    words = outcome.stderr_tail.split()
    return int(words[words.index("wrote") + 1])


async def test_a_protocol_line_flood_is_read_no_faster_than_the_budget(run: RunFn) -> None:
    """Each protocol line costs the daemon's loop Python work, shared by every slot: a
    child writing them as fast as it can is read at `protocol_lines_per_s` (the pipe
    then holds it back), so one tenant cannot slow every other job of the daemon."""
    cfg = fast_config(child_cmd("protocol_flood.py", "1.5", 'RESULT: {"n": 1}'))
    outcome = await run(cfg)
    assert outcome.succeeded, outcome.error
    assert outcome.result == {"n": 1}
    # A second's budget up front, 1.5 s at the rate, and what the pipe and the last read
    # hold; unthrottled a loop reads several hundred thousand such lines in 1.5 s.
    per_s = cfg.protocol_lines_per_s
    assert _lines_written(outcome) < per_s + 1.5 * per_s + 20_000, outcome.stderr_tail


async def test_a_throttled_child_loses_no_line(run: RunFn) -> None:
    lines = 3000
    code = (
        "import sys\n"
        f"for i in range({lines}):\n"
        "    sys.stdout.write(f'PROGRESS: {i * 99 // " + str(lines - 1) + "} line {i}\\n')\n"
        "print('RESULT: [\"all\"]')\n"
    )
    cfg = fast_config((sys.executable, "-S", "-c", code), protocol_lines_per_s=1000)
    outcome = await run(cfg)
    assert outcome.succeeded, outcome.error
    assert outcome.progress_lines == lines
    assert (outcome.progress, outcome.progress_message) == (99, f"line {lines - 1}")
    assert outcome.result == ["all"]


async def test_a_flood_from_a_process_left_holding_the_pipe_is_read_at_the_budget_too(
    run: RunFn,
) -> None:
    """The child exits at once and leaves a process of its own session writing protocol
    lines into the pipe: what is read while the daemon waits for the pipe's end costs no
    more than the child's own lines would."""
    code = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    block = b'PROGRESS: 1\\n' * 1000\n"
        "    while True:\n"
        "        os.write(1, block)\n"
    )
    cfg = fast_config(
        (sys.executable, "-S", "-c", code), protocol_lines_per_s=1000, drain_timeout_s=1.0
    )
    outcome = await run(cfg)
    # A second's budget, at most two waits for the pipe's end (1 s each) and, per pause
    # of up to 0.5 s, one chunk read; unthrottled it would be hundreds of thousands.
    chunk_lines = cfg.read_chunk_bytes // 12 + 1
    assert outcome.progress_lines <= 1000 + 2 * 1.0 / 0.5 * chunk_lines + 2 * chunk_lines, (
        outcome.progress_lines
    )


async def test_a_result_nested_deeper_than_a_payload_may_be_fails_for_good(run: RunFn) -> None:
    """Nothing downstream (the record, the outbox, the status store) has to walk a value
    deeper than a payload may be: a RESULT nested deeper is unusable, said so."""
    deep = "[" * 600 + "1" + "]" * 600
    cmd = (sys.executable, "-S", "-c", f"print('RESULT: {deep}')")
    outcome = await run(fast_config(cmd))
    assert outcome.ended is EndReason.BAD_RESULT and outcome.permanent_failure
    assert outcome.error is not None and "nested deeper than 32 levels" in outcome.error
    ok = "[" * 31 + "1" + "]" * 31
    cmd = (sys.executable, "-S", "-c", f"print('RESULT: {ok}')")
    outcome = await run(fast_config(cmd))
    assert outcome.succeeded and outcome.result is not None


async def test_a_result_left_unread_in_a_flooded_pipe_fails_the_job(run: RunFn) -> None:
    """A child that enlarges its stdout pipe, fills it with protocol lines and exits 0
    leaves more in the pipe than the budget reads within the drain time: the RESULT at
    its end was never read. The job fails saying so, rather than completing without it."""
    code = (
        "import fcntl, os, sys\n"
        "fcntl.fcntl(1, 1031, 1 << 20)\n"  # F_SETPIPE_SZ: a 1 MiB pipe
        "os.write(1, b'PROGRESS: 1\\n' * 80_000)\n"
        "os.write(1, b'RESULT: {\"answer\": 42}\\n')\n"
    )
    cfg = fast_config((sys.executable, "-S", "-c", code), protocol_lines_per_s=1000)
    outcome = await run(cfg)
    assert outcome.ended is EndReason.BAD_RESULT, (outcome.ended, outcome.result)
    assert outcome.result is None
    assert outcome.error is not None and "not read" in outcome.error, outcome.error


async def test_a_child_that_outlives_sigkill_is_waited_for_once(
    run: RunFn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A child the kernel does not let die (stuck in D state; here: its exit is never
    reported, the fork server being stopped) is waited for once after SIGKILL, not a
    second time by the clean-up, which doubled the time its slot and a shutdown took."""
    from supervisor.runner import forkserver_process
    from supervisor.runner import run as run_module
    from supervisor.runner.forkserver import ForkServer

    monkeypatch.setattr(run_module, "_KILL_WAIT_S", 0.5)
    # The daemon continues a stopped fork server; this one must stay stopped.
    monkeypatch.setattr(forkserver_process, "continue_if_stopped", lambda _pid: None)
    server = ForkServer(spares=0)
    server.start()
    assert server.pid is not None
    cfg = fast_config(child_cmd("sleep_forever.py"), fork_server=server)
    progressed = asyncio.Event()
    task = asyncio.ensure_future(
        run(cfg, timeout_s=0.5, on_progress=lambda _p, _m: progressed.set())
    )
    try:
        await asyncio.wait_for(progressed.wait(), 10)
        os.kill(server.pid, signal.SIGSTOP)
        with caplog.at_level("ERROR", logger="supervisor.runner.run"):
            outcome = await asyncio.wait_for(task, 20)
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.close()
    assert outcome.ended is EndReason.TIMEOUT
    assert caplog.text.count("survived SIGKILL") == 1, (caplog.text, outcome)


async def test_a_large_result_is_parsed_off_the_loop(
    run: RunFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RESULT of nearly 1 MiB made of deep small lists takes a second or so of Python to
    parse and check for depth: in a thread, not on the loop every slot shares (the walk
    gives the loop its turns; `json.loads` itself holds the GIL while it runs)."""
    import threading

    from supervisor.runner import protocol

    parsed_on: list[int] = []
    real = protocol.parse_line

    def recording(line: protocol.ProtocolLine) -> object:
        parsed_on.append(threading.get_ident())
        return real(line)

    monkeypatch.setattr(protocol, "parse_line", recording)
    item = "[" * 30 + "1" + "]" * 30
    code = (
        "import sys\n"
        f"sys.stdout.write('RESULT: {{\"v\": [' + ','.join(['{item}'] * 14000) + ']}}\\n')\n"
    )
    outcome = await run(fast_config((sys.executable, "-S", "-c", code)))
    assert outcome.succeeded, outcome.error
    assert isinstance(outcome.result, dict) and len(outcome.result["v"]) == 14000
    assert parsed_on and threading.get_ident() not in parsed_on


async def test_no_later_result_is_taken_while_a_large_one_is_parsed(run: RunFn) -> None:
    """The pipe is read no further once the child's end is settled: a RESULT still in it
    behind a flood (here behind a large first RESULT parsed in a thread) is never taken
    for an earlier one, and the job fails saying its output was not read."""
    item = "[" * 30 + "1" + "]" * 30
    code = (
        "import fcntl, os\n"
        "fcntl.fcntl(1, 1031, 1 << 20)\n"  # F_SETPIPE_SZ: a 1 MiB pipe
        f"os.write(1, b'RESULT: {{\"first\": [' + b','.join([b'{item}'] * 9000) + b']}}\\n')\n"
        "os.write(1, b'PROGRESS: 1\\n' * 14_000)\n"
        "os.write(1, b'RESULT: {\"last\": true}\\n')\n"
    )
    cfg = fast_config((sys.executable, "-S", "-c", code), protocol_lines_per_s=1000)
    outcome = await run(cfg)
    assert outcome.ended is EndReason.BAD_RESULT and outcome.result is None, outcome.ended
    assert outcome.error is not None and "not read" in outcome.error


async def test_plain_text_from_a_process_left_holding_stdout_fails_nothing(
    run: RunFn, tmp_path: Path
) -> None:
    """A helper that escaped the job (its own session, a clean environment) and goes on
    logging plain text to the inherited stdout after the child exited 0 with its RESULT:
    the pipe is abandoned after the drain, and the job keeps its result."""
    pid_file = tmp_path / "helper.pid"
    helper = (
        "import os, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(0.4)\n"  # after the RESULT, within the drain
        "end = time.time() + 5\n"
        "while time.time() < end:\n"
        "    os.write(1, b'helper: still syncing\\n' * 100)\n"
    )
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-S', '-c', {helper!r}], env={{}},"
        " start_new_session=True)\n"
        "time.sleep(0.2)\n"
        "print('RESULT: {\"ok\": 1}', flush=True)\n"
    )
    # Another job running meanwhile: an orphan no run can be told to own is left alive
    # while any run goes on (it may be that run's), so the helper keeps the pipe.
    other = asyncio.ensure_future(
        run(fast_config((sys.executable, "-S", "-c", "import time; time.sleep(3)")))
    )
    try:
        await asyncio.sleep(0.3)
        outcome = await run(fast_config((sys.executable, "-S", "-c", code)))
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        await other
    assert outcome.succeeded, outcome.error
    assert outcome.result == {"ok": 1}
