"""Issue 9 end to end: a real daemon runs the real ingest_worker child on a crawl of a loopback
site; progress streams through Redis and the chunks land in the SQLite chunk store."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from supervisor.queue.states import JobState
from tests.daemon.conftest import DaemonProcess, SyncQueue, job, wait_until
from tests.integration.conftest import stop_daemon, with_queue
from tests.worker.conftest import Site

TOPICS = ("harbours", "anchors", "buoys", "lighthouses", "tides", "knots", "charts")


def _paragraphs(topic: str) -> str:
    return "".join(
        f"<p>Paragraph {i} of a page about {topic}: sailors read it to learn about {topic}.</p>"
        for i in range(12)
    )


def _slow_page(body: str) -> Callable[[BaseHTTPRequestHandler], None]:
    """A page that takes a moment to serve, so the crawl spans several progress writes."""
    data = body.encode()

    def serve(req: BaseHTTPRequestHandler) -> None:
        time.sleep(0.25)  # simulated server latency, not a wait for a condition
        req.send_response(200)
        req.send_header("Content-Type", "text/html; charset=utf-8")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    return serve


def build_site(site: Site) -> list[str]:
    links = "".join(f"<a href='/{t}'>{t}</a> " for t in TOPICS[1:])
    site.html(
        "/", f"<h1>Home</h1><script>var x = 'dropped';</script>{_paragraphs(TOPICS[0])}{links}"
    )
    for topic in TOPICS[1:]:
        site.routes[f"/{topic}"] = _slow_page(f"<h1>{topic}</h1>{_paragraphs(topic)}")
    site.routes["/robots.txt"] = (404, {}, b"")
    return [site.base + "/", *(f"{site.base}/{t}" for t in TOPICS[1:])]


def job_events(q: SyncQueue, job_id: str) -> list[dict[str, str]]:
    async def read_all(queue: Any) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        last = "0-0"
        while batch := await queue.read_events(last, block_ms=1, count=1000):
            out.extend(fields for _, fields in batch)
            last = batch[-1][0]
        return out

    return [e for e in with_queue(q, read_all) if e.get("job") == job_id]


def test_crawl_job_streams_progress_and_lands_its_chunks(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue, site: Site, tmp_path: Path
) -> None:
    pages = build_site(site)
    db = tmp_path / "chunks.sqlite3"
    payload = job("crawl-1")
    payload["data_source"] = {"type": "crawl", "urls": [site.base + "/"], "crawl_depth": 1}
    q.enqueue(payload)
    daemon = start_daemon(
        INGEST_WORKER_COMMAND="",  # empty: the real `python -m ingest_worker`
        INGEST_CRAWL_ALLOW_HOSTS=site.hostport,
        INGEST_CHUNK_STORE="sqlite",
        INGEST_CHUNK_SQLITE_PATH=str(db),
        INGEST_CHUNK_SIZE="300",
        INGEST_CHUNK_OVERLAP="50",
        INGEST_JOB_TIMEOUT="60",
    )
    wait_until(
        lambda: (
            (r := q.get("crawl-1")) is not None and r.state in (JobState.COMPLETED, JobState.FAILED)
        ),
        45,
        "crawl finished",
        interval=0.1,
    )
    rec = q.get("crawl-1")
    assert rec.state is JobState.COMPLETED, f"{rec.error}\n{daemon.log()}"
    assert rec.progress == 100
    assert rec.result["pages"] == len(pages)

    # The daemon forwards at most about four progress values a second (the runner's
    # coalescing); pages served with a delay make the crawl last long enough to see several.
    events = job_events(q, "crawl-1")
    values = [float(e["progress"]) for e in events if e["type"] == "progress"]
    assert values == sorted(values)  # never backwards
    assert len(set(values)) >= 4, values
    assert values[0] > 0
    assert events[-1]["type"] == "completed"

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "select job_id, tenant_id, chunk_index, source, content from document_chunks"
        ).fetchall()
    assert len(rows) == rec.result["chunks"] > len(pages)  # small chunks: several per page
    assert {r[0] for r in rows} == {"crawl-1"} and {r[1] for r in rows} == {"tenant-a"}
    assert {r[3] for r in rows} == set(pages)
    assert sorted(r[2] for r in rows) == list(range(len(rows)))
    assert not any("dropped" in r[4] for r in rows)  # script text never becomes a chunk
    stop_daemon(daemon, 20)
