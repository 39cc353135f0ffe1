"""Adding an engine is one module and one registry entry; the builder does the rest."""

from __future__ import annotations

import httpx
import pytest

from chatterbox_serve.config import load_settings
from chatterbox_serve.engines import ENGINES, build_engine
from deployments.builder import build_app
from deployments.ingress import build_api
from tests.component.dummy_engine import PATH, DummyEngine
from tests.local_backend import LocalBackend


@pytest.fixture
def dummy_registered(monkeypatch):
    monkeypatch.delenv("CHATTERBOX_ENGINE", raising=False)
    monkeypatch.setitem(ENGINES, "dummy", PATH)  # the one registry line


def test_builder_binds_the_registered_engine_and_asks_for_its_gpu(dummy_registered):
    app = build_app({"engine": "dummy", "dotenv_path": None})
    ingress = app._bound_deployment
    model = ingress.init_args[1]._bound_deployment
    assert ingress.init_args[3] == "dummy"
    assert model.init_args[1] == PATH  # the model replica builds this class, nothing else
    assert model.ray_actor_options["num_gpus"] == 1  # from DummyEngine.needs_gpu


async def test_the_registered_engine_serves_speech(dummy_registered):
    settings = load_settings({"CHATTERBOX_ENGINE": "dummy"}, dotenv_path=None)
    engine = build_engine(settings, PATH)
    assert isinstance(engine, DummyEngine)
    app = build_api(settings, LocalBackend(settings, engine), "dummy")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.post(
            "/v1/audio/speech", json={"input": "Hello there.", "response_format": "pcm"}
        )
    assert r.status_code == 200 and r.headers["x-chatterbox-engine"] == "dummy"
    assert len(r.content) == 2 * 12 * 240  # 12 characters of 10 ms silence, 16-bit
