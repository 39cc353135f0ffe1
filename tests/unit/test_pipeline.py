import asyncio
from dataclasses import replace

import numpy as np
import pytest

from chatterbox_serve.audio import AudioFormat, decode_audio
from chatterbox_serve.audio.watermark import load_watermarker
from chatterbox_serve.config import SimulatedEngineConfig, load_settings
from chatterbox_serve.engines.base import SynthesisRequest
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.errors import EngineError, InvalidRequestError
from chatterbox_serve.speech import SpeechOrder, SpeechPipeline
from tests.local_backend import LocalBackend
from tools.bench.direct import DirectSubmitter

SETTINGS = load_settings(
    {
        "MAX_CHUNK_LENGTH": "40",
        "CHATTERBOX_STREAM_FIRST_CHUNK_LENGTH": "20",
        "CHATTERBOX_MAX_CHUNKS_PER_REQUEST": "6",
    },
    dotenv_path=None,
)
# Without the watermark, for what its CPU time or its change to the audio would blur.
UNMARKED = SETTINGS.model_copy(
    update={"audio": SETTINGS.audio.model_copy(update={"watermark": "off"})}
)
FAST = SimulatedEngineConfig(base_s=0.0, per_item_s=0.0, per_char_s=0.0)


@pytest.fixture(scope="module", autouse=True)
def _watermark_network_loaded() -> None:
    """Loaded before the first request, as the audio deployment loads it at start: the
    timing tests here measure requests, not a one-off load."""
    load_watermarker()


TEXT = "First sentence is here. Second one follows it. Third closes the test."


def _job(text=TEXT, fmt=AudioFormat.WAV, **kw):
    return SpeechOrder("rid", text, fmt, SynthesisRequest(text="", language="en"), **kw)


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


class _WatchedSubmitter(DirectSubmitter):
    """Keeps a weak reference to every chunk's audio, to see when the pipeline lets go."""

    def __init__(self, engine):
        super().__init__(engine)
        self.audio: list = []

    async def _one(self, item):
        import weakref

        result = await super()._one(item)
        self.audio.append(weakref.ref(result.audio))
        return result


async def test_a_stream_lets_go_of_each_chunks_audio_once_encoded():
    import gc

    settings = load_settings(
        {"MAX_CHUNK_LENGTH": "40", "CHATTERBOX_MAX_CHUNKS_PER_REQUEST": "50"}, dotenv_path=None
    )
    sub = _WatchedSubmitter(SimulatedEngine(FAST))
    text = " ".join(f"Sentence number {i} is spoken here." for i in range(12))
    still_held = []
    stream = SpeechPipeline(settings, sub).stream(_job(text, AudioFormat.PCM))
    async for index, piece in _enumerate(stream):
        gc.collect()
        # Without streaming, piece k is chunk k: every chunk before it must be gone.
        still_held += [k for k, ref in enumerate(sub.audio[:index]) if ref() is not None]
        assert piece.data
    assert len(sub.audio) == 12
    assert still_held == []
    gc.collect()
    assert not any(ref() is not None for ref in sub.audio)


async def _enumerate(items):
    index = 0
    async for item in items:
        yield index, item
        index += 1


def test_text_that_is_mostly_combining_marks_is_refused():
    pipeline = SpeechPipeline(SETTINGS, DirectSubmitter(SimulatedEngine(FAST)))
    with pytest.raises(InvalidRequestError) as info:
        pipeline.plan(_job("a" + "\u0301" * 406))
    assert info.value.param == "input" and "marks" in info.value.message


def test_letterless_fragments_join_their_neighbours():
    settings = load_settings({"MAX_CHUNK_LENGTH": "20"}, dotenv_path=None)
    pipeline = SpeechPipeline(settings, DirectSubmitter(SimulatedEngine(FAST)))
    text = "First part here. " + "\u0301" * 20 + " Last part here."
    items = pipeline.plan(_job(text))
    assert len(items) == 2
    assert all(any(ch.isalpha() for ch in item.text) for item in items)
    assert "".join(item.text for item in items).count("\u0301") == 20


SLOW = SimulatedEngineConfig(base_s=0.0, per_item_s=0.0, per_char_s=0.0, chars_per_second=1.0)


async def test_engines_are_told_to_stop_at_the_audio_cap():
    # 69 characters of text would become 69 s of audio at one character a second.
    settings = load_settings({"CHATTERBOX_MAX_AUDIO_S_PER_CHAR": "0.25"}, dotenv_path=None)
    sub = RecordingSubmitter(SimulatedEngine(SLOW))
    rendered = await SpeechPipeline(settings, sub).render(_job(TEXT))
    cap_s = len(TEXT) * 0.25
    assert [s.max_new_tokens for s in sub.submitted] == [int(cap_s * 25)]
    assert cap_s - 0.1 <= rendered.audio_s <= cap_s
    audio, rate, _ = decode_audio(rendered.data)
    assert audio.shape[1] / rate <= cap_s


