"""One Langfuse trace per job attempt, through the official SDK, never in a job's way.

The trace of attempt N of job J has the id `trace_id_for(J, N)` (the SDK's deterministic
`create_trace_id(seed="J:N")`), its session is the job id, so every attempt of a job is
found from the job id alone. The root span `ingest-job` opens when the attempt starts and
ends with the explicit finish time; progress milestones become events under it as they
happen.

Why it never blocks or bloats: each sink method only builds spans in memory; spans are sent
by the OpenTelemetry batch processor's own thread into a bounded queue (it drops the oldest
when the endpoint is down), span inputs and outputs are size-capped, and `aclose` runs the
SDK's shutdown in a daemon thread and stops waiting at its deadline. The tracer uses its own
TracerProvider, never the process-global one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from langfuse import Langfuse, LangfuseSpan, propagate_attributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from supervisor import events as ev
from supervisor.config import mask_secrets
from supervisor.metricdefs import record_trace_export_failure
from supervisor.queue.redaction import DEFAULT_SECRET_KEYS, redact
from supervisor.sinks import JobSink
from supervisor.tracing_export import CountingExporter, langfuse_exporter

log = logging.getLogger(__name__)

ROOT_SPAN_NAME = "ingest-job"
PROGRESS_EVENT_NAME = "progress"
MILESTONE_STEP = 10.0  # percent between two progress events
MAX_PROGRESS_EVENTS = 15  # per attempt, whatever the child prints
MAX_OPEN_ATTEMPTS = 10_000  # started attempts not yet finished (a slot count in practice)
MAX_INPUT_CHARS = 8_192  # serialized payload kept on a span
MAX_OUTPUT_CHARS = 4_096
MAX_MESSAGE_CHARS = 500

Level = Literal["DEBUG", "DEFAULT", "WARNING", "ERROR"]
_ERROR_OUTCOMES = frozenset({ev.OUTCOME_FAILED, ev.OUTCOME_TIMEOUT, ev.OUTCOME_RETRIED})
_WARNING_OUTCOMES = frozenset(
    {ev.OUTCOME_CANCELLED, ev.OUTCOME_LEASE_LOST, ev.OUTCOME_UNRECORDED, ev.OUTCOME_STALLED}
)


def trace_id_for(job_id: str, attempt: int) -> str:
    """The Langfuse trace id of one attempt of a job (32 lowercase hex characters)."""
    return str(Langfuse.create_trace_id(seed=f"{job_id}:{attempt}"))


def trace_ids_for(job_id: str, attempts: int) -> list[str]:
    """The trace ids of attempts 1..`attempts` of a job."""
    return [trace_id_for(job_id, n) for n in range(1, attempts + 1)]


class NoopTracingSink:
    """Tracing off: every method does nothing."""

    def job_started(self, event: ev.JobStarted) -> None:
        return None

    def job_progress(self, event: ev.JobProgress) -> None:
        return None

    def job_finished(self, event: ev.JobFinished) -> None:
        return None

    async def aclose(self, timeout_s: float) -> None:
        return None


@dataclass
class _Attempt:
    root: LangfuseSpan
    next_milestone: float = 0.0  # the first progress line is always an event
    events: int = 0


def _bounded(value: Any, limit: int) -> Any:
    """`value` itself when its JSON fits in `limit` characters, else a marked preview."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) <= limit:
        return value
    return {"truncated": True, "chars": len(text), "preview": text[:limit]}


def _clip(text: str | None, limit: int = MAX_MESSAGE_CHARS) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _ns(unix_s: float) -> int:
    return int(unix_s * 1_000_000_000)


