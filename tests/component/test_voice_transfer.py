"""Voice audio crosses to the model once per request, not once per chunk.

The pipeline runs in-process against the simulated engine behind `DirectSubmitter`,
which plays a model replica with its voice audio cache. A counting router between
them sees exactly what a Serve handle call would carry across Ray.
"""

from __future__ import annotations

import hashlib

import pytest

from chatterbox_serve.audio import AudioFormat
from chatterbox_serve.config import SimulatedEngineConfig, load_settings
from chatterbox_serve.engines.base import SynthesisRequest, VoicePrompt
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.engines.voice_audio import VoiceAudioCache
from chatterbox_serve.errors import EngineError, VoiceAudioMissingError
from chatterbox_serve.speech import Cancellable, SpeechOrder, SpeechPipeline
from tests.conftest import synthesis_request
from tools.bench.direct import DirectSubmitter

SETTINGS = load_settings(
    {"MAX_CHUNK_LENGTH": "40", "CHATTERBOX_STREAM_FIRST_CHUNK_LENGTH": "20"}, dotenv_path=None
)
FAST = SimulatedEngineConfig(base_s=0.0, per_item_s=0.0, per_char_s=0.0)
# 20 sentences of about 35 characters: 20 chunks at MAX_CHUNK_LENGTH 40.
TEXT = " ".join(f"Sentence number {i} is spoken here now." for i in range(20))
VOICE = VoicePrompt.from_bytes(bytes(range(256)) * 4096)  # 1 MiB


class Router:
    """Sends each item to one of the model replicas in turn; counts voice bytes sent."""

    def __init__(self, *replicas: DirectSubmitter) -> None:
        self.replicas = replicas
        self.voice_bytes = 0
        self.items = 0
        self.sent = 0

    def __call__(self, item: SynthesisRequest) -> Cancellable:
        self.items += 1
        self.voice_bytes += len(item.voice.audio) if item.voice else 0
        replica = self.replicas[self.sent % len(self.replicas)]
        self.sent += 1
        return replica(item)


def _replica(cache_bytes: int = 64 * 1_048_576) -> DirectSubmitter:
    return DirectSubmitter(SimulatedEngine(FAST), voice_cache_bytes=cache_bytes)


def _job(streaming: bool, voice: VoicePrompt | None = VOICE) -> SpeechOrder:
    template = synthesis_request("", voice=voice, seed=7)
    return SpeechOrder("rid", TEXT, AudioFormat.WAV, template, streaming=streaming)


def _chunks(streaming: bool) -> int:
    return len(SpeechPipeline(SETTINGS, Router()).plan(_job(streaming)))


async def _speak(router: Router, streaming: bool, voice: VoicePrompt | None = VOICE) -> bytes:
    pipeline = SpeechPipeline(SETTINGS, router)
    if streaming:
        return b"".join([p.data async for p in pipeline.stream(_job(True, voice))])
    return (await pipeline.render(_job(False, voice))).data


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_20_chunk_request_sends_its_voice_once(streaming: bool) -> None:
    router = Router(_replica())
    await _speak(router, streaming)
    assert router.items == _chunks(streaming) >= 20
    # Today's main sent the 1 MiB voice with every chunk: 20 MiB or more.
    assert router.voice_bytes == VOICE.size


@pytest.mark.parametrize("streaming", [False, True])
async def test_chunks_on_a_replica_that_never_saw_the_voice_are_resent_with_it(
    streaming: bool,
) -> None:
    alone = await _speak(Router(_replica()), streaming)
    router = Router(_replica(), _replica())
    spread = await _speak(router, streaming)
    # Every chunk spoke with the request's voice, wherever it ran.
    assert spread == alone
    n = _chunks(streaming)
    assert n < router.items <= n + n // 2
    assert router.voice_bytes == (router.items - n + 1) * VOICE.size < n * VOICE.size


async def test_the_voice_is_what_the_engine_hears_not_the_builtin_one() -> None:
    with_voice = await _speak(Router(_replica()), False)
    builtin = await _speak(Router(_replica()), False, voice=None)
    assert with_voice != builtin


async def test_a_replica_too_small_to_keep_the_voice_still_speaks_every_chunk() -> None:
    alone = await _speak(Router(_replica()), False)
    router = Router(_replica(cache_bytes=1024))
    assert await _speak(router, False) == alone
    assert router.items == 39  # 19 chunks missed once each and were resent whole


async def test_a_warm_replica_serves_later_requests_from_its_cache() -> None:
    replica = _replica()
    await _speak(Router(replica), False)
    router = Router(replica)
    await _speak(router, True)
    assert router.voice_bytes == VOICE.size and router.items == _chunks(True)
    assert replica.voices.stats()["hits"] == 19 + _chunks(True) - 1


def test_cache_attaches_in_any_order_within_a_batch_and_checks_the_hash() -> None:
    cache = VoiceAudioCache(4 * 1_048_576)
    first = SynthesisRequest(text="a", language="en", voice=VOICE, chunk_index=0)
    later = SynthesisRequest(text="b", language="en", voice=VOICE.detach(), chunk_index=1)
    attached = cache.attach([later, first])
    assert [r.voice for r in attached if isinstance(r, SynthesisRequest)] == [VOICE, VOICE]

    forged = VoicePrompt(b"other audio", sha256=hashlib.sha256(b"x").hexdigest(), size=11)
    victim = VoicePrompt.from_bytes(b"x").detach()
    out = cache.attach(
        [
            SynthesisRequest(text="c", language="en", voice=forged),
            SynthesisRequest(text="d", language="en", voice=victim),
        ]
    )
    assert isinstance(out[0], EngineError)
    assert isinstance(out[1], VoiceAudioMissingError)


def test_cache_is_bounded_by_bytes() -> None:
    cache = VoiceAudioCache(2 * VOICE.size + 10)
    voices = [VoicePrompt.from_bytes(bytes([i]) * VOICE.size) for i in range(3)]
    cache.attach([SynthesisRequest(text="t", language="en", voice=v) for v in voices])
    assert cache.stats()["voices"] == 2 and cache.stats()["bytes"] == 2 * VOICE.size
    out = cache.attach(
        [SynthesisRequest(text="t", language="en", voice=v.detach()) for v in voices]
    )
    assert isinstance(out[0], VoiceAudioMissingError)
    assert [r.voice for r in out[1:] if isinstance(r, SynthesisRequest)] == voices[1:]


async def test_a_detached_voice_reaching_an_engine_fails_its_item_only() -> None:
    engine = SimulatedEngine(FAST)
    out = await engine.synthesize(
        [
            SynthesisRequest(text="Hello.", language="en", voice=VOICE.detach()),
            SynthesisRequest(text="Hello.", language="en", voice=VOICE),
        ]
    )
    assert isinstance(out[0], VoiceAudioMissingError)
    assert not isinstance(out[1], Exception)
