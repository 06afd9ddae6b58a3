"""The dashboard in a real headless Chromium against a real API and a real daemon.

Jobs go in through the API; the page must follow them live (server-sent events over fetch),
so no test reloads a page to see a change: a marker set on `window` must survive each wait.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.api.conftest import TOKEN, ApiServer
from tests.daemon.conftest import DaemonProcess
from tests.ui.conftest import Waiter, screenshot
from tests.waiting import wait_until

HOSTILE = "<img src=x onerror=alert(1)>"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def enqueue(client: httpx.Client, job_id: str, tenant: str = "acme", **meta: Any) -> None:
    body: dict[str, Any] = {
        "job_id": job_id,
        "tenant_id": tenant,
        "data_source": {"type": "text", "text": "hello", "trial_token": "s3cret-value"},
        "metadata": meta,
    }
    if "max_attempts" in meta:
        body["max_attempts"] = meta.pop("max_attempts")
    r = client.post("/jobs", json=body)
    assert r.status_code == 202, r.text


def state_of(client: httpx.Client, job_id: str) -> str:
    return str(client.get(f"/jobs/{job_id}").json()["state"])


def open_page(driver: WebDriver, api: ApiServer, hash_path: str, token: str | None = TOKEN) -> None:
    """Open the dashboard at a route with the token already in this tab's session storage."""
    driver.get(f"{api.url}/ui/")
    if token is None:
        driver.execute_script("sessionStorage.clear()")
    else:
        driver.execute_script("sessionStorage.setItem('ingest-api-token', arguments[0])", token)
    driver.get(f"{api.url}/ui/#{hash_path}")
    driver.execute_script("window.__noReload = true")


def not_reloaded(driver: WebDriver) -> bool:
    return bool(driver.execute_script("return window.__noReload === true"))


def text(driver: WebDriver, css: str) -> str:
    """The rendered text of the first match, read in one step (the page re-renders live)."""
    script = "const n = document.querySelector(arguments[0]); return n ? n.innerText : ''"
    return str(driver.execute_script(script, css))


def no_alert(driver: WebDriver) -> bool:
    try:
        driver.switch_to.alert  # noqa: B018 - raises when no alert is open
    except NoAlertPresentException:
        return True
    return False


def test_wrong_token_gets_401_prompt_then_right_token_shows_data(
    browser: WebDriver, ui_api: ApiServer, ui_daemon: DaemonProcess, wait: Waiter
) -> None:
    open_page(browser, ui_api, "/", token=None)
    form = browser.find_element(By.ID, "token-form")
    wait(lambda d: form.is_displayed(), "the token prompt")
    assert "needs its token" in text(browser, "#token-reason")

    browser.find_element(By.ID, "token-input").send_keys("wrong-token")
    browser.find_element(By.ID, "token-save").click()
    wait(lambda d: "refused this token" in text(d, "#token-reason"), "the 401 refusal")
    assert form.is_displayed()
    # The token travels in a header only: the page's URL never holds it.
    assert "wrong-token" not in browser.current_url

    browser.find_element(By.ID, "token-input").send_keys(TOKEN)
    browser.find_element(By.ID, "token-save").click()
    wait(lambda d: not form.is_displayed(), "the prompt to close")
    wait(lambda d: text(d, "#verdict") == "healthy", "the health verdict")
    stored = browser.execute_script("return sessionStorage.getItem('ingest-api-token')")
    assert stored == TOKEN
    assert TOKEN not in browser.current_url


def test_overview_follows_jobs_live(
    browser: WebDriver,
    ui_api: ApiServer,
    ui_daemon: DaemonProcess,
    api_client: httpx.Client,
    wait: Waiter,
) -> None:
    open_page(browser, ui_api, "/")
    wait(lambda d: text(d, "#verdict") == "healthy", "the health verdict")
    wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#workers tr[data-worker]"), "a worker row")
    assert "/ 3" in text(browser, "#workers tbody")
    before = int(text(browser, "#counts [data-state=completed] .n") or 0)

    ids = [new_id("ov") for _ in range(3)]
    for job_id in ids:
        enqueue(api_client, job_id, steps=2)
    wait(
        lambda d: int(text(d, "#counts [data-state=completed] .n") or 0) >= before + 3,
        "three more completed jobs on the overview",
    )
    wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#throughput .c"), "the throughput chart")
    wait(
        lambda d: (
            "completed" in text(d, "#throughput-summary")
            and not text(d, "#throughput-summary").startswith("Last hour: 0 completed")
        ),
        "completions counted in the chart's summary",
    )
    assert not_reloaded(browser)
    screenshot(browser, "overview")
    browser.set_window_size(390, 844)
    try:
        wait(lambda d: d.find_element(By.ID, "counts").is_displayed(), "the phone-width layout")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, f"the page scrolls sideways at phone width ({width}px)"
        screenshot(browser, "overview-phone")
    finally:
        browser.set_window_size(1280, 900)


