"""One real API, one real daemon and one headless Chromium per test module.

The API requires its token for reads as well (INGEST_API_AUTH_READS=1), so every page the
tests open goes through the dashboard's token handling.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.api.conftest import TOKEN, ApiServer, delete_queue
from tests.conftest import REDIS_URL
from tests.daemon.conftest import DaemonProcess

CHILD = Path(__file__).resolve().parent / "child.py"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# The tests save a screenshot of each page here; INGEST_UI_SCREENSHOTS=docs/screenshots
# refreshes the two that docs/dashboard.md shows. By default a run leaves the tree alone.
SCREENSHOTS = Path(
    os.environ.get(
        "INGEST_UI_SCREENSHOTS",
        Path(tempfile.gettempdir()) / f"ingest-ui-screenshots-{os.getuid()}",
    )
)


@pytest.fixture(scope="module")
def ui_queue() -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    delete_queue(REDIS_URL, name)


@pytest.fixture(scope="module")
def ui_api(tmp_path_factory: pytest.TempPathFactory, ui_queue: str) -> Iterator[ApiServer]:
    env = {
        "REDIS_URL": REDIS_URL,
        "INGEST_QUEUE": ui_queue,
        "INGEST_API_TOKEN": TOKEN,
        "INGEST_API_AUTH_READS": "1",
        "INGEST_STATUS_BACKEND": "none",
    }
    server = ApiServer(env, tmp_path_factory.mktemp("ui-api") / "api.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ui_daemon(tmp_path_factory: pytest.TempPathFactory, ui_queue: str) -> Iterator[DaemonProcess]:
    work = tmp_path_factory.mktemp("ui-daemon")
    (work / "jobs").mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REDIS_URL": REDIS_URL,
        "INGEST_QUEUE": ui_queue,
        "INGEST_WORKER_COMMAND": f"{sys.executable} {CHILD}",
        "INGEST_CONCURRENCY": "3",
        "INGEST_METRICS_PORT": "0",
        "INGEST_STATUS_BACKEND": "none",
        "INGEST_BACKOFF_SECONDS": "0.2",
        "INGEST_HEARTBEAT_TTL": "3",
        "INGEST_SHUTDOWN_GRACE_SECONDS": "1",
        "TMPDIR": str(work / "jobs"),
    }
    log_path = work / "daemon.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
    daemon = DaemonProcess(proc, log_path, ui_queue, REDIS_URL, env)
    daemon.wait_ready()
    yield daemon
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing (.ci/run installs them)")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install them)")
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def api_client(ui_api: ApiServer) -> Iterator[httpx.Client]:
    with ui_api.client() as client:
        yield client


Waiter = Callable[..., Any]


@pytest.fixture
def wait(browser: WebDriver) -> Waiter:
    """wait(condition, what, timeout_s=20): poll a condition on the page until it holds."""

    def until(condition: Callable[[WebDriver], Any], what: str, timeout_s: float = 20) -> Any:
        return WebDriverWait(browser, timeout_s, poll_frequency=0.05).until(
            condition, message=f"waiting for {what}"
        )

    return until


def screenshot(driver: WebDriver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
