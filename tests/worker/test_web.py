"""`url` and `crawl` sources against loopback servers the tests start.

The servers live on 127.0.0.1, which the worker refuses by default. Normal cases exempt
exactly the test server's `host:port` (INGEST_CRAWL_ALLOW_HOSTS), so a redirect or link to
any other loopback port is still a private target and must be refused before connecting.
"""

from __future__ import annotations

import gzip
import sqlite3
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from ingest_worker.web.netguard import is_public
from tests.worker.conftest import Route, Site, make_job, run_worker

# Long enough that a loaded machine still serves the normal pages in time; the stalled page
# costs this much once per crawl.
CRAWL_TIMEOUT = "1.5"


def allow(site: Site, **extra: str) -> dict[str, str]:
    return {"INGEST_CRAWL_ALLOW_HOSTS": site.hostport, **extra}


def test_url_job_fetches_one_page(site: Site, workdir: Path) -> None:
    site.html("/doc", "<title>T</title><p>one page about lighthouses</p><a href='/x'>x</a>")
    out = run_worker(make_job({"type": "url", "url": site.base + "/doc"}), workdir, **allow(site))
    assert out.code == 0, out.stderr
    assert out.result["pages"] == 1 and out.result["chunks"] == 1
    assert site.hits == ["/doc"], "a url job fetches one page and follows no links"


def test_loopback_is_refused_without_an_exemption(site: Site, workdir: Path) -> None:
    site.html("/doc", "<p>never served</p>")
    out = run_worker(make_job({"type": "url", "url": site.base + "/doc"}), workdir)
    assert out.code == 65 and "private" in out.stderr
    assert site.hits == []


def test_allow_private_opens_every_private_address(site: Site, workdir: Path) -> None:
    site.html("/doc", "<p>served</p>")
    out = run_worker(
        make_job({"type": "url", "url": site.base + "/doc"}),
        workdir,
        INGEST_CRAWL_ALLOW_PRIVATE="1",
    )
    assert out.code == 0, out.stderr