def test_job_progress_bar_reaches_100_without_reload(
    browser: WebDriver,
    ui_api: ApiServer,
    ui_daemon: DaemonProcess,
    api_client: httpx.Client,
    wait: Waiter,
) -> None:
    job_id = new_id("slow")
    enqueue(api_client, job_id, steps=20, step_s=0.25)
    open_page(browser, ui_api, f"/job/{job_id}")

    def bar(d: WebDriver) -> float:
        return float(d.find_element(By.ID, "job-progress").get_attribute("value") or 0)

    wait(lambda d: 0 < bar(d) < 100, "the progress bar part-way", timeout_s=30)
    wait(lambda d: bar(d) == 100, "the progress bar at 100%", timeout_s=30)
    wait(lambda d: "completed" in text(d, "#job-fields"), "the completed state")
    assert text(browser, "#job-percent") == "100%"
    assert "of 20" in text(browser, "#job-message")
    wait(lambda d: "attempt 1 completed" in text(d, "#timeline"), "the completion in the timeline")
    assert "attempt 1 started" in text(browser, "#timeline")
    assert '"chunks": 20' in text(browser, "#job-result")
    # The payload's secret is redacted as the API redacts it.
    payload = text(browser, "#job-payload")
    assert "trial_token" in payload and "s3cret-value" not in payload
    assert not_reloaded(browser)
    screenshot(browser, "job")


def test_failed_job_shows_error_and_attempts_and_retry_runs_it_again(
    browser: WebDriver,
    ui_api: ApiServer,
    ui_daemon: DaemonProcess,
    api_client: httpx.Client,
    wait: Waiter,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    gate.write_text("fail while I exist")
    job_id = new_id("flaky")
    enqueue(api_client, job_id, max_attempts=2, fail_while_exists=str(gate))
    wait_until(lambda: state_of(api_client, job_id) == "failed", 30, "the job to fail")

    open_page(browser, ui_api, f"/job/{job_id}")
    wait(lambda d: "gate file is still there" in text(d, "#job-error"), "the error")
    wait(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#timeline li[data-type=started]")) == 2,
        "two attempts in the timeline",
    )
    timeline = text(browser, "#timeline")
    assert "attempt 1 failed; retry due" in timeline
    assert "attempt 2 failed" in timeline and "gate file is still there" in timeline
    screenshot(browser, "job-failed")

    gate.unlink()
    retry = browser.find_element(By.ID, "retry-button")
    assert retry.is_enabled()
    retry.click()
    wait(lambda d: "queued again (retry)" in text(d, "#timeline"), "the retry in the timeline")
    wait(lambda d: "completed" in text(d, "#job-fields"), "the job completed on its rerun")
    wait(lambda d: text(d, "#job-percent") == "100%", "the bar full after the rerun")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline li[data-type=started]")) == 3
    assert not browser.find_element(By.ID, "job-error").is_displayed()
    assert not_reloaded(browser)


def test_jobs_list_filters_by_tenant_and_id_prefix(
    browser: WebDriver,
    ui_api: ApiServer,
    ui_daemon: DaemonProcess,
    api_client: httpx.Client,
    wait: Waiter,
) -> None:
    tag = uuid.uuid4().hex[:6]
    mine = [f"list-{tag}-{i}" for i in range(3)]
    for job_id in mine:
        enqueue(api_client, job_id, tenant=f"tenant-{tag}", steps=1)
    enqueue(api_client, f"other-{tag}", tenant=f"tenant-{tag}", steps=1)
    enqueue(api_client, f"list-{tag}-x", tenant="someone-else", steps=1)
    for job_id in mine:
        wait_until(lambda j=job_id: state_of(api_client, j) == "completed", 30, "completion")

    open_page(browser, ui_api, f"/jobs?state=completed&tenant=tenant-{tag}&prefix=list-{tag}")

    def shown(d: WebDriver) -> list[str]:
        rows = d.find_elements(By.CSS_SELECTOR, "#job-rows tr[data-job-id]")
        return sorted(r.get_attribute("data-job-id") or "" for r in rows)

    wait(lambda d: shown(d) == sorted(mine), "exactly the filtered jobs")
    assert "100%" in text(browser, "#job-rows")
    screenshot(browser, "jobs")

    browser.find_element(By.CSS_SELECTOR, f"#job-rows a[href='#/job/{mine[0]}']").click()
    wait(lambda d: text(d, "#job-id") == mine[0], "the job page from the list")


def test_hostile_error_renders_as_text_on_job_and_dead_letter_pages(
    browser: WebDriver,
    ui_api: ApiServer,
    ui_daemon: DaemonProcess,
    api_client: httpx.Client,
    wait: Waiter,
) -> None:
    job_id = new_id("xss")
    enqueue(api_client, job_id, stderr=HOSTILE, exit=65)
    wait_until(lambda: state_of(api_client, job_id) == "failed", 30, "the job to fail")

    open_page(browser, ui_api, f"/job/{job_id}")
    wait(lambda d: HOSTILE in text(d, "#job-error"), "the error shown as text")
    wait(lambda d: HOSTILE in text(d, "#timeline"), "the error in the timeline as text")
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    assert no_alert(browser)

    open_page(browser, ui_api, "/dead")
    wait(lambda d: HOSTILE in text(d, "#groups"), "the dead-letter group shown as text")
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    assert no_alert(browser)
    screenshot(browser, "dead-letters")

    group = next(
        g for g in browser.find_elements(By.CSS_SELECTOR, "#groups .group") if HOSTILE in g.text
    )
    group.find_element(By.CSS_SELECTOR, "button.primary").click()
    wait(lambda d: "Queued again: 1 of 1" in text(d, "#notice"), "the group's retry")
    wait_until(
        lambda: (
            api_client.get(f"/jobs/{job_id}/events").json()["events"][-1]["type"] == "failed"
            and state_of(api_client, job_id) == "failed"
        ),
        30,
        "the retried job to fail again",
    )
    assert no_alert(browser)
