"""Long-text jobs in the playground: submit, follow over SSE, pause, resume, download.

These need the long-text jobs API (`/audio/speech/long`, issue "long-text jobs"). In a
build without it they are reported as xfail with that reason, not passed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from chatterbox_serve.config import ChunkingConfig
from tests.browser.conftest import API_KEY, Console, screenshots
from tests.browser.test_playground import download
from tests.conftest import probe
from tests.serve.conftest import ServeApp


@pytest.fixture(scope="module")
def jobs_served(app: ServeApp) -> bool:
    with app.client(headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        return client.get("/audio/speech/long-history").status_code != 404


@pytest.fixture
def needs_jobs(jobs_served: bool) -> Iterator[None]:
    if not jobs_served:
        pytest.xfail("this build has no long-text jobs API (/audio/speech/long)")
    yield


def start_job(page: Page, repeat: int = 1) -> str:
    """Fill the sample text `repeat` times over, start the job, return its id."""
    page.get_by_role("tab", name="Long text").click()
    page.get_by_role("button", name="Insert sample text").click()
    box = page.locator("#long-text")
    if repeat > 1:
        box.fill("\n\n".join([box.input_value()] * repeat))
    text = box.input_value()
    assert len(text) > ChunkingConfig().max_total_length
    with page.expect_request(lambda r: r.url.endswith("/audio/speech/long")) as request:
        page.get_by_role("button", name="Start job").click()
    body = request.value.post_data_json
    assert body["input"] == text.strip() and body["response_format"] == "mp3"
    expect(page.locator("#long-job")).to_be_visible()
    return page.inner_text("#long-job-id")


@pytest.mark.usefixtures("needs_jobs")
def test_a_job_runs_to_completion_and_downloads(page: Page, tmp_path: Path) -> None:
    job_id = start_job(page)
    expect(page.locator("#long-job-status")).to_have_text("completed", timeout=180_000)
    assert page.eval_on_selector("#long-progress", "p => p.value") == 100
    expect(page.get_by_role("button", name="Download", exact=True)).to_be_enabled()
    data = download(page, "#long-download", tmp_path)
    saved = probe(data)
    assert saved["container"] == "mp3" and float(str(saved["duration_s"])) > 20.0
    expect(page.locator("#long-audio")).to_be_visible()
    entry = page.locator(f"#long-history li[data-job='{job_id}']")
    expect(entry).to_contain_text("completed")
    screenshots(page, "long-text")


@pytest.mark.usefixtures("needs_jobs")
def test_a_job_pauses_resumes_and_cancels(page: Page) -> None:
    start_job(page, repeat=6)
    status = page.locator("#long-job-status")
    expect(status).to_have_text("processing", timeout=60_000)
    page.get_by_role("button", name="Pause").click()
    expect(status).to_have_text("paused", timeout=30_000)
    expect(page.get_by_role("button", name="Resume")).to_be_enabled()
    page.get_by_role("button", name="Resume").click()
    expect(status).not_to_have_text("paused", timeout=30_000)
    page.get_by_role("button", name="Cancel").click()
    expect(status).to_have_text("cancelled", timeout=30_000)
    expect(page.get_by_role("button", name="Download", exact=True)).to_be_disabled()


def test_a_short_text_is_sent_to_the_speak_view(
    page: Page, console: Console, jobs_served: bool
) -> None:
    if not jobs_served:
        console.expect("status of 404")  # the history list, which the view loads
    page.get_by_role("tab", name="Long text").click()
    page.locator("#long-text").fill("Too short for a job.")
    page.get_by_role("button", name="Start job").click()
    expect(page.locator("#long-message")).to_contain_text(
        f"at least {ChunkingConfig().max_total_length + 1} characters"
    )