class TracingSink:
    """A JobSink writing one Langfuse trace per job attempt."""

    def __init__(
        self,
        client: Langfuse,
        provider: TracerProvider,
        exporter: CountingExporter,
        *,
        secret_keys: Iterable[str] = DEFAULT_SECRET_KEYS,
        flush_timeout_s: float | None = None,
    ) -> None:
        self._client = client
        self._provider = provider
        self._exporter = exporter
        self._secret_keys = frozenset(k.lower() for k in (*DEFAULT_SECRET_KEYS, *secret_keys))
        self._flush_timeout_s = flush_timeout_s
        self._open: OrderedDict[tuple[str, int], _Attempt] = OrderedDict()
        self._ended = 0
        self._closed = False

    # ---- JobSink ----------------------------------------------------------------------

    def job_started(self, event: ev.JobStarted) -> None:
        if self._closed:
            return
        key = (event.job_id, event.attempt)
        previous = self._open.pop(key, None)
        if previous is not None:
            self._end(previous.root, None)
        while len(self._open) >= MAX_OPEN_ATTEMPTS:
            _, stale = self._open.popitem(last=False)
            stale.root.update(level="WARNING", status_message="no finish event was received")
            self._end(stale.root, None)
        root = self._start_root(
            job_id=event.job_id,
            tenant_id=event.tenant_id,
            queue=event.queue,
            attempt=event.attempt,
            input=_bounded(redact(event.payload, self._secret_keys), MAX_INPUT_CHARS),
            metadata={
                "queue": event.queue,
                "attempt": event.attempt,
                "max_attempts": event.max_attempts,
                "worker": event.worker_id,
                "wait_s": round(max(0.0, event.started_at - event.enqueued_at), 3),
            },
        )
        self._open[key] = _Attempt(root)

    def job_progress(self, event: ev.JobProgress) -> None:
        attempt = self._open.get((event.job_id, event.attempt))
        if attempt is None or attempt.events >= MAX_PROGRESS_EVENTS:
            return
        if event.progress < attempt.next_milestone:
            return
        done = event.progress >= 100.0
        # The next event needs the next step above this one (and 100 % only once).
        step_index = int(event.progress // MILESTONE_STEP) + 1
        attempt.next_milestone = 101.0 if done else step_index * MILESTONE_STEP
        attempt.events += 1
        with self._trace_attributes(event.job_id, event.tenant_id, event.queue, event.attempt):
            attempt.root.create_event(
                name=PROGRESS_EVENT_NAME,
                metadata={"progress": event.progress, "message": _clip(event.message)},
            )

    def job_finished(self, event: ev.JobFinished) -> None:
        if self._closed:
            return
        attempt = self._open.pop((event.job_id, event.attempt), None)
        if attempt is None:
            # No start seen (e.g. an outcome reported after a restart): still one trace.
            root = self._start_root(
                job_id=event.job_id,
                tenant_id=event.tenant_id,
                queue=event.queue,
                attempt=event.attempt,
                input=_bounded(redact(event.payload, self._secret_keys), MAX_INPUT_CHARS),
                metadata={"queue": event.queue, "attempt": event.attempt},
            )
        else:
            root = attempt.root
        level, message = self._level(event)
        root.update(
            output=_bounded(self._summary(event), MAX_OUTPUT_CHARS),
            metadata={
                "queue": event.queue,
                "attempt": event.attempt,
                "max_attempts": event.max_attempts,
                "worker": event.worker_id,
                "outcome": event.outcome,
                "exit_code": event.exit_code,
                "signal": event.signal,
                "ended": event.ended,
                "peak_rss_bytes": event.peak_rss_bytes,
                "cpu_seconds": event.cpu_seconds,
                "duration_s": round(event.duration_s, 3),
                "dropped_output_bytes": event.dropped_output_bytes,
                "progress_rejected": event.progress_rejected,
            },
            level=level,
            status_message=message,
        )
        self._end(root, event.finished_at)

    async def aclose(self, timeout_s: float) -> None:
        """Send what is buffered, giving up after `timeout_s` (or the configured cap)."""
        if self._closed:
            return
        self._closed = True
        for attempt in self._open.values():
            attempt.root.update(level="WARNING", status_message="supervisor stopped first")
            self._end(attempt.root, None)
        self._open.clear()
        if self._flush_timeout_s is not None:
            timeout_s = min(timeout_s, self._flush_timeout_s)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def finish() -> None:
            if not done.done():
                done.set_result(None)

        def shut_down() -> None:
            try:
                # Langfuse.shutdown unregisters its atexit hook first, then flushes.
                self._client.shutdown()
                self._provider.shutdown()
            except Exception:
                log.warning("tracing shutdown failed", exc_info=True)
            finally:
                # RuntimeError: the loop is gone, so nobody waits any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(finish)

        # A daemon thread, not the default executor: the executor's threads are joined at
        # interpreter exit, which would bring back the wait this deadline exists to avoid.
        threading.Thread(target=shut_down, name="langfuse-shutdown", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout=max(0.0, timeout_s))
        except TimeoutError:
            unsent = max(0, self._ended - self._exporter.exported - self._exporter.failed)
            log.warning(
                "tracing: Langfuse did not take the traces within %.1fs; about %d spans "
                "were not sent",
                timeout_s,
                unsent,
            )
        if self._exporter.failed:
            log.warning("tracing: %d spans could not be exported", self._exporter.failed)

    # ---- helpers ----------------------------------------------------------------------

    def _trace_attributes(self, job_id: str, tenant_id: str, queue: str, attempt: int) -> Any:
        return propagate_attributes(
            user_id=tenant_id,
            session_id=job_id,
            trace_name=ROOT_SPAN_NAME,
            tags=[f"queue:{queue}"],
            metadata={"job_id": job_id, "attempt": attempt},
        )

    def _start_root(
        self,
        *,
        job_id: str,
        tenant_id: str,
        queue: str,
        attempt: int,
        input: Any,
        metadata: dict[str, Any],
    ) -> LangfuseSpan:
        with self._trace_attributes(job_id, tenant_id, queue, attempt):
            span = self._client.start_observation(
                trace_context={"trace_id": trace_id_for(job_id, attempt)},
                name=ROOT_SPAN_NAME,
                as_type="span",
                input=input,
                metadata=metadata,
            )
        assert isinstance(span, LangfuseSpan)
        return span

    def _end(self, root: LangfuseSpan, at: float | None) -> None:
        # An explicit end keeps the span's duration true even if this call runs late.
        root.end(end_time=_ns(at) if at is not None else None)
        self._ended += 1

    def _summary(self, event: ev.JobFinished) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "outcome": event.outcome,
            "status": event.table_status,
            "final": event.final,
            "progress": event.progress,
        }
        if event.progress_message:
            summary["progress_message"] = _clip(event.progress_message)
        if event.error:
            summary["error"] = _clip(event.error, 1000)
        if event.result is not None:
            summary["result"] = redact(event.result, self._secret_keys)
        return summary

    @staticmethod
    def _level(event: ev.JobFinished) -> tuple[Level, str | None]:
        if event.outcome in _ERROR_OUTCOMES:
            reason = (
                event.error or f"{event.outcome} (ended: {event.ended}, exit {event.exit_code})"
            )
            return "ERROR", _clip(reason, 1000)
        if event.outcome in _WARNING_OUTCOMES:
            return "WARNING", _clip(event.error) or event.outcome
        return "DEFAULT", None


