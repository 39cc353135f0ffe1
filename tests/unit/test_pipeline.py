import asyncio

import numpy as np
import pytest

from chatterbox_serve.audio import AudioFormat, decode_audio
from chatterbox_serve.config import SimulatedEngineConfig, load_settings
from chatterbox_serve.engines.base import SynthesisRequest
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.errors import EngineError, InvalidRequestError
from chatterbox_serve.pipeline import DirectSubmitter, SpeechJob, SpeechPipeline
from tests.local_backend import LocalBackend

SETTINGS = load_settings(
    {
        "MAX_CHUNK_LENGTH": "40",
        "CHATTERBOX_STREAM_FIRST_CHUNK_LENGTH": "20",
        "CHATTERBOX_MAX_CHUNKS_PER_REQUEST": "6",
    },
    dotenv_path=None,
)
FAST = SimulatedEngineConfig(base_s=0.0, per_item_s=0.0, per_char_s=0.0)
TEXT = "First sentence is here. Second one follows it. Third closes the test."


def _job(text=TEXT, fmt=AudioFormat.WAV, **kw):
    return SpeechJob("rid", text, fmt, SynthesisRequest(text="", language="en"), **kw)


class RecordingSubmitter(DirectSubmitter):
    """Records what the pipeline submits, and when, at the engine boundary."""

    def __init__(self, engine):
        super().__init__(engine)
        self.submitted: list[SynthesisRequest] = []
        self.cancelled = 0

    def __call__(self, item):
        self.submitted.append(item)
        task = super().__call__(item)
        task.add_done_callback(lambda t: setattr(self, "cancelled", self.cancelled + t.cancelled()))
        return task


async def test_all_chunks_are_submitted_before_any_result_is_awaited():
    sub = RecordingSubmitter(
        SimulatedEngine(SimulatedEngineConfig(base_s=0.05, per_item_s=0, per_char_s=0))
    )
    stream = SpeechPipeline(SETTINGS, sub).stream(_job())
    await stream.__anext__()
    assert [s.chunk_index for s in sub.submitted] == [0, 1, 2]
    await stream.aclose()


async def test_render_length_matches_chunks_minus_crossfades():
    backend = LocalBackend(SETTINGS, SimulatedEngine(FAST))
    rendered = await backend.render(_job())
    audio, rate, _ = decode_audio(rendered.data)
    fade = int(24000 * SETTINGS.audio.crossfade_ms / 1000)
    expected = (
        sum(
            int(24000 / 15) * len(c)
            for c in ["First sentence is here.", "Second one follows it.", "Third closes the test."]
        )
        - 2 * fade
    )
    assert abs(audio.shape[1] - expected) < 2000
    assert rendered.usage.input_tokens == len(TEXT) - 2
    assert rendered.timings.chunks == 3


async def test_stream_and_render_give_the_same_audio():
    backend = LocalBackend(SETTINGS, SimulatedEngine(FAST))
    whole = await backend.render(_job(fmt=AudioFormat.PCM))
    pieces = [p async for p in backend.stream(_job(fmt=AudioFormat.PCM))]
    assert b"".join(p.data for p in pieces) == whole.data
    assert pieces[-1].final and pieces[-1].usage == whole.usage


async def test_streaming_uses_a_short_first_chunk():
    sub = RecordingSubmitter(SimulatedEngine(FAST))
    _ = [p async for p in SpeechPipeline(SETTINGS, sub).stream(_job(streaming=True))]
    assert len(sub.submitted[0].text) <= 20


async def test_speed_shortens_audio():
    backend = LocalBackend(SETTINGS, SimulatedEngine(FAST))
    normal = await backend.render(_job(fmt=AudioFormat.PCM))
    fast = await backend.render(_job(fmt=AudioFormat.PCM, speed=2.0))
    assert abs(len(fast.data) / len(normal.data) - 0.5) < 0.05


async def test_too_many_chunks_is_a_client_error_before_any_submission():
    sub = RecordingSubmitter(SimulatedEngine(FAST))
    with pytest.raises(InvalidRequestError):
        await SpeechPipeline(SETTINGS, sub).render(_job(text="word. " * 60))
    assert sub.submitted == []


async def test_failed_chunk_fails_the_request_and_cancels_the_rest():
    engine = SimulatedEngine(SimulatedEngineConfig(base_s=0.02, per_item_s=0, per_char_s=0))
    sub = RecordingSubmitter(engine)
    text = "Bad <<simulate-engine-failure>> one. Good two here. Good three here."
    with pytest.raises(EngineError):
        await SpeechPipeline(SETTINGS, sub).render(_job(text=text))
    await asyncio.sleep(0.1)
    assert sub.cancelled >= 1  # the chunks after the failure were not left running


async def test_closing_a_stream_cancels_pending_chunks():
    engine = SimulatedEngine(SimulatedEngineConfig(base_s=0.05, per_item_s=0, per_char_s=0))
    sub = RecordingSubmitter(engine)
    stream = SpeechPipeline(SETTINGS, sub).stream(_job(text="Aa aa. " * 20))
    await stream.__anext__()
    await stream.aclose()
    await asyncio.sleep(0.05)
    assert sub.cancelled >= 1
    assert engine.recorder.snapshot()["calls"] < len(sub.submitted)


def test_pipeline_audio_is_finite():
    backend = LocalBackend(SETTINGS, SimulatedEngine(FAST))
    rendered = asyncio.run(backend.render(_job()))
    audio, _, _ = decode_audio(rendered.data)
    assert np.isfinite(audio).all()


async def test_stream_sends_the_first_second_on_its_own():
    settings = load_settings({"CHATTERBOX_STREAM_FIRST_CHUNK_LENGTH": "60"}, dotenv_path=None)
    backend = LocalBackend(settings, SimulatedEngine(FAST))
    text = "This first sentence is long enough for several seconds of audio. " * 3
    pieces = [p async for p in backend.stream(_job(text=text, fmt=AudioFormat.PCM, streaming=True))]
    assert len(pieces[0].data) == 24000 * 2  # one second of s16le, sent before the rest
    assert len(pieces) >= 3 and pieces[-1].final