async def test_each_chunk_gets_its_own_budget_and_a_smaller_asked_one_stays():
    settings = load_settings(
        {"CHATTERBOX_MAX_AUDIO_S_PER_CHAR": "0.25", "MAX_CHUNK_LENGTH": "40"}, dotenv_path=None
    )
    pipeline = SpeechPipeline(settings, DirectSubmitter(SimulatedEngine(FAST)))
    items = pipeline.plan(_job(TEXT))
    assert [i.max_new_tokens for i in items] == [max(125, int(len(i.text) * 6.25)) for i in items]
    asked = SpeechOrder("rid", TEXT, AudioFormat.WAV, SynthesisRequest("", "en", max_new_tokens=50))
    assert {i.max_new_tokens for i in pipeline.plan(asked)} == {50}


class _BudgetIgnoringSubmitter(DirectSubmitter):
    """An engine that runs past the budget it is given (a model that never says stop)."""

    def __call__(self, item):
        return super().__call__(replace(item, max_new_tokens=None))


async def test_audio_past_the_cap_fails_even_when_the_engine_ignores_its_budget():
    settings = load_settings({"CHATTERBOX_MAX_AUDIO_S_PER_CHAR": "0.25"}, dotenv_path=None)
    pipeline = SpeechPipeline(settings, _BudgetIgnoringSubmitter(SimulatedEngine(SLOW)))
    with pytest.raises(EngineError, match="more than"):
        await pipeline.render(_job(TEXT))


async def test_whole_files_over_the_size_limit_point_to_streaming():
    settings = load_settings(
        {"CHATTERBOX_MAX_FILE_RESPONSE_BYTES": "4096", "MAX_CHUNK_LENGTH": "40"}, dotenv_path=None
    )
    sub = RecordingSubmitter(SimulatedEngine(FAST))
    with pytest.raises(InvalidRequestError) as info:
        await SpeechPipeline(settings, sub).render(_job(TEXT))
    assert info.value.code == "response_too_large" and "stream" in info.value.message


STREAMING = SimulatedEngineConfig(
    base_s=0.2, per_item_s=0.0, per_char_s=0.0, chars_per_second=5.0, streaming=True
)


async def test_a_streaming_model_sends_first_audio_before_the_first_chunk_is_done():
    # The first chunk's audio leaves in pieces as the model makes them; the
    # bytes are the same as the file's, since pieces of one chunk are not crossfaded.
    # (Without the watermark: marked in pieces, they are within the streaming join bound
    # of the chunk marked whole instead, tests/unit/test_watermark.py.)
    engine = SimulatedEngine(STREAMING, stream_first_tokens=10)
    sub = DirectSubmitter(engine)
    assert sub.streams is not None
    pipeline = SpeechPipeline(UNMARKED, sub, sub.streams)
    first_seen_at_calls = None
    data = b""
    async for piece in pipeline.stream(_job(fmt=AudioFormat.PCM, streaming=True)):
        if piece.data and first_seen_at_calls is None:
            first_seen_at_calls = engine.recorder.calls
        data += piece.data
    # When the first bytes left, the engine had finished nothing: not even chunk 0.
    assert first_seen_at_calls == 0
    # The same stream from a model that sends each chunk whole: the same bytes.
    whole_chunks = SpeechPipeline(UNMARKED, DirectSubmitter(SimulatedEngine(STREAMING)))
    same = b"".join(
        [p.data async for p in whole_chunks.stream(_job(fmt=AudioFormat.PCM, streaming=True))]
    )
    assert data == same


async def test_a_speed_change_keeps_the_first_chunk_whole():
    # Pieces time-stretched apart would have seams inside the chunk.
    engine = SimulatedEngine(STREAMING, stream_first_tokens=10)
    sub = DirectSubmitter(engine)
    # Unmarked: on a busy CPU, marking and stretching chunk 0 can outlast chunk 1's 0.2 s.
    pipeline = SpeechPipeline(UNMARKED, sub, sub.streams)
    first_seen_at_calls = None
    async for piece in pipeline.stream(_job(fmt=AudioFormat.PCM, streaming=True, speed=1.5)):
        if piece.data and first_seen_at_calls is None:
            first_seen_at_calls = engine.recorder.calls
    assert first_seen_at_calls == 1


async def test_a_streamed_first_chunk_that_fails_fails_the_stream_before_any_byte():
    engine = SimulatedEngine(STREAMING, stream_first_tokens=10)
    sub = DirectSubmitter(engine)
    settings = load_settings({"CHATTERBOX_STREAM_FIRST_CHUNK_LENGTH": "100"}, dotenv_path=None)
    pipeline = SpeechPipeline(settings, sub, sub.streams)
    marker = STREAMING.failure_marker
    with pytest.raises(EngineError):
        async for _ in pipeline.stream(_job(f"Fails {marker} here.", streaming=True)):
            pytest.fail("no byte may leave before the failure")