def build_tracer(
    *,
    public_key: str | None,
    secret_key: str | None,
    host: str | None = None,
    extra_secret_keys: Iterable[str] = (),
    flush_timeout_s: float | None = None,
    export_timeout_s: float = 5.0,
    flush_interval_s: float | None = None,
    environment: str | None = None,
    release: str | None = None,
    on_export_failure: Callable[[int], None] | None = None,
) -> JobSink:
    """A TracingSink for the given Langfuse project, or a no-op sink when keys are absent.

    `export_timeout_s` bounds one export request (the batch thread's wait, never a
    slot's); `flush_timeout_s` caps how long `aclose` waits whatever the caller allows.
    Export failures are counted in `ingest_trace_export_failures_total` unless
    `on_export_failure` is given.
    """
    if not public_key or not secret_key:
        if public_key or secret_key:
            log.warning(
                "Langfuse tracing off: set both LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY"
            )
        else:
            log.info("Langfuse tracing off: no LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY")
        return NoopTracingSink()
    if on_export_failure is None:
        on_export_failure = record_trace_export_failure
    base_url = (host or "https://cloud.langfuse.com").rstrip("/")
    exporter = langfuse_exporter(
        base_url, public_key, secret_key, export_timeout_s, on_export_failure
    )
    # Our own provider: the process-global one may belong to someone else, and the SDK
    # would otherwise install itself there. No atexit shutdown: `aclose` bounds it.
    provider = TracerProvider(
        resource=Resource.create({"service.name": "ingest-supervisor"}),
        shutdown_on_exit=False,
    )
    client = Langfuse(
        public_key=public_key,
        secret_key=secret_key,
        base_url=base_url,
        timeout=max(1, round(export_timeout_s)),
        flush_interval=flush_interval_s,
        environment=environment,
        release=release,
        tracer_provider=provider,
        span_exporter=exporter,
    )
    log.info("Langfuse tracing on: %s", mask_secrets(base_url))
    return TracingSink(
        client,
        provider,
        exporter,
        secret_keys=extra_secret_keys,
        flush_timeout_s=flush_timeout_s,
    )
