"""A stream's later chunks are in flight ahead of the listener, so no boundary falls silent."""

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from chatterbox_serve.audio import AudioFormat
from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult, VoicePrompt
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.errors import EngineError
from chatterbox_serve.speech import SpeechOrder, SpeechPipeline
from tools.bench.direct import DirectSubmitter
from tools.bench.stream_gaps import TEXT, engine_config, listen, listen_all, stream_settings

# T3 at 1.1 times real time per stream: the GPU engine at 64 streams on an H200.
LOADED = engine_config(speed=1.1)
SETTINGS = stream_settings()
# The boundary that fell silent: a short chunk 0, then a long chunk 1 (TEXT's first two).
TWO = "Hello there, listener. This second sentence runs a good deal longer than the first one did."


def _pipeline(sub: DirectSubmitter, settings=SETTINGS) -> SpeechPipeline:
    return SpeechPipeline(settings, sub, sub.streams)


class _WholeLaterChunks(DirectSubmitter):
    """The planted regression: chunk 0 streams, later chunks come back only when done."""

    async def stream(self, item: SynthesisRequest) -> AsyncIterator[SynthesisResult]:
        if item.chunk_index == 0:
            async for piece in super().stream(item):
                yield piece
        else:
            yield await self(item)


def test_the_measured_text_has_a_short_first_chunk_and_longer_later_ones():
    pipeline = _pipeline(DirectSubmitter(SimulatedEngine(LOADED)))
    items = pipeline.plan(_order())
    lengths = [len(i.text) for i in items]
    assert len(items) == 4 and lengths[0] < lengths[1] / 2
    assert [i.text for i in pipeline.plan(_order(TWO))] == [i.text for i in items[:2]]


async def test_a_long_second_chunk_plays_on_without_a_gap():
    heard = await listen(_pipeline(DirectSubmitter(SimulatedEngine(LOADED))), TWO, "r")
    assert sum(a for _, a in heard.arrivals) > 5.5  # both chunks were heard
    assert heard.stall_s < 0.25


async def test_the_whole_later_chunk_order_falls_silent_at_the_boundary():
    # What the fix guards against: chunk 1 (4.5 s of audio) sent whole takes 4.1 s to
    # make from chunk 0's first piece, chunk 0 plays for 1.5 s: a wait of about 2.7 s.
    heard = await listen(_pipeline(_WholeLaterChunks(SimulatedEngine(LOADED))), TWO, "r")
    assert heard.stall_s > 1.5


async def test_concurrent_streams_play_on_without_gaps():
    streams = await listen_all(_pipeline(DirectSubmitter(SimulatedEngine(LOADED))), TWO, 4)
    assert max(s.stall_s for s in streams) < 0.25
    # Sent whole, the later chunks also queue behind one another's engine calls.
    planted = await listen_all(_pipeline(_WholeLaterChunks(SimulatedEngine(LOADED))), TWO, 2)
    assert sorted(s.stall_s for s in planted)[-1] > 5.0


class _Opened(DirectSubmitter):
    """Records each chunk's stream as it opens and closes."""

    def __init__(self, engine):
        super().__init__(engine)
        self.opened: list[int] = []
        self.closed: list[int] = []
        self.finished: list[int] = []

    async def stream(self, item):
        self.opened.append(item.chunk_index)
        try:
            async for piece in super().stream(item):
                yield piece
            self.finished.append(item.chunk_index)
        finally:
            self.closed.append(item.chunk_index)


def _order(text=TEXT):
    return SpeechOrder("r", text, AudioFormat.PCM, SynthesisRequest("", "en"), streaming=True)


async def test_chunks_go_out_a_bounded_window_ahead_each_in_pieces():
    settings = stream_settings(CHATTERBOX_STREAM_CHUNKS_AHEAD="1", MAX_CHUNK_LENGTH="40")
    sub = _Opened(SimulatedEngine(engine_config(speed=4.0)))
    pipeline = _pipeline(sub, settings)
    n = len(pipeline.plan(_order()))
    assert n >= 6
    stream = pipeline.stream(_order())
    await stream.__anext__()
    assert sub.opened == [0, 1]  # chunk 0 started: one more, not the whole text
    async for _ in stream:
        # Never more than the chunk heard and one ahead in flight.
        assert len(sub.opened) - len(sub.closed) <= 2
    assert sub.opened == sub.finished == list(range(n))
    assert sub.engine.recorder.snapshot()["calls"] == n  # every chunk streamed, none whole


