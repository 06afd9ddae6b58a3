"""Run the real `python -m ingest_worker` child and serve it real HTTP from loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

MIGRATION = REPO_ROOT / "supabase" / "migrations" / "20261123000100_document_chunks.sql"
# Later migrations of document_chunks, applied after MIGRATION in order.
CHUNK_MIGRATIONS = (
    MIGRATION,
    REPO_ROOT / "supabase" / "migrations" / "20261201000200_document_chunks_tenant_scope.sql",
)


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def progress(self) -> list[tuple[int, str]]:
        out = []
        for line in self.stdout.splitlines():
            if line.startswith("PROGRESS: "):
                pct, _, msg = line[len("PROGRESS: ") :].partition(" ")
                out.append((int(pct), msg))
        return out

    @property
    def result(self) -> dict[str, Any]:
        lines = [ln for ln in self.stdout.splitlines() if ln.startswith("RESULT: ")]
        assert len(lines) == 1, self.stdout
        parsed: dict[str, Any] = json.loads(lines[0][len("RESULT: ") :])
        return parsed


def child_env(**extra: str) -> dict[str, str]:
    """The clean environment the supervisor gives a child, plus INGEST_* settings."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "INGEST_ATTEMPT": "1", **extra}


def run_worker(job: dict[str, Any] | bytes, cwd: Path, **env: str) -> Outcome:
    data = job if isinstance(job, bytes) else json.dumps(job).encode()
    job_id = job.get("job_id", "") if isinstance(job, dict) else ""
    proc = subprocess.run(
        [sys.executable, "-I", "-m", "ingest_worker"],
        input=data,
        capture_output=True,
        cwd=cwd,
        env=child_env(INGEST_JOB_ID=str(job_id), **env),
        timeout=30,
        check=False,
    )
    return Outcome(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def make_job(source: dict[str, Any], job_id: str = "job-1", **extra: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "tenant_id": "tenant-a",
        "data_source": source,
        "priority": "normal",
        **extra,
    }


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "cwd"
    d.mkdir()
    return d


Route = tuple[int, dict[str, str], bytes] | Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Site:
    """A loopback HTTP server with fixed routes that records every path requested."""

    server: ThreadingHTTPServer
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def html(self, path: str, body: str, status: int = 200) -> None:
        self.routes[path] = (status, {"Content-Type": "text/html; charset=utf-8"}, body.encode())


def _start_site() -> Site:
    site: Site

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            site.hits.append(self.path)
            route = site.routes.get(self.path)
            if route is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if callable(route):
                route(self)
                return
            status, headers, body = route
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    site = Site(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return site


@pytest.fixture
def site() -> Iterator[Site]:
    s = _start_site()
    yield s
    s.release.set()
    s.server.shutdown()
    s.server.server_close()


@pytest.fixture
def other_site() -> Iterator[Site]:
    """A second loopback server: a target the worker must never reach."""
    s = _start_site()
    yield s
    s.release.set()
    s.server.shutdown()
    s.server.server_close()


def apply_migration(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for path in CHUNK_MIGRATIONS:
            conn.execute(path.read_text())  # type: ignore[arg-type]


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica, written by hand with a correct xref."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    return pdf_file(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
    )


def pdf_file(objects: list[bytes]) -> bytes:
    """A PDF of these objects (numbered from 1, the first the catalog) with a correct xref."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
