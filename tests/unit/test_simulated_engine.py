import asyncio
import time

import numpy as np
import pytest

from chatterbox_serve.config import SimulatedEngineConfig
from chatterbox_serve.engines.base import SynthesisResult, VoicePrompt
from chatterbox_serve.engines.simulated import SimulatedEngine
from chatterbox_serve.errors import EngineError
from tests.conftest import synthesis_request

FAST = SimulatedEngineConfig(base_s=0.0, per_item_s=0.0, per_char_s=0.0)


def _req(text="Hello there, general.", **kw):
    return synthesis_request(text, **kw)


async def test_output_is_deterministic_24khz_mono_float32_at_15_chars_per_second():
    engine = SimulatedEngine(FAST)
    text = "x" * 150
    a, b = await engine.synthesize([_req(text), _req(text)])
    assert isinstance(a, SynthesisResult) and isinstance(b, SynthesisResult)
    assert a.audio.dtype == np.float32 and a.audio.ndim == 1 and a.sample_rate == 24000
    assert np.array_equal(a.audio, b.audio)
    assert abs(a.duration_s - 10.0) < 0.1
    assert a.output_tokens == 250 and a.input_tokens == 150


async def test_output_depends_on_the_voice_audio_bytes_seed_and_language():
    engine = SimulatedEngine(FAST)
    v1, v2 = VoicePrompt.from_bytes(b"voice one"), VoicePrompt.from_bytes(b"voice two")
    outs = await engine.synthesize(
        [
            _req(voice=v1),
            _req(voice=v2),
            _req(voice=v1, seed=7),
            _req(voice=v1, language="fr"),
        ]
    )
    audios = [o.audio for o in outs]
    for i in range(len(audios)):
        for j in range(i + 1, len(audios)):
            assert not np.array_equal(audios[i], audios[j]), (i, j)


async def test_envelope_is_syllable_like_with_pauses_at_punctuation():
    (out,) = await SimulatedEngine(FAST).synthesize([_req("aaaa aaaa. . . . . aaaa aaaa")])
    frames = out.audio[: len(out.audio) // 480 * 480].reshape(-1, 480)
    energy = np.sqrt((frames**2).mean(axis=1))
    assert energy.max() > 0.05 and energy.min() < 0.01


async def test_one_failing_item_fails_only_itself():
    engine = SimulatedEngine(FAST)
    outs = await engine.synthesize(
        [_req("fine"), _req("bad <<simulate-engine-failure>>"), _req("fine too")]
    )
    assert isinstance(outs[0], SynthesisResult) and isinstance(outs[2], SynthesisResult)
    assert isinstance(outs[1], EngineError)


async def test_cost_model_makes_batching_pay_off_and_serialises_calls():
    cfg = SimulatedEngineConfig(base_s=0.2, per_item_s=0.01, per_char_s=0.0)
    engine = SimulatedEngine(cfg)
    items = [_req(f"item {i}") for i in range(8)]
    began = time.monotonic()
    await engine.synthesize(items)
    batched = time.monotonic() - began
    began = time.monotonic()
    await asyncio.gather(*(engine.synthesize([i]) for i in items[:4]))
    serial = time.monotonic() - began
    assert batched == pytest.approx(0.28, abs=0.08)
    assert serial >= 4 * 0.21  # one device: concurrent calls queue
    snap = engine.recorder.snapshot()
    assert snap["calls"] == 5 and snap["batch_sizes"] == [8, 1, 1, 1, 1]
    assert 0 < snap["busy_fraction"] <= 1


def test_cost_formula_matches_documentation():
    engine = SimulatedEngine()
    items = [_req("y" * 234)]
    assert engine.cost_s(items) == pytest.approx(0.35 + 0.01 + 0.00012 * 234)
    assert engine.cost_s(items) == pytest.approx(0.39, abs=0.01)  # published per-chunk cost


async def _streamed(engine, request):
    arrivals, pieces, began = [], [], time.monotonic()
    async for piece in engine.synthesize_stream(request):
        arrivals.append((time.monotonic() - began, piece.duration_s))
        pieces.append(piece)
    return arrivals, pieces


async def test_streamed_pieces_follow_the_vllm_render_rule_and_join_into_the_whole():
    from tools.gpu.t3_reference import stall_s  # the GPU proof's own measure

    # T3 at 1.1 times real time, as the GPU engine gives each of 64 streams: rendering
    # when the token count doubles left the listener gaps (0.6 s here); on the margin
    # of the vllm engine's render rule, none.
    config = SimulatedEngineConfig(
        base_s=0.0, per_item_s=0.0, per_char_s=1 / (15 * 1.1), streaming=True
    )
    engine = SimulatedEngine(config, stream_first_tokens=20, stream_margin_s=0.5)
    request = _req("Several seconds of streamed speech, rendered on the margin.")
    arrivals, pieces = await _streamed(engine, request)
    assert arrivals[0][1] == pytest.approx(20 / 25)  # the first render: 20 tokens
    assert all(p.partial for p in pieces[:-1]) and not pieces[-1].partial
    assert stall_s(arrivals) < 0.1
    (whole,) = await SimulatedEngine(FAST).synthesize([request])
    assert np.array_equal(np.concatenate([p.audio for p in pieces]), whole.audio)
    assert pieces[-1].output_tokens == whole.output_tokens


async def test_a_fast_stream_renders_rarely_once_its_buffer_is_full():
    config = SimulatedEngineConfig(
        base_s=0.0, per_item_s=0.0, per_char_s=1 / (15 * 10), streaming=True
    )
    engine = SimulatedEngine(config, stream_first_tokens=20, stream_margin_s=0.5)
    _, pieces = await _streamed(engine, _req("x" * 150))  # 10 s of audio in 1 s
    # Ten times real time: the buffer passes the margin after a few renders and the
    # rest arrives with the end.
    assert 2 <= len(pieces) <= 8
