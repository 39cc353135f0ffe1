"""`model: chatterbox-turbo` through the torch engine on the tiny Turbo checkpoint
(`tools/write_checkpoint.py --turbo --tiny`): real tokenizer, T3 tokens and meanflow
S3Gen waveform on the CPU, behind the real ingress and speech pipeline."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from chatterbox_serve.config import Settings
from chatterbox_serve.engines import build_engine
from chatterbox_serve.engines.base import SynthesisRequest, VoicePrompt
from chatterbox_serve.engines.torch_engine import _Loaded, _Prepared
from chatterbox_serve.engines.torch_turbo import TurboTorchEngine
from chatterbox_serve.errors import InvalidRequestError
from chatterbox_serve.families import ModelFamily
from deployments.ingress import build_api
from deployments.routes.speech import IGNORED_FIELDS_HEADER
from tests.component.conftest import make_settings
from tests.local_backend import LocalBackend

pytestmark = pytest.mark.timeout(900)

TEXT = "Well [laugh] that was something."


class RecordingTurboEngine(TurboTorchEngine):
    """The Turbo engine, keeping the text tokens each item hands T3."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.text_tokens: list[tuple[int, ...]] = []

    def _prepare(self, loaded: _Loaded, index: int, request: SynthesisRequest) -> _Prepared:
        prepared = super()._prepare(loaded, index, request)
        self.text_tokens.append(prepared.item.text_tokens)
        return prepared


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    from tools.write_checkpoint import write_turbo_checkpoint

    directory = write_turbo_checkpoint(tmp_path_factory.mktemp("turbo"), tiny=True, seed=3)
    return make_settings(
        CHATTERBOX_MODELS="chatterbox-turbo",
        CHATTERBOX_TURBO_MODEL_DIR=str(directory),
        CHATTERBOX_DEVICE="cpu",
        CHATTERBOX_MAX_NEW_TOKENS="80",
        MAX_TOTAL_LENGTH="600",
    )


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Iterator[RecordingTurboEngine]:
    eng = RecordingTurboEngine(settings)
    asyncio.run(eng.start())
    yield eng
    asyncio.run(eng.shutdown())


@pytest.fixture
async def client(
    settings: Settings, engine: RecordingTurboEngine
) -> AsyncIterator[httpx.AsyncClient]:
    app = build_api(settings, LocalBackend(settings, engine), "torch")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=600) as c:
        yield c


def _tag_id(engine: RecordingTurboEngine, tag: str) -> int:
    loaded = engine._live()
    token_id = loaded.tokenizer.tokenizer.token_to_id(tag)
    assert isinstance(token_id, int)
    return token_id


def test_the_registry_builds_the_turbo_engine_for_the_turbo_family(settings: Settings) -> None:
    assert type(build_engine(settings, "torch")) is TurboTorchEngine
    original = make_settings(CHATTERBOX_MODELS="chatterbox")
    assert type(build_engine(original, "torch")).__name__ == "TorchEngine"


async def test_a_turbo_request_with_a_tag_is_spoken_through_the_turbo_path(
    client: httpx.AsyncClient, engine: RecordingTurboEngine
) -> None:
    body = {
        "model": "chatterbox-turbo",
        "input": TEXT,
        "response_format": "wav",
        "seed": 7,
        "cfg_weight": 0.3,
        "exaggeration": 0.9,
    }
    before = len(engine.text_tokens)
    r = await client.post("/v1/audio/speech", json=body)
    assert r.status_code == 200, r.text
    assert r.headers[IGNORED_FIELDS_HEADER] == "cfg_weight, exaggeration"
    # The tag reached T3 as Turbo's one token for it, in one of the text's chunks (the
    # plan cuts short chunks under an 80-token cap, never inside a tag).
    chunks = engine.text_tokens[before:]
    laugh = _tag_id(engine, "[laugh]")
    assert sum(chunk.count(laugh) for chunk in chunks) == 1
    assert laugh not in engine._live().tokenizer.encode("Well laugh that was something.")
    # Real tokens (the stop token's bias ends random speech after tens of tokens), then
    # S3Gen's 960 samples a token, its three silence tokens included.
    output_tokens = int(r.headers["X-Usage-Output-Tokens"])
    assert output_tokens > 3
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getframerate(), w.getnchannels()) == (24_000, 1)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    # Chunks join with one crossfade each (CHATTERBOX_CROSSFADE_MS, 25 ms).
    assert len(samples) == 960 * output_tokens - 600 * (len(chunks) - 1)
    assert float(np.abs(samples.astype(np.float64)).mean()) > 1.0  # not silence


async def test_turbo_streams_sse(client: httpx.AsyncClient) -> None:
    body = {"model": "chatterbox-turbo", "input": "Okay [sigh] fine.", "stream_format": "sse"}
    r = await client.post("/v1/audio/speech", json={**body, "response_format": "mp3"})
    assert r.status_code == 200
    assert '"type":"speech.audio.delta"' in r.text and '"type":"speech.audio.done"' in r.text


def _tone_wav(seconds: float) -> bytes:
    t = np.arange(int(24_000 * seconds)) / 24_000
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24_000)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


async def test_a_cloned_voice_of_five_seconds_or_less_fails_its_item_only(
    engine: RecordingTurboEngine,
) -> None:
    short = SynthesisRequest(
        text="Hello.",
        language="en",
        voice=VoicePrompt.from_bytes(_tone_wav(4.0)),
        family=ModelFamily.TURBO,
        max_new_tokens=20,
    )
    plain = SynthesisRequest(text="Hello.", language="en", family=ModelFamily.TURBO)
    outcomes: list[Any] = await engine.synthesize([short, plain])
    assert isinstance(outcomes[0], InvalidRequestError)
    assert outcomes[0].param == "voice" and "more than 5 s" in outcomes[0].message
    assert not isinstance(outcomes[1], Exception) and len(outcomes[1].audio) > 0


def test_info_names_the_family(engine: RecordingTurboEngine) -> None:
    info = engine.info()
    assert (info["family"], info["model"], info["diffusion_steps"]) == (
        "chatterbox-turbo",
        "turbo",
        2,
    )
    assert Path(engine._live().checkpoint_dir).is_dir()


def test_the_turbo_engine_loads_in_a_fresh_process_without_torchaudio(
    settings: Settings,
) -> None:
    """CI's torch has no torchaudio build: the engine must put its stand-in in place
    before upstream's S3Gen modules import it (this process already has one)."""
    import subprocess
    import sys

    directory = settings.engine.model_dir_for(ModelFamily.TURBO)
    code = (
        "import importlib.util, sys\n"
        "from chatterbox_serve.config import EngineConfig, Settings\n"
        "from chatterbox_serve.engines.torch_turbo import TurboTorchEngine\n"
        "from chatterbox_serve.families import ModelFamily as F\n"
        "assert 'torchaudio' not in sys.modules\n"
        f"e = EngineConfig(engine='torch', models=(F.TURBO,), turbo_model_dir={directory!r},"
        " device='cpu')\n"
        "TurboTorchEngine(Settings(engine=e).for_family(F.TURBO))._load()\n"
        "print('loaded')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("loaded")
