"""The FastAPI ingress run in-process over a `LocalBackend` and a fast simulated engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from chatterbox_serve.config import Settings, load_settings
from chatterbox_serve.engines.simulated import SimulatedEngine
from deployments.ingress import build_api
from tests.local_backend import LocalBackend


def make_settings(**env: str) -> Settings:
    base = {
        "CHATTERBOX_SIM_BASE_S": "0",
        "CHATTERBOX_SIM_PER_ITEM_S": "0",
        "CHATTERBOX_SIM_PER_CHAR_S": "0",
        "MAX_TOTAL_LENGTH": "600",
        "CHATTERBOX_MAX_JSON_BODY_BYTES": "8192",
    }
    return load_settings({**base, **env}, dotenv_path=None)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings()
    app = build_api(
        settings, LocalBackend(settings, SimulatedEngine(settings.simulated)), "simulated"
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c
