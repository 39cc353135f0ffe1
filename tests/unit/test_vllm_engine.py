"""`engine: vllm` on a tiny random checkpoint, with a double of vLLM 0.26's `AsyncLLM`.

Everything but vLLM is real: the tokenizer, the reference T3's conditioning and
prefill rows (the prompt vLLM receives), and S3Gen on the CPU. The double decodes
scripted tokens with vLLM's continuous batching and failure modes
(`asyncllm_double.py`); what our model does inside vLLM is proven on a GPU
(`tools/gpu/t3_vllm_proof.py`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from chatterbox_serve.config import EngineConfig, Settings
from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult, VoicePrompt
from chatterbox_serve.engines.vllm.engine import ForcedLength, VLLMEngine
from chatterbox_serve.errors import EngineError, InvalidRequestError
from tests.conftest import synthesis_request
from tests.unit.asyncllm_double import FakeAsyncLLM

pytest.importorskip("vllm", reason="the engine builds vLLM SamplingParams")

SAMPLES_PER_TOKEN = 960
START, STOP = 6561, 6562


def _settings(model_dir: Path, **engine: object) -> Settings:
    values: dict[str, object] = {
        "model_dir": str(model_dir),
        "use_multilingual_model": False,
        "device": "cpu",
        "diffusion_steps": 2,
        "max_new_tokens": 40,
        "max_model_len": 400,
        **engine,
    }
    return Settings(engine=EngineConfig(**values))  # type: ignore[arg-type]


def _script(prompt: dict[str, Any], params: Any) -> list[int]:
    """Speech tokens then stop: one token per 0.1 of CFG weight plus the text length.

    Validates the prompt the way our vLLM processor does (`T3PrefixProcessor.apply`).
    """
    data = prompt["multi_modal_data"]["image"]
    rows = data["t3_prefix"]
    if rows.ndim != 2 or len(prompt["prompt_token_ids"]) != rows.shape[0]:
        raise ValueError("the prompt must open with one start-of-speech id per prefix row")
    if set(prompt["prompt_token_ids"]) != {START}:
        raise ValueError("prompt ids must be start-of-speech ids")
    weight = float(data["t3_cfg_weight"][0])
    count = 3 + round(weight * 10)
    return [100 + i for i in range(count)] + [STOP] + [7] * 1000


class Factory:
    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.llm: FakeAsyncLLM | None = None

    def __call__(self, settings: Settings, model_dir: Path) -> FakeAsyncLLM:
        assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").exists()
        self.llm = FakeAsyncLLM(max_num_seqs=settings.engine.max_batch_size, **self.kw)
        return self.llm


def _engine(tiny_checkpoint: Path, **kw: Any) -> tuple[VLLMEngine, Factory]:
    factory = Factory(script_for=kw.pop("script_for", _script), **kw.pop("llm", {}))
    engine = VLLMEngine(
        _settings(tiny_checkpoint, **kw.pop("settings", {})), llm_factory=factory, **kw
    )
    return engine, factory


def _request(text: str, **kw: Any) -> SynthesisRequest:
    return synthesis_request(text, **kw)


@pytest.fixture(scope="module")
def started(tiny_checkpoint: Path) -> tuple[VLLMEngine, Factory]:
    engine, factory = _engine(tiny_checkpoint)
    asyncio.run(engine.start())
    return engine, factory


def test_each_item_is_its_own_request_with_its_own_prompt_and_sampling(
    started: tuple[VLLMEngine, Factory],
) -> None:
    engine, factory = started
    assert factory.llm is not None
    before = len(factory.llm.prompts)
    requests = [
        _request("Hello there.", cfg_weight=0.0, temperature=0.7, seed=1, exaggeration=0.3),
        _request(
            "A longer sentence, spoken more boldly.",
            cfg_weight=1.0,
            top_p=0.9,
            min_p=0.1,
            repetition_penalty=1.5,
            seed=2,
            exaggeration=1.5,
        ),
    ]
    results = asyncio.run(engine.synthesize(requests))
    sent = factory.llm.prompts[before:]
    assert len(sent) == 2
    t3 = engine._live().t3
    for request, result, (prompt, params) in zip(requests, results, sent, strict=True):
        assert isinstance(result, SynthesisResult), result
        # Tokens the script emits before stop: S3Gen makes 960 samples of each.
        expected = 3 + round((request.generation.cfg_weight or 0) * 10)
        assert result.output_tokens == expected
        assert len(result.audio) == SAMPLES_PER_TOKEN * expected
        rows = prompt["multi_modal_data"]["image"]["t3_prefix"]
        ids = engine._live().tokenizer.encode(request.text, "en")
        # Rows: 34 conditioning rows, the text, start-of-speech twice, for both branches.
        assert rows.shape == (34 + len(ids) + 2, 2 * t3.config.backbone.hidden_size)
        half = t3.config.backbone.hidden_size
        text = slice(34, 34 + len(ids))
        # The unconditional half has its text embeddings zeroed (upstream's CFG), so
        # only the text rows differ between the halves.
        assert torch.equal(rows[:34, :half], rows[:34, half:])
        assert not torch.equal(rows[text, :half], rows[text, half:])
        assert (
            float(prompt["multi_modal_data"]["image"]["t3_cfg_weight"][0])
            == request.generation.cfg_weight
        )
        assert (
            params.seed == request.generation.seed
            and params.temperature == request.generation.temperature
        )
        assert params.top_p == request.generation.top_p and params.min_p == request.generation.min_p
        assert params.repetition_penalty == request.generation.repetition_penalty
        assert params.stop_token_ids == [STOP] and not params.ignore_eos
        assert params.max_tokens == 40


def test_exaggeration_changes_only_the_conditioning_rows(
    started: tuple[VLLMEngine, Factory],
) -> None:
    # (A cloned voice needs torchaudio, which has no build for CI's torch.)
    engine, factory = started
    assert factory.llm is not None
    before = len(factory.llm.prompts)
    results = asyncio.run(
        engine.synthesize(
            [_request("Same text.", exaggeration=0.5), _request("Same text.", exaggeration=1.5)]
        )
    )
    assert all(isinstance(r, SynthesisResult) for r in results), results
    rows = [p["multi_modal_data"]["image"]["t3_prefix"] for p, _ in factory.llm.prompts[before:]]
    assert rows[0].shape == rows[1].shape
    assert not torch.equal(rows[0][:34], rows[1][:34])  # the emotion row
    assert torch.equal(rows[0][34:], rows[1][34:])  # same text, same rows


def test_bad_items_fail_alone(started: tuple[VLLMEngine, Factory]) -> None:
    engine, _ = started
    results = asyncio.run(
        engine.synthesize(
            [
                _request("Fine."),
                _request("Bonjour.", language="xx"),
                _request("Cloned.", voice=VoicePrompt.from_bytes(b"not audio at all")),
                _request("Also fine.", cfg_weight=0.2),
            ]
        )
    )
    assert isinstance(results[0], SynthesisResult) and isinstance(results[3], SynthesisResult)
    assert isinstance(results[1], InvalidRequestError) and results[1].param == "language"
    assert isinstance(results[2], InvalidRequestError) and results[2].param == "voice"


def test_reaching_max_tokens_without_stop_fails_instead_of_cutting_speech(
    tiny_checkpoint: Path,
) -> None:
    engine, _ = _engine(tiny_checkpoint, script_for=lambda p, s: [5] * 1000)
    asyncio.run(engine.start())
    result = asyncio.run(engine.synthesize([_request("Never stops.")]))[0]
    assert isinstance(result, EngineError) and "max_tokens=40" in result.message


def test_text_that_leaves_no_room_in_max_model_len_is_refused(tiny_checkpoint: Path) -> None:
    engine, factory = _engine(tiny_checkpoint, settings={"max_model_len": 64})
    asyncio.run(engine.start())
    long_text = "word " * 60
    results = asyncio.run(engine.synthesize([_request(long_text), _request("Short.")]))
    assert (
        isinstance(results[0], InvalidRequestError) and "VLLM_MAX_MODEL_LEN" in results[0].message
    )
    assert isinstance(results[1], SynthesisResult)
    # The short item still fits: its budget shrinks to what the context has left.
    assert factory.llm is not None
    prompt, params = factory.llm.prompts[-1]
    assert len(prompt["prompt_token_ids"]) + params.max_tokens <= 64


def test_engine_death_fails_the_batch_and_health(tiny_checkpoint: Path) -> None:
    engine, _ = _engine(tiny_checkpoint, llm={"die_at_step": 2})
    asyncio.run(engine.start())
    with pytest.raises(EngineError, match="dead"):
        asyncio.run(engine.synthesize([_request("One."), _request("Two.")]))
    with pytest.raises(EngineError, match="dead"):
        asyncio.run(engine.check_health())


def test_a_cancelled_call_aborts_its_requests_inside_vllm(tiny_checkpoint: Path) -> None:
    engine, factory = _engine(
        tiny_checkpoint, script_for=lambda p, s: [5] * 100000, llm={"step_s": 0.01}
    )
    asyncio.run(engine.start())

    async def call_then_cancel() -> None:
        requests = [_request("Long.", max_new_tokens=300), _request("Longer.", max_new_tokens=300)]
        task = asyncio.create_task(engine.synthesize(requests))
        # The double advances one decode step per event-loop turn: poll turn by turn so
        # the call is cancelled while its items are still decoding.
        fake = factory.llm
        assert fake is not None
        for _ in range(20_000):
            await asyncio.sleep(0.002)
            if len(fake.running) == 2 or task.done():
                break
        assert len(fake.running) == 2, (task.done() and task.result(), fake.step_batches[-3:])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(call_then_cancel())
    assert factory.llm is not None
    assert len(factory.llm.aborted) == 2 and factory.llm.unfinished == 0


def test_forced_length_is_for_benchmarks(tiny_checkpoint: Path) -> None:
    engine, factory = _engine(
        tiny_checkpoint, forced_length=ForcedLength(12), script_for=lambda p, s: [STOP, *range(50)]
    )
    asyncio.run(engine.start())
    result = asyncio.run(engine.synthesize([_request("Bench.")]))[0]
    assert factory.llm is not None
    _, params = factory.llm.prompts[-1]
    assert params.ignore_eos and params.min_tokens == params.max_tokens == 12
    # The stop id it sampled is ignored and dropped: 11 speech tokens remain.
    assert isinstance(result, SynthesisResult) and result.output_tokens == 11


def test_shutdown_stops_vllm_and_removes_the_model_dir(tiny_checkpoint: Path) -> None:
    engine, factory = _engine(tiny_checkpoint)
    asyncio.run(engine.start())
    model_dir = engine._model_dir
    assert model_dir is not None and model_dir.is_dir()
    asyncio.run(engine.shutdown())
    assert not model_dir.exists()
    assert factory.llm is not None and factory.llm.errored
    with pytest.raises(EngineError):
        asyncio.run(engine.synthesize([_request("After.")]))


def test_info_reports_the_vllm_settings(started: tuple[VLLMEngine, Factory]) -> None:
    info = started[0].info()
    assert info["engine"] == "vllm" and info["max_batch_size"] == 10
    assert info["max_model_len"] == 400 and "exact CFG" in info["t3"]


def test_a_seeded_request_repeats_exactly_and_seeds_reach_s3gen(
    started: tuple[VLLMEngine, Factory],
) -> None:
    # The double returns the same tokens whatever the seed, so any difference in the
    # audio comes from S3Gen's vocoder noise: the seed must reach it.
    engine, _ = started
    same = [_request("Seeded speech.", seed=7), _request("Seeded speech.", seed=7)]
    other = [_request("Seeded speech.", seed=8)]
    a, b = asyncio.run(engine.synthesize(same))
    (c,) = asyncio.run(engine.synthesize(other))
    assert isinstance(a, SynthesisResult) and isinstance(b, SynthesisResult)
    assert isinstance(c, SynthesisResult)
    assert a.output_tokens == c.output_tokens
    assert np.array_equal(a.audio, b.audio)
    assert not np.array_equal(a.audio, c.audio)


def test_s3gen_starts_on_finished_items_while_t3_decodes_the_rest(tiny_checkpoint: Path) -> None:
    # An item goes to S3Gen the moment T3 stops it, not when the whole call
    # has left T3, so the GPU is not idle in one stage while the other runs. CFG weight
    # sets the scripted length: 3 tokens against 23.
    engine, factory = _engine(tiny_checkpoint, llm={"step_s": 0.05})

    async def go() -> list[Any]:
        await engine.start()
        try:
            return await engine.synthesize(
                [_request("Short one.", cfg_weight=0.0), _request("Long one.", cfg_weight=2.0)]
            )
        finally:
            await engine.shutdown()

    short, long = asyncio.run(go())
    assert isinstance(short, SynthesisResult) and isinstance(long, SynthesisResult)
    assert (short.output_tokens, long.output_tokens) == (3, 23)
    stage = engine.info()["s3gen_stage"]
    # The short item was rendered alone, before the long one had finished decoding.
    assert stage["passes"] == 2 and stage["items"] == 2


def _streamed(engine: VLLMEngine, request: SynthesisRequest, llm: Any) -> list[Any]:
    """Pieces of one streamed item, each with how many tokens vLLM had made by then."""

    async def go() -> list[Any]:
        pieces = []
        async for piece in engine.synthesize_stream(request):
            made = max((len(r.produced) for r in llm.running.values()), default=None)
            pieces.append((piece, made))
        return pieces

    return asyncio.run(go())


def test_a_streamed_item_plays_before_t3_is_done_and_adds_up_to_the_whole(
    tiny_checkpoint: Path,
) -> None:
    # First audio after CHATTERBOX_STREAM_FIRST_TOKENS tokens, while T3 goes on.
    engine, factory = _engine(
        tiny_checkpoint, llm={"step_s": 0.03}, settings={"stream_first_tokens": 6}
    )
    asyncio.run(engine.start())
    try:
        request = _request("A longer line of speech.", cfg_weight=2.0, seed=11)
        assert factory.llm is not None
        pieces = _streamed(engine, request, factory.llm)
        (whole,) = asyncio.run(engine.synthesize([request]))
    finally:
        asyncio.run(engine.shutdown())
    assert isinstance(whole, SynthesisResult) and whole.output_tokens == 23
    first, _ = pieces[0]
    assert first.partial and first.audio.size > 0
    # The first render took the tokens there were when T3 reached 6 (S3Gen on a CPU
    # may finish it after T3 is done; on a GPU it comes first): a small part of the item.
    assert first.audio.size < whole.audio.size / 3
    *partials, (last, _) = pieces
    assert len(partials) >= 2  # at 6 tokens, then while the buffer is under the margin
    assert all(p.partial for p, _ in partials) and not last.partial
    assert last.output_tokens == 23 and last.input_tokens == whole.input_tokens
    joined = np.concatenate([p.audio for p, _ in pieces])
    assert joined.shape == whole.audio.shape


def test_a_stream_that_fails_before_its_first_audio_raises_the_items_error(
    tiny_checkpoint: Path,
) -> None:
    engine, _ = _engine(tiny_checkpoint)
    asyncio.run(engine.start())
    try:
        with pytest.raises(InvalidRequestError):
            _streamed(engine, _request("Hello there.", language="xx"), None)
    finally:
        asyncio.run(engine.shutdown())


def test_a_listener_who_leaves_mid_stream_aborts_the_request_inside_vllm(
    tiny_checkpoint: Path,
) -> None:
    # A long item (no stop token within 300 tokens at 0.1 s a step): still decoding
    # when its first piece comes, however slow S3Gen is on this CPU.
    engine, factory = _engine(
        tiny_checkpoint,
        llm={"step_s": 0.1},
        script_for=lambda p, s: [100 + i % 50 for i in range(1000)],
        settings={"stream_first_tokens": 4, "max_new_tokens": 300},
    )

    async def go() -> None:
        await engine.start()
        try:
            stream = engine.synthesize_stream(_request("Leave early."))
            piece = await anext(aiter(stream))
            assert piece.partial
            await stream.aclose()  # type: ignore[attr-defined]
            await asyncio.sleep(0.1)
        finally:
            await engine.shutdown()

    asyncio.run(go())
    assert factory.llm is not None and len(factory.llm.aborted) == 1


def test_a_new_stream_waits_for_its_start_but_a_later_chunk_of_a_started_one_does_not(
    tiny_checkpoint: Path,
) -> None:
    """Stream admission: with one stream starting (no audio yet), a second request's first
    chunk waits; a later chunk of a request already streaming goes straight in."""
    engine, factory = _engine(
        tiny_checkpoint,
        llm={"step_s": 0.05},
        settings={"stream_first_tokens": 30, "stream_max_starting": 1},
    )

    async def first_piece(request: SynthesisRequest) -> float:
        began = time.monotonic()
        async for _ in engine.synthesize_stream(request):
            break
        return time.monotonic() - began

    async def go() -> tuple[float, float, dict[str, int]]:
        await engine.start()
        try:
            holder = asyncio.create_task(first_piece(_request("The first stream speaks.")))
            await asyncio.sleep(0.2)  # started, decoding, no audio yet
            new = asyncio.create_task(first_piece(_request("A second stream.", seed=3)))
            later = asyncio.create_task(
                first_piece(_request("Its later chunk.", seed=4, chunk_index=1))
            )
            await asyncio.sleep(0.2)
            seen = dict(engine.info()["streams"])
            return await new, await later, seen
        finally:
            await holder
            await engine.shutdown()

    new_s, later_s, seen = asyncio.run(go())
    assert seen["waiting"] == 1  # the second stream's first chunk, not the later chunk
    assert seen["live"] == 2
    assert later_s < new_s