def test_redirect_to_a_private_address_is_refused_before_connecting(
    site: Site, other_site: Site, workdir: Path
) -> None:
    other_site.html("/internal", "<p>internal admin data</p>")
    site.routes["/go"] = (302, {"Location": other_site.base + "/internal"}, b"")
    site.routes["/meta"] = (301, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")
    for path in ("/go", "/meta"):
        out = run_worker(make_job({"type": "url", "url": site.base + path}), workdir, **allow(site))
        assert out.code == 65, out.stderr
        assert "private or reserved address" in out.stderr
    assert other_site.hits == []


def test_redirect_within_the_allowed_host_is_followed(site: Site, workdir: Path) -> None:
    site.routes["/old"] = (301, {"Location": "/new"}, b"")
    site.html("/new", "<p>moved content</p>")
    out = run_worker(make_job({"type": "url", "url": site.base + "/old"}), workdir, **allow(site))
    assert out.code == 0, out.stderr
    assert site.hits == ["/old", "/new"]


def test_server_errors_are_temporary_and_client_errors_are_bad_input(
    site: Site, workdir: Path
) -> None:
    site.routes["/down"] = (503, {}, b"busy")
    out = run_worker(make_job({"type": "url", "url": site.base + "/down"}), workdir, **allow(site))
    assert out.code == 75 and "HTTP 503" in out.stderr
    out = run_worker(make_job({"type": "url", "url": site.base + "/nope"}), workdir, **allow(site))
    assert out.code == 65 and "HTTP 404" in out.stderr


def _stall(site: Site) -> Callable[[BaseHTTPRequestHandler], None]:
    def handler(req: BaseHTTPRequestHandler) -> None:
        req.send_response(200)
        req.send_header("Content-Type", "text/html")
        req.send_header("Content-Length", "100000")
        req.end_headers()
        req.wfile.write(b"<p>a slow start")
        req.wfile.flush()
        site.release.wait(30)  # held until the test ends: never finishes in time

    return handler


def test_slow_page_times_out_as_temporary_trouble(site: Site, workdir: Path) -> None:
    site.routes["/slow"] = _stall(site)
    out = run_worker(
        make_job({"type": "url", "url": site.base + "/slow"}),
        workdir,
        **allow(site, INGEST_FETCH_TIMEOUT="0.5"),
    )
    assert out.code == 75 and "timed out" in out.stderr


def _huge_streamed(req: BaseHTTPRequestHandler) -> None:
    # No Content-Length: only counting the bytes as they arrive can stop this one.
    req.send_response(200)
    req.send_header("Content-Type", "text/html")
    req.send_header("Connection", "close")
    req.end_headers()
    try:
        for _ in range(200):
            req.wfile.write(b"<p>" + b"lots of words " * 1000 + b"</p>")
    except OSError:
        pass
    req.close_connection = True


def test_huge_pages_are_refused_at_the_byte_cap(site: Site, workdir: Path) -> None:
    site.html("/huge", "<p>" + "x " * 200_000 + "</p>")
    site.routes["/stream"] = _huge_streamed
    for path in ("/huge", "/stream"):
        out = run_worker(
            make_job({"type": "url", "url": site.base + path}),
            workdir,
            **allow(site, INGEST_MAX_PAGE_BYTES="100000"),
        )
        assert out.code == 65, (path, out.stderr)
        assert "page cap" in out.stderr


def build_site(site: Site, other: Site) -> None:
    site.html(
        "/",
        "<h1>Home</h1><p>home page about harbours</p>"
        "<a href='/a'>a</a> <a href='b#frag'>b</a> <a href='/private/x'>p</a>"
        f"<a href='{other.base}/elsewhere'>off-site</a> <a href='mailto:x@y'>mail</a>"
        "<a href='/slow'>slow</a> <a href='/huge'>huge</a> <a href='/missing'>gone</a>",
    )
    site.html("/a", "<p>page a about anchors</p><a href='/c'>c</a><a href='/'>home</a>")
    site.html("/b", "<p>page b about buoys</p>")
    site.html("/c", "<p>page c at depth two</p>")
    site.html("/private/x", "<p>robots say no</p>")
    site.html("/huge", "<p>" + "x " * 200_000 + "</p>")
    site.routes["/slow"] = _stall(site)
    site.routes["/robots.txt"] = (
        200,
        {"Content-Type": "text/plain"},
        b"User-agent: *\nDisallow: /private/\n",
    )
    other.html("/elsewhere", "<p>other site</p>")


def test_crawl_is_same_site_breadth_first_with_robots_and_caps(
    site: Site, other_site: Site, workdir: Path, tmp_path: Path
) -> None:
    build_site(site, other_site)
    db = tmp_path / "chunks.sqlite3"
    out = run_worker(
        make_job({"type": "crawl", "urls": [site.base + "/"], "crawl_depth": 1}),
        workdir,
        **allow(
            site,
            INGEST_CHUNK_SQLITE_PATH=str(db),
            INGEST_FETCH_TIMEOUT=CRAWL_TIMEOUT,
            INGEST_MAX_PAGE_BYTES="100000",
        ),
    )
    assert out.code == 0, out.stderr
    result = out.result
    assert result["pages"] == 3  # /, /a, /b; /c is at depth 2
    reasons = {s["source"].replace(site.base, ""): s["reason"] for s in result["skipped_items"]}
    assert "robots.txt" in reasons["/private/x"]
    assert "timed out" in reasons["/slow"] and "page cap" in reasons["/huge"]
    assert "HTTP 404" in reasons["/missing"]
    assert "/private/x" not in site.hits and "/c" not in site.hits
    assert site.hits.count("/") == 1 and site.hits.count("/robots.txt") == 1
    assert other_site.hits == []
    with sqlite3.connect(db) as conn:
        sources = {r[0] for r in conn.execute("select source from document_chunks")}
    assert sources == {site.base + "/", site.base + "/a", site.base + "/b"}
    pcts = [p for p, _ in out.progress]
    assert pcts == sorted(pcts) and len(set(pcts)) >= 8


def test_crawl_page_cap_and_depth_two(site: Site, other_site: Site, workdir: Path) -> None:
    build_site(site, other_site)
    env = allow(site, INGEST_FETCH_TIMEOUT=CRAWL_TIMEOUT, INGEST_MAX_PAGE_BYTES="100000")
    deep = run_worker(
        make_job({"type": "crawl", "urls": [site.base + "/a"], "crawl_depth": 2}), workdir, **env
    )
    assert deep.code == 0, deep.stderr
    assert deep.result["pages"] >= 3  # /a, /c, / and what / links to
    capped = run_worker(
        make_job({"type": "crawl", "urls": [site.base + "/"], "crawl_depth": 5}),
        workdir,
        **env,
        INGEST_CRAWL_MAX_PAGES="2",
    )
    assert capped.code == 0, capped.stderr
    assert capped.result["pages"] == 2
    assert any("page cap (2)" in s["reason"] for s in capped.result["skipped_items"])


def test_crawl_that_fetches_nothing_reports_why(site: Site, workdir: Path) -> None:
    site.routes["/robots.txt"] = (200, {}, b"User-agent: *\nDisallow: /\n")
    site.html("/", "<p>home</p>")
    out = run_worker(make_job({"type": "crawl", "urls": [site.base + "/"]}), workdir, **allow(site))
    assert out.code == 65 and "robots.txt" in out.stderr
    site.routes["/robots.txt"] = (404, {}, b"")
    site.routes["/"] = (500, {}, b"")
    out = run_worker(make_job({"type": "crawl", "urls": [site.base + "/"]}), workdir, **allow(site))
    assert out.code == 75 and "HTTP 500" in out.stderr
    refused = run_worker(make_job({"type": "crawl", "urls": [site.base + "/"]}), workdir)
    assert refused.code == 65 and "private" in refused.stderr


EMBEDDED_PRIVATE = [
    "64:ff9b::7f00:1",  # NAT64 well-known prefix around 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254 (cloud metadata)
    "64:ff9b:1::a00:1",  # NAT64 local-use prefix
    "2002:7f00:1::1",  # 6to4 around 127.0.0.1
    "2002:a00:1::1",  # 6to4 around 10.0.0.1
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "::ffff:0:a00:1",  # IPv4-translated (SIIT) around 10.0.0.1
    "192.0.0.9",  # IETF protocol assignments: never a public host
]


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
def test_ipv6_forms_embedding_a_private_ipv4_are_refused(address: str, workdir: Path) -> None:
    host = f"[{address}]" if ":" in address else address
    out = run_worker(
        make_job({"type": "url", "url": f"http://{host}:8080/x"}),
        workdir,
        INGEST_FETCH_TIMEOUT="1",
    )
    assert out.code == 65, out.stderr
    assert "private or reserved address" in out.stderr


def test_embedded_public_ipv4_stays_public() -> None:
    for address in ("64:ff9b::808:808", "2002:808:808::1", "8.8.8.8", "2606:4700::1111"):
        assert is_public(address), address
    for address in EMBEDDED_PRIVATE:
        assert not is_public(address), address


def _dribble_headers(sent: list[int]) -> Callable[[BaseHTTPRequestHandler], None]:
    """A status line at once, then one header byte every 0.1 s for about 6 s."""

    def handler(req: BaseHTTPRequestHandler) -> None:
        req.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Slow: ")
        try:
            for _ in range(60):
                req.wfile.write(b"a")
                req.wfile.flush()
                sent.append(1)
                time.sleep(0.1)
            req.wfile.write(b"\r\nContent-Length: 12\r\n\r\n<p>late</p>\n")
        except OSError:
            pass
        req.close_connection = True

    return handler


def test_slow_headers_count_against_the_fetch_deadline(site: Site, workdir: Path) -> None:
    sent: list[int] = []
    site.routes["/dribble"] = _dribble_headers(sent)
    out = run_worker(
        make_job({"type": "url", "url": site.base + "/dribble"}),
        workdir,
        **allow(site, INGEST_FETCH_TIMEOUT="1"),
    )
    assert out.code == 75, out.stderr
    assert "timed out after 1s" in out.stderr
    assert len(sent) < 60, "the worker waited for the whole header dribble"


def _gzip_route(body: bytes, status: int = 200) -> Route:
    return (
        status,
        {"Content-Type": "text/html; charset=utf-8", "Content-Encoding": "gzip"},
        gzip.compress(body),
    )


def test_gzip_bodies_are_decoded(site: Site, workdir: Path) -> None:
    site.routes["/z"] = _gzip_route(b"<p>compressed words about lighthouses</p>")
    out = run_worker(make_job({"type": "url", "url": site.base + "/z"}), workdir, **allow(site))
    assert out.code == 0, out.stderr
    assert out.result["chunks"] == 1


def test_gzip_bomb_stops_at_the_page_cap(site: Site, workdir: Path) -> None:
    # 50 MB of zeros compress to about 50 KB: under the cap as sent, far over it decoded.
    site.routes["/bomb"] = _gzip_route(b"<p>" + b"0" * 50_000_000 + b"</p>")
    out = run_worker(
        make_job({"type": "url", "url": site.base + "/bomb"}),
        workdir,
        **allow(site, INGEST_MAX_PAGE_BYTES="100000"),
    )
    assert out.code == 65, out.stderr
    assert "page cap once decompressed" in out.stderr


def test_unknown_content_encoding_is_bad_input(site: Site, workdir: Path) -> None:
    site.routes["/br"] = (200, {"Content-Type": "text/html", "Content-Encoding": "br"}, b"\x1b")
    out = run_worker(make_job({"type": "url", "url": site.base + "/br"}), workdir, **allow(site))
    assert out.code == 65 and "Content-Encoding" in out.stderr, out.stderr


def test_a_page_in_a_codec_no_page_means_is_read_as_utf8() -> None:
    """`punycode` decodes in time quadratic in the body: a 5 MiB page would take hours."""
    from ingest_worker.web.fetch import Response
    from ingest_worker.web.pages import page_of

    body = ("harbours and piers, caf\\u00e9 " * 2000).encode()  # ASCII, one escape
    for charset in ("punycode", "unicode_escape", "idna"):
        page = page_of(Response("http://example/", 200, "text/plain", charset, body))
        assert page.text == body.decode(), charset


def _two_page_pdf() -> bytes:
    from tests.worker.conftest import pdf_file

    stream = b"BT /F1 18 Tf 72 720 Td (two pages about quays) Tj ET"
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 5 0 R "
    page += b"/Resources << /Font << /F1 6 0 R >> >> >>"
    return pdf_file(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>",
            page,
            page,
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        ]
    )


