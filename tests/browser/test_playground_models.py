"""The playground with two model families loaded: it lists them, sends the chosen one,
and offers Turbo's paralinguistic tags only while Turbo is chosen."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from chatterbox_serve.families import PARALINGUISTIC_TAGS
from tests.browser.conftest import API_KEY
from tests.browser.test_playground import playable_duration, speak
from tests.serve.conftest import ServeApp, start_app


@pytest.fixture(scope="module")
def app() -> Iterator[ServeApp]:
    settings = {
        "API_KEYS": API_KEY,
        "ADMIN_API_KEYS": API_KEY,
        "CHATTERBOX_MODELS": "chatterbox-multilingual,chatterbox-turbo",
    }
    yield from start_app(settings=settings)


def test_turbo_offers_its_tags_and_speaks_them(page: Page) -> None:
    model = page.locator("#speak-model")
    expect(model.locator("option")).to_have_text(["chatterbox-multilingual", "chatterbox-turbo"])
    expect(model).to_have_value("chatterbox-multilingual")  # the default family
    tags = page.locator("#speak-tags")
    expect(tags).to_be_hidden()

    model.select_option("chatterbox-turbo")
    expect(tags).to_be_visible()
    expect(page.locator("#speak-tag-list button")).to_have_text(list(PARALINGUISTIC_TAGS))
    text = page.locator("#view-speak").get_by_label("Text", exact=True)
    text.fill("Well")
    page.get_by_role("button", name="[laugh]", exact=True).click()
    page.keyboard.type("that was fun.")
    expect(text).to_have_value("Well [laugh] that was fun.")

    body = speak(page)
    assert body["model"] == "chatterbox-turbo"
    assert body["input"] == "Well [laugh] that was fun."
    assert playable_duration(page, "#speak-audio") > 0.5

    model.select_option("chatterbox-multilingual")
    expect(tags).to_be_hidden()
    assert speak(page)["model"] == "chatterbox-multilingual"