async def test_a_listener_who_leaves_cancels_every_chunk_in_flight():
    sub = _Opened(SimulatedEngine(LOADED))
    stream = _pipeline(sub).stream(_order())
    await stream.__anext__()
    assert sub.opened == [0, 1, 2]
    await stream.aclose()
    assert sorted(sub.closed) == [0, 1, 2] and sub.finished == []
    await asyncio.sleep(0.3)
    assert sub.opened == [0, 1, 2]  # nothing sent after the listener left


async def test_a_later_chunk_that_fails_mid_stream_fails_the_stream():
    marker = LOADED.failure_marker
    text = "Hello there, listener. " + f"Then this one {marker} fails. And no more."
    got = b""
    with pytest.raises(EngineError):
        async for piece in _pipeline(DirectSubmitter(SimulatedEngine(LOADED))).stream(_order(text)):
            got += piece.data
    assert got  # the failure came after audio: the HTTP layer aborts, never a clean end


async def test_a_later_chunk_whose_voice_the_model_lacks_is_sent_again_whole():
    voice = VoicePrompt.from_bytes(b"\x00\x01" * 2400)

    class _Forgetful(_Opened):
        """A model side that lost the voice audio after chunk 0 (another replica)."""

        async def stream(self, item):
            if item.chunk_index == 1:
                self.voices = type(self.voices)(64 * 1_048_576)
            async for piece in super().stream(item):
                yield piece

    sub = _Forgetful(SimulatedEngine(engine_config(speed=8.0)))
    order = SpeechOrder(
        "r", TEXT, AudioFormat.PCM, SynthesisRequest("", "en", voice=voice), streaming=True
    )
    pieces = [p async for p in _pipeline(sub).stream(order)]
    assert pieces[-1].final and pieces[-1].timings.chunks == 4
    assert sub.opened.count(1) == 2  # detached, missed, then whole


class _Pieces(DirectSubmitter):
    """Counts the pieces (renders) each chunk's stream sends, and what each chunk carried."""

    def __init__(self, engine, forget_lead: bool = False):
        super().__init__(engine)
        self.pieces: dict[int, int] = {}
        self.items: dict[int, SynthesisRequest] = {}
        self.forget_lead = forget_lead

    async def stream(self, item):
        if self.forget_lead:  # the planted bug: later chunks act as if heard at once
            item = dataclasses.replace(item, play_after=None)
        self.items[item.chunk_index] = item
        async for piece in super().stream(item):
            self.pieces[item.chunk_index] = self.pieces.get(item.chunk_index, 0) + 1
            yield piece


LONG = " ".join([TWO] * 3)


async def test_later_chunks_carry_when_the_listener_can_reach_them():
    sub = _Pieces(SimulatedEngine(engine_config(speed=3.0)))
    began = time.time()
    heard = await listen(_pipeline(sub), LONG, "r")
    items = sub.items
    assert items[0].play_after is None and len(items) >= 4
    first_audio = began + heard.arrivals[0][0]
    for index in range(1, len(items)):
        # No earlier than the first audio plus chunk 0's first piece; never later than
        # the listener could really need it (first audio plus every chunk before it).
        before_s = sum(a for _, a in heard.arrivals[: sum(sub.pieces[i] for i in range(index))])
        assert first_audio - 0.2 < items[index].play_after <= first_audio + before_s + 0.2


async def test_later_chunks_render_to_the_listeners_buffer_not_as_if_heard_at_once():
    # T3 at 1.1x real time (64 streams on an H200): later chunks arrive with the chunks
    # before them still playing, so each needs fewer renders than a fresh stream.
    ours = _Pieces(SimulatedEngine(LOADED))
    heard = await listen(_pipeline(ours), LONG, "r")
    planted = _Pieces(SimulatedEngine(LOADED), forget_lead=True)
    planted_heard = await listen(_pipeline(planted), LONG, "r")
    later = sum(n for i, n in ours.pieces.items() if i)
    planted_later = sum(n for i, n in planted.pieces.items() if i)
    assert ours.pieces[0] == planted.pieces[0]
    assert later <= 0.7 * planted_later, (ours.pieces, planted.pieces)
    # ... and the listener hears no more silence for it.
    assert heard.stall_s < 0.25 and planted_heard.stall_s < 0.25
