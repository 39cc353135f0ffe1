"""The playground in Chromium: speak, voices, status, keys, keyboard and layout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect

from chatterbox_serve.config import ChunkingConfig
from tests.browser.conftest import (
    API_KEY,
    Console,
    launch,
    open_page,
    screenshots,
)
from tests.conftest import probe
from tests.serve.conftest import ServeApp
from tests.voice_audio import sample

SENTENCE = "The quick brown fox jumps over the lazy dog, and the dog does not mind."
# The app runs with the default limit; the counter and the refusal show it.
MAX_TOTAL_LENGTH = ChunkingConfig().max_total_length
SECONDS = re.compile(r"^\d+(\.\d+)? (ms|s)$")


def playable_duration(page: Page, selector: str) -> float:
    """Wait until the <audio> at `selector` has a finite, positive duration; return it."""
    page.wait_for_function(
        """sel => { const a = document.querySelector(sel);
                    return a && a.readyState >= 1
                           && Number.isFinite(a.duration) && a.duration > 0; }""",
        arg=selector,
        timeout=30_000,
    )
    return float(page.eval_on_selector(selector, "a => a.duration"))


def speak(page: Page) -> dict[str, object]:
    """Press Speak; return the JSON body the page sent."""
    with page.expect_request(
        lambda r: r.url.endswith("/v1/audio/speech") and r.method == "POST"
    ) as request:
        page.get_by_role("button", name="Speak", exact=True).click()
    body = request.value.post_data_json
    assert isinstance(body, dict)
    return body


def download(page: Page, link: str, tmp_path: Path) -> bytes:
    with page.expect_download() as info:
        page.click(link)
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(target)
    return target.read_bytes()


def test_speak_streams_mp3_and_reports_timings(page: Page, tmp_path: Path) -> None:
    page.locator("#view-speak").get_by_label("Text", exact=True).fill(SENTENCE)
    expect(page.locator("#speak-count")).to_have_text(
        f"{len(SENTENCE)} / {MAX_TOTAL_LENGTH} characters"
    )
    # Keyboard: two steps right on the speed slider; untouched sliders stay server defaults.
    page.focus("#speak-speed")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#speak-speed-out")).to_have_text("1.10")

    body = speak(page)
    assert body["input"] == SENTENCE and body["response_format"] == "mp3"
    assert body["stream_format"] == "audio" and body["speed"] == 1.1
    assert "exaggeration" not in body and "temperature" not in body and "voice" not in body

    duration = playable_duration(page, "#speak-audio")
    expect(page.locator("#speak-rtf")).to_have_text(re.compile(r"^\d+\.\d{3}$"))
    expect(page.locator("#speak-mode")).to_have_text("streaming (MediaSource)")
    assert SECONDS.match(page.inner_text("#speak-ttfa"))
    assert float(page.inner_text("#speak-rtf")) > 0
    saved = probe(download(page, "#speak-download", tmp_path))
    assert saved["container"] == "mp3" and str(saved["codec"]).startswith("mp3")
    assert abs(float(str(saved["duration_s"])) - duration) < 0.1
    assert 1.0 < duration < 20.0
    screenshots(page, "speak")


# Counts the seconds of audio handed to Web Audio, to see that streaming playback happened.
COUNT_SCHEDULED = """() => {
  window.scheduledSeconds = 0;
  const start = AudioBufferSourceNode.prototype.start;
  AudioBufferSourceNode.prototype.start = function (...args) {
    window.scheduledSeconds += this.buffer.duration;
    return start.apply(this, args);
  };
}"""


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("pcm", "streaming (Web Audio)"),
        ("wav", "streaming (Web Audio)"),
        ("opus", "streaming (WebCodecs + Web Audio)"),
    ],
)
def test_speak_streams_other_formats_through_web_audio(
    page: Page, tmp_path: Path, fmt: str, mode: str
) -> None:
    page.evaluate(COUNT_SCHEDULED)
    speak_view = page.locator("#view-speak")
    speak_view.get_by_label("Text", exact=True).fill("Raw samples, played as they arrive.")
    speak_view.get_by_label("Format").select_option(fmt)
    speak_view.get_by_label("Seed").fill("7")
    body = speak(page)
    assert body["response_format"] == fmt and body["seed"] == 7
    duration = playable_duration(page, "#speak-audio")
    expect(page.locator("#speak-mode")).to_have_text(mode)
    # Opus pre-skip and frame padding make its decoded length differ by a few ms.
    assert abs(page.evaluate("window.scheduledSeconds") - duration) < 0.05
    data = download(page, "#speak-download", tmp_path)
    if fmt == "pcm":
        assert abs(len(data) / 2 / 24_000 - duration) < 0.01
    else:
        assert abs(float(str(probe(data)["duration_s"])) - duration) < 0.05


def test_too_long_text_is_refused_before_sending(page: Page) -> None:
    page.locator("#view-speak").get_by_label("Text", exact=True).fill("a" * (MAX_TOTAL_LENGTH + 1))
    expect(page.locator("#speak-count")).to_have_class(re.compile(r"\bover\b"))
    page.get_by_role("button", name="Speak", exact=True).click()
    expect(page.locator("#speak-message")).to_contain_text(f"at most {MAX_TOTAL_LENGTH}")


def test_upload_a_voice_and_speak_with_it(page: Page, console: Console) -> None:
    console.expect("status of 400")  # the deliberately bad upload below
    page.get_by_role("tab", name="Voices").click()
    page.locator("#voice-upload").get_by_label("Name", exact=True).fill("narrator")
    page.locator("#voice-upload").get_by_label("Audio file").set_input_files(
        files=[{"name": "narrator.mp3", "mimeType": "audio/mpeg", "buffer": sample(0)}]
    )
    page.get_by_role("button", name="Upload voice").click()
    expect(page.locator("#voices-message")).to_have_text("Voice 'narrator' uploaded.")
    card = page.locator("li[data-voice='narrator']")
    expect(card).to_contain_text("narrator")

    card.locator("summary").click()
    card.get_by_label("New alias for narrator").fill("storyteller")
    card.get_by_role("button", name="Add alias").click()
    expect(card.locator(".chip")).to_contain_text("storyteller")
    card.get_by_role("button", name="Make narrator the default").click()
    expect(page.locator("#voices-default")).to_have_text("Default voice: narrator")

    # A file that is not audio: the server's 400 message, and nothing stored.
    page.locator("#voice-upload").get_by_label("Name", exact=True).fill("noise")
    page.locator("#voice-upload").get_by_label("Audio file").set_input_files(
        files=[{"name": "noise.mp3", "mimeType": "audio/mpeg", "buffer": b"not audio" * 100}]
    )
    page.get_by_role("button", name="Upload voice").click()
    expect(page.locator("#voices-message")).to_contain_text("(HTTP 400)")
    expect(page.locator("li[data-voice='noise']")).to_have_count(0)
    screenshots(page, "voices")

    page.get_by_role("tab", name="Speak").click()
    page.locator("#view-speak").get_by_label("Voice", exact=True).select_option("storyteller")
    page.locator("#view-speak").get_by_label("Text", exact=True).fill(
        "Spoken with the uploaded voice."
    )
    body = speak(page)
    assert body["voice"] == "storyteller"
    assert playable_duration(page, "#speak-audio") > 0.5
    expect(page.locator("#speak-message")).to_be_hidden()


def test_rename_and_delete_a_voice(page: Page) -> None:
    page.get_by_role("tab", name="Voices").click()
    page.locator("#voice-upload").get_by_label("Name", exact=True).fill("draft")
    page.locator("#voice-upload").get_by_label("Audio file").set_input_files(
        files=[{"name": "draft.mp3", "mimeType": "audio/mpeg", "buffer": sample(1)}]
    )
    page.get_by_role("button", name="Upload voice").click()
    card = page.locator("li[data-voice='draft']")
    card.locator("summary").click()
    card.get_by_label("New name for draft").fill("final")
    card.get_by_role("button", name="Rename").click()
    expect(page.locator("#voices-message")).to_have_text("Voice 'draft' renamed to 'final'.")
    final = page.locator("li[data-voice='final']")
    final.get_by_role("button", name="Play final").click()
    assert playable_duration(page, "#voices-player") > 1.0
    page.once("dialog", lambda d: d.accept())
    final.get_by_role("button", name="Delete final").click()
    expect(page.locator("#voices-message")).to_have_text("Voice 'final' deleted.")
    expect(final).to_have_count(0)


def test_status_shows_engine_replicas_and_memory(page: Page) -> None:
    expect(page.locator("#simulated-banner")).to_contain_text("tones, not speech")
    page.get_by_role("tab", name="Status").click()
    expect(page.locator("#status-engine")).to_contain_text("simulated")
    # Readiness is shown once, as "Model ready", not again under the original API's name.
    expect(page.locator("#status-engine")).to_contain_text("Model ready")
    expect(page.locator("#status-engine")).not_to_contain_text("model_loaded")
    deployments = (
        "SpeechIngress",
        "TextAudioDeployment",
        "SpeechModelDeployment",
        "JobWorkerDeployment",
    )
    for name in deployments:
        expect(page.locator(f"tr[data-deployment='{name}']")).to_contain_text("1 running")
    # Replicas push their figures every few seconds; the view refreshes itself.
    expect(page.locator("#status-memory tbody tr")).to_have_count(len(deployments), timeout=30_000)
    expect(page.locator("#status-memory tbody")).to_contain_text("no GPU")
    screenshots(page, "status")


def test_tabs_work_from_the_keyboard_and_every_control_is_labelled(page: Page) -> None:
    page.get_by_role("tab", name="Speak").focus()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#view-voices")).to_be_visible()
    expect(page.get_by_role("tab", name="Voices")).to_be_focused()
    page.keyboard.press("End")
    expect(page.locator("#view-status")).to_be_visible()
    page.keyboard.press("Home")
    expect(page.locator("#view-speak")).to_be_visible()
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button, audio')]
             .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                          && !e.textContent.trim())
             .map(e => e.id || e.outerHTML.slice(0, 60))"""
    )
    assert unlabelled == []


