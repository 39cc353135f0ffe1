"""A real Chromium (Debian's `chromium`, driven by Playwright) against the Serve app.

Each module starts its own app with the simulated engine (`tests.serve.conftest`). The
browser is the system one: `pip install playwright` needs no `playwright install`.
`CHROMIUM_PATH` points elsewhere when Chromium lives somewhere else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.serve.conftest import ServeApp, start_app

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "browser-test-key"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "ui"
VIEWPORTS = {"desktop": {"width": 1280, "height": 860}, "phone": {"width": 390, "height": 844}}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/browser/" in str(item.path):
            item.add_marker(pytest.mark.serve)
            item.add_marker(pytest.mark.browser)


# Module scope, not session: sync Playwright keeps an asyncio loop running in this
# thread while it is started, and pytest-asyncio tests collected after tests/browser/
# (tests/component/) cannot start theirs until it stops.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"No Chromium at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)"
        )
    with sync_playwright() as p:
        yield p


def launch(playwright: Playwright, *extra_args: str) -> Browser:
    """The system Chromium with the CI flags, plus `extra_args`."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args])


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = launch(playwright)
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeApp]:
    voices = tmp_path_factory.mktemp("voices")
    # The playground's key is an operator's here: its status page and default voice need one.
    settings = {"API_KEYS": API_KEY, "ADMIN_API_KEYS": API_KEY, "VOICE_LIBRARY_DIR": str(voices)}
    yield from start_app(settings=settings)


class Console:
    """Console errors and uncaught exceptions of a page; a test may expect some."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.expected: list[re.Pattern[str]] = []
        self.urls: list[str] = []  # every URL the page requested

    def expect(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


@pytest.fixture
def console() -> Console:
    return Console()


def open_page(browser: Browser, app: ServeApp, console: Console, key: str | None = API_KEY) -> Page:
    """A fresh browser context on the playground, with `key` already saved (or none)."""
    context = browser.new_context(viewport=VIEWPORTS["desktop"], accept_downloads=True)
    if key is not None:
        context.add_init_script(f"localStorage.setItem('chatterbox-serve.api-key', {key!r});")
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and console.errors.append(m.text))
    page.on("pageerror", lambda e: console.errors.append(f"uncaught: {e}"))
    page.on("request", lambda r: console.urls.append(r.url))
    page.goto(app.base_url + "/")
    return page


@pytest.fixture
def page(browser: Browser, app: ServeApp, console: Console) -> Iterator[Page]:
    """The playground, key saved, settings loaded; fails the test on console errors."""
    page = open_page(browser, app, console)
    page.wait_for_selector("#engine-badge.simulated")
    yield page
    page.context.close()
    assert console.unexpected() == [], "JavaScript console errors"


def screenshots(page: Page, view: str) -> None:
    """docs/ui/<view>-desktop.png and -phone.png of the page as it is now."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, size in VIEWPORTS.items():
        page.set_viewport_size(size)
        page.wait_for_timeout(150)  # let the layout settle after the resize
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= size["width"], f"{view} scrolls sideways at {name} width ({width}px)"
        page.screenshot(path=str(SCREENSHOTS / f"{view}-{name}.png"), full_page=True)
    page.set_viewport_size(VIEWPORTS["desktop"])