def test_a_fetched_pdf_is_read_within_the_operators_limits() -> None:
    from ingest_worker.config import WorkerConfig
    from ingest_worker.errors import BadInput
    from ingest_worker.web.fetch import Response
    from ingest_worker.web.pages import page_of

    pytest.importorskip("pypdf")
    resp = Response("http://example/doc.pdf", 200, "application/pdf", "", _two_page_pdf())
    assert "quays" in page_of(resp, WorkerConfig({})).text
    with pytest.raises(BadInput, match="INGEST_PDF_MAX_PAGES"):
        page_of(resp, WorkerConfig({"INGEST_PDF_MAX_PAGES": "1"}))


def test_html_that_takes_too_long_to_read_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's HTML parser reads some markup in time quadratic in its length (a 250 KB
    page of `<a` took 50 s of CPU): a page is read within a CPU budget."""
    from ingest_worker.errors import BadInput
    from ingest_worker.web import htmltext

    monkeypatch.setattr(htmltext, "HTML_CPU_SECONDS", 0.2)
    started = time.process_time()
    with pytest.raises(BadInput, match="CPU time"):
        htmltext.extract_html("page", "<a" * 100_000)
    assert time.process_time() - started < 5
    # A large document gets a budget in its size: dense markup reads at 4-5 MiB a second.
    assert htmltext.html_cpu_seconds("x" * (48 << 20)) >= 150
    assert htmltext.extract_html("page", "<p>fine</p>").text.strip() == "fine"


def test_a_crawl_of_dead_links_and_bad_pages_is_bounded_and_goes_on(
    site: Site, workdir: Path
) -> None:
    """Pages that fail count against the crawl's tries (4 per page it may keep), and one
    unreadable page is skipped, not the crawl."""
    pytest.importorskip("pypdf")
    links = "".join(f"<a href='/dead/{i}'>d</a>" for i in range(200))
    site.html("/", "<a href='/broken.pdf'>pdf</a><a href='/ok'>ok</a><p>home of docks</p>" + links)
    site.routes["/broken.pdf"] = (200, {"Content-Type": "application/pdf"}, b"%PDF-1.4 broken")
    site.html("/ok", "<p>a page about moorings</p>")
    out = run_worker(
        make_job({"type": "crawl", "urls": [site.base + "/"], "crawl_depth": 1, "max_pages": 3}),
        workdir,
        INGEST_CRAWL_ALLOW_HOSTS=site.hostport,
    )
    assert out.code == 0, out.stderr[-500:]
    assert out.result["pages"] == 2
    pages = [h for h in site.hits if h != "/robots.txt"]
    assert len(pages) <= 4 * 3, pages
    reasons = " ".join(s["reason"] for s in out.result["skipped_items"])
    assert "unreadable PDF" in reasons and "URLs tried" in reasons, reasons


def test_robots_refusals_do_not_use_up_a_crawls_tries(site: Site, workdir: Path) -> None:
    """A refusal by robots.txt sends no request: a blog whose tag pages are disallowed is
    crawled to its page cap."""
    site.routes["/robots.txt"] = (
        200,
        {"Content-Type": "text/plain"},
        b"User-agent: *\nDisallow: /tag/\n",
    )
    tags = "".join(f"<a href='/tag/{i}'>t</a>" for i in range(20))
    posts = "".join(f"<a href='/post/{i}'>p</a>" for i in range(5))
    site.html("/", tags + posts + "<p>the blog about ferries</p>")
    for i in range(5):
        site.html(f"/post/{i}", f"<p>post {i} about ferries</p>")
    out = run_worker(
        make_job({"type": "crawl", "urls": [site.base + "/"], "crawl_depth": 1, "max_pages": 6}),
        workdir,
        INGEST_CRAWL_ALLOW_HOSTS=site.hostport,
    )
    assert out.code == 0, out.stderr[-500:]
    assert out.result["pages"] == 6, out.result