def test_page_loads_without_a_key_then_asks_for_one(
    browser: Browser, app: ServeApp, console: Console
) -> None:
    console.expect("status of 401")
    page = open_page(browser, app, console, key=None)
    expect(page.locator("#key-dialog")).to_be_visible()
    expect(page.locator("#key-reason")).to_contain_text("Missing API key.")
    page.get_by_label("Key", exact=True).fill(API_KEY)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#engine-badge")).to_have_text("engine: simulated")
    expect(page.locator("#global-message")).to_be_hidden()
    assert page.evaluate("localStorage.getItem('chatterbox-serve.api-key')") == API_KEY
    page.locator("#view-speak").get_by_label("Text", exact=True).fill("With the key.")
    speak(page)
    playable_duration(page, "#speak-audio")
    assert console.urls and not [u for u in console.urls if API_KEY in u]
    page.context.close()
    assert console.unexpected() == []


def test_a_bad_key_shows_the_servers_message(
    browser: Browser, app: ServeApp, console: Console
) -> None:
    console.expect("status of 401")
    page = open_page(browser, app, console, key="not-the-key")
    expect(page.locator("#global-message")).to_contain_text("Invalid API key.")
    expect(page.locator("#key-dialog")).to_be_visible()
    page.get_by_role("button", name="Close").click()
    page.locator("#view-speak").get_by_label("Text", exact=True).fill("Refused.")
    page.get_by_role("button", name="Speak", exact=True).click()
    expect(page.locator("#speak-message")).to_have_text("Invalid API key. (HTTP 401)")
    page.context.close()
    assert console.errors, "the 401 responses should show in the console"
    assert console.unexpected() == []


def test_record_a_voice_from_the_microphone(
    playwright: Playwright, app: ServeApp, console: Console
) -> None:
    # Chromium's fake capture device: a beeping microphone, granted without a prompt.
    browser = launch(
        playwright, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"
    )
    try:
        page = open_page(browser, app, console)
        page.get_by_role("tab", name="Voices").click()
        upload = page.locator("#voice-upload")
        upload.get_by_label("Name", exact=True).fill("microphone")
        page.get_by_role("button", name="Record").click()
        expect(page.locator("#voice-record-state")).to_contain_text("recording… 2 s")
        page.get_by_role("button", name="Stop recording").click()
        expect(page.locator("#voice-record-state")).to_contain_text("recorded")
        expect(page.locator("#voice-record-preview")).to_be_visible()
        page.get_by_role("button", name="Upload voice").click()
        expect(page.locator("#voices-message")).to_have_text("Voice 'microphone' uploaded.")
        # The server decoded the recording (webm/opus) and measured it: two seconds or so.
        info = page.locator("li[data-voice='microphone'] .hint").first.inner_text()
        seconds = float(re.search(r"(\d+\.\d+) s", info).group(1))  # type: ignore[union-attr]
        assert 1.5 < seconds < 10
    finally:
        browser.close()
    assert console.unexpected() == []


def test_check_a_file_for_the_watermark(page: Page, console: Console, tmp_path: Path) -> None:
    """Our own speech is marked; a recorded sample is not; a text file gets the 400."""
    console.expect("status of 400")  # the file that is not audio, below
    page.locator("#view-speak").get_by_label("Text", exact=True).fill(SENTENCE)
    page.locator("#view-speak").get_by_label("Format").select_option("wav")
    speak(page)
    playable_duration(page, "#speak-audio")
    ours = download(page, "#speak-download", tmp_path)
    box = page.locator("#watermark-form")
    result = page.locator("#watermark-result")
    for name, data, verdict in (
        ("ours.wav", ours, re.compile(r"^Watermarked \(confidence \d+ %\)\.$")),
        ("sample.mp3", sample(1), re.compile(r"^No watermark found \(confidence \d %\)\.$")),
        ("notes.txt", b"not audio" * 100, re.compile(r"\(HTTP 400\)$")),
    ):
        box.get_by_label("Audio file").set_input_files(
            files=[{"name": name, "mimeType": "application/octet-stream", "buffer": data}]
        )
        box.get_by_role("button", name="Check").click()
        expect(result).to_have_text(verdict, timeout=30_000)
