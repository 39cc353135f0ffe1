"""The vLLM engine adapter against doubles of vLLM, torch and chatterbox-vllm."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from chatterbox_serve.config import EngineConfig, Settings
from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult, VoicePrompt
from chatterbox_serve.engines.vllm.engine import VLLMEngine
from chatterbox_serve.engines.vllm.loading import LoadedModel
from chatterbox_serve.errors import EngineError, InvalidRequestError
from chatterbox_serve.model.s3gen.runner import SequentialS3GenRunner
from tests.conftest import SHARED
from tests.unit.vllm_doubles import (
    COND_ROWS,
    DIM,
    SPEECH_TOKEN_OFFSET,
    FakeChatterboxTTS,
    FakeLLM,
    FakeTorch,
    SamplingParams,
)

VOICE_A = VoicePrompt.from_bytes((SHARED / "data/voices/chatterbox-sample-01.mp3").read_bytes())
VOICE_B = VoicePrompt.from_bytes((SHARED / "data/voices/chatterbox-sample-02.mp3").read_bytes())


def _engine(
    tmp_path: Path, tts: FakeChatterboxTTS | None = None, **engine: Any
) -> tuple[VLLMEngine, FakeChatterboxTTS]:
    tts = tts or FakeChatterboxTTS()
    model_dir = tmp_path / "t3-model"
    model_dir.mkdir(exist_ok=True)
    loaded = LoadedModel(
        tts=tts,
        sampling_params=SamplingParams,
        torch=FakeTorch(),
        speech_token_offset=SPEECH_TOKEN_OFFSET,
        checkpoint_dir=tmp_path,
        model_dir=model_dir,
    )
    runner = engine.pop("runner", SequentialS3GenRunner)
    settings = Settings(engine=EngineConfig(**engine))
    return VLLMEngine(settings, loader=lambda s: loaded, s3gen_runner=runner), tts


def _level(voice: VoicePrompt | None) -> float:
    if voice is None:
        return 0.25
    from chatterbox_serve.engines.vllm.conditionals import decode_reference

    samples, _ = decode_reference(voice.audio)
    buf = io.BytesIO()
    sf.write(buf, samples, 24_000, format="WAV", subtype="FLOAT")
    wav, _ = sf.read(io.BytesIO(buf.getvalue()), dtype="float32")
    return round(float(np.mean(np.abs(wav))), 6)


async def test_one_t3_call_carries_every_items_own_settings(tmp_path: Path) -> None:
    engine, tts = _engine(tmp_path)
    await engine.start()
    items = [
        SynthesisRequest(text="Hello there.", language="en", seed=1),
        SynthesisRequest(
            text="Bonjour à tous.",
            language="fr",
            voice=VOICE_A,
            exaggeration=1.0,
            temperature=0.3,
            top_p=0.9,
            min_p=0.1,
            repetition_penalty=1.3,
            seed=7,
        ),
        SynthesisRequest(text="Guten Tag.", language="de-DE", voice=VOICE_B, exaggeration=0.25),
    ]
    results = await engine.synthesize(items)

    [(prompts, params)] = tts.t3.calls
    tokenizer = engine._tokenizer
    assert tokenizer is not None
    start, stop = tokenizer.start_id, tokenizer.stop_id
    weight = tts.t3_cond_enc.emotion_adv_fc.weight.data[:, 0]
    for item, prompt, sp, result in zip(items, prompts, params, results, strict=True):
        ids = prompt["prompt_token_ids"]
        lang = item.language[:2]
        assert ids[:2] == [start, tokenizer.tokenizer.token_to_id(f"[{lang}]")]
        assert ids[-1] == stop and ids == tokenizer.encode(item.text, item.language)
        [cond] = prompt["multi_modal_data"]["conditionals"]
        assert cond.shape == (COND_ROWS, DIM)
        np.testing.assert_allclose(cond.data[:-1], _level(item.voice), rtol=1e-6)
        np.testing.assert_allclose(cond.data[-1], item.exaggeration * weight)
        assert (sp.temperature, sp.top_p, sp.min_p) == (item.temperature, item.top_p, item.min_p)
        assert (sp.repetition_penalty, sp.seed) == (item.repetition_penalty, item.seed)
        assert sp.stop_token_ids == [6562 + SPEECH_TOKEN_OFFSET]
        assert sp.max_tokens == 1000 - len(ids) - 35
        assert isinstance(result, SynthesisResult)
        assert result.audio.dtype == np.float32 and len(result.audio) == 40 * 960
        np.testing.assert_allclose(result.audio, _level(item.voice), rtol=1e-6)
        assert (result.input_tokens, result.output_tokens, result.batch_size) == (len(ids), 40, 3)
    # S3Gen got speech tokens with the offset, start and stop removed.
    assert all(len(toks) == 40 and max(toks) < 6561 for toks, _, _ in tts.s3gen.calls)
    assert [steps for _, _, steps in tts.s3gen.calls] == [10, 10, 10]


async def test_a_bad_language_fails_only_its_item(tmp_path: Path) -> None:
    engine, tts = _engine(tmp_path)
    await engine.start()
    results = await engine.synthesize(
        [
            SynthesisRequest(text="One.", language="en"),
            SynthesisRequest(text="Two.", language="xx"),
            SynthesisRequest(text="Three.", language="es"),
        ]
    )
    assert isinstance(results[1], InvalidRequestError) and results[1].param == "language"
    assert "xx" in results[1].message
    assert all(isinstance(r, SynthesisResult) for r in (results[0], results[2]))
    assert len(tts.t3.calls[0][0]) == 2
    [only] = await engine.synthesize([SynthesisRequest(text="Four.", language="tlh")])
    assert isinstance(only, InvalidRequestError) and len(tts.t3.calls) == 1


async def test_english_model_has_no_language_tag_and_only_english(tmp_path: Path) -> None:
    engine, tts = _engine(tmp_path, use_multilingual_model=False)
    await engine.start()
    results = await engine.synthesize(
        [SynthesisRequest(text="Hi.", language="en"), SynthesisRequest(text="Hola.", language="es")]
    )
    ids = tts.t3.calls[0][0][0]["prompt_token_ids"]
    tokenizer = engine._tokenizer
    assert tokenizer is not None and tokenizer.tokenizer.get_vocab_size() == 704
    assert [tokenizer.tokenizer.id_to_token(i) for i in ids] == ["[START]", "H", "i", ".", "[STOP]"]
    assert isinstance(results[1], InvalidRequestError)
    assert engine.info()["model"] == "english"


async def test_a_prompt_vllm_rejects_fails_only_its_item(tmp_path: Path) -> None:
    llm = FakeLLM(fail_if=lambda p: len(p["prompt_token_ids"]) > 30)
    engine, tts = _engine(tmp_path, FakeChatterboxTTS(llm))
    await engine.start()
    texts = ["Short one.", "This sentence is long enough for the fake vLLM to reject it.", "Ok."]
    results = await engine.synthesize([SynthesisRequest(text=t, language="en") for t in texts])
    assert [len(prompts) for prompts, _ in llm.calls] == [3, 1, 1, 1]
    assert isinstance(results[1], EngineError) and "prompt rejected" in results[1].message
    assert isinstance(results[0], SynthesisResult) and isinstance(results[2], SynthesisResult)
    await engine.check_health()


class EngineDeadError(Exception):
    """Same name as vllm.v1.engine.exceptions.EngineDeadError."""


@pytest.mark.parametrize(
    "setup",
    [
        lambda llm: setattr(llm, "raise_exc", EngineDeadError("core died")),
        lambda llm: setattr(llm, "raise_exc", RuntimeError("CUDA error: illegal memory access")),
        lambda llm: (
            setattr(llm, "raise_exc", ValueError("x")),
            llm.llm_engine.__setattr__("unfinished", True),
        ),
        lambda llm: (
            setattr(llm, "raise_exc", ValueError("x")),
            llm.llm_engine.__setattr__("broken", True),
        ),
    ],
    ids=["engine-dead", "cuda-error", "stranded-requests", "engine-unreachable"],
)
async def test_an_error_that_breaks_vllm_kills_the_engine(tmp_path: Path, setup: Any) -> None:
    llm = FakeLLM()
    setup(llm)
    engine, _ = _engine(tmp_path, FakeChatterboxTTS(llm))
    await engine.start()
    with pytest.raises(EngineError):
        await engine.synthesize([SynthesisRequest(text="a", language="en")] * 2)
    with pytest.raises(EngineError, match="dead"):
        await engine.check_health()
    with pytest.raises(EngineError, match="dead"):
        await engine.synthesize([SynthesisRequest(text="b", language="en")])
    assert engine.info()["alive"] is False


async def test_s3gen_failure_for_one_voice_fails_only_that_item(tmp_path: Path) -> None:
    engine, tts = _engine(tmp_path)
    await engine.start()
    tts.s3gen.fail_voice = _level(VOICE_A)
    voices = [None, VOICE_A, VOICE_B]
    results = await engine.synthesize(
        [SynthesisRequest(text="Hi.", language="en", voice=v) for v in voices]
    )
    assert isinstance(results[1], EngineError) and "S3Gen" in results[1].message
    assert isinstance(results[0], SynthesisResult) and isinstance(results[2], SynthesisResult)


async def test_a_cuda_error_in_s3gen_kills_the_engine(tmp_path: Path) -> None:
    class Broken:
        def __init__(self, s3gen: Any) -> None:
            pass

        def run(self, tokens: Sequence[Any], refs: Sequence[Any], n: int) -> list[Any]:
            raise RuntimeError("CUDA error: device-side assert triggered")

    engine, _ = _engine(tmp_path, runner=Broken)
    await engine.start()
    with pytest.raises(EngineError, match="dead"):
        await engine.synthesize([SynthesisRequest(text="Hi.", language="en")])


async def test_a_batched_runner_gets_all_items_in_one_call(tmp_path: Path) -> None:
    class Recording:
        def __init__(self, s3gen: Any) -> None:
            self.calls: list[tuple[int, list[float], int]] = []

        def run(self, tokens: Sequence[Any], refs: Sequence[Any], n: int) -> list[Any]:
            self.calls.append((len(tokens), [r["level"] for r in refs], n))
            if len(tokens) == 2:
                return []  # a broken runner: wrong count, so the engine goes item by item
            return [t.float() for t in tokens]

    engine, _ = _engine(tmp_path, runner=Recording, diffusion_steps=4)
    await engine.start()
    results = await engine.synthesize(
        [SynthesisRequest(text="a", language="en", voice=v) for v in (VOICE_A, None, VOICE_B)]
    )
    runner = engine._runner
    assert isinstance(runner, Recording) and runner.calls[0][0] == 3
    assert runner.calls[0][1] == [_level(VOICE_A), 0.25, _level(VOICE_B)]
    assert runner.calls[0][2] == 4
    assert all(isinstance(r, SynthesisResult) for r in results)
    assert engine.info()["s3gen_runner"] == "Recording"
    results = await engine.synthesize([SynthesisRequest(text="a", language="en")] * 2)
    assert [size for size, _, _ in runner.calls] == [3, 2, 1, 1]
    assert all(isinstance(r, SynthesisResult) for r in results)


async def test_voice_conditionals_are_cached_by_content_hash(tmp_path: Path) -> None:
    engine, tts = _engine(tmp_path, conditionals_cache_size=2)
    await engine.start()
    same_audio = VoicePrompt.from_bytes(VOICE_A.audio)
    for voice in (VOICE_A, same_audio, None, VOICE_B, VOICE_A):
        await engine.synthesize([SynthesisRequest(text="Hi.", language="en", voice=voice)])
    # A, A again (hit), builtin, B (evicts A), A (miss again).
    assert engine.info()["conditionals_cache"] == {
        "hits": 1,
        "misses": 4,
        "size": 2,
        "capacity": 2,
    }
    assert len(tts.conditioned) == 4 and tts.conditioned[1] is None
    assert tts.get_audio_conditionals.cache_info().currsize == 0  # its path cache is unused
    assert not any(Path(p).exists() for p in tts.conditioned if p is not None)


async def test_unreadable_or_empty_voice_audio_fails_only_its_item(tmp_path: Path) -> None:
    engine, _ = _engine(tmp_path)
    await engine.start()
    empty = io.BytesIO()
    sf.write(empty, np.zeros(0, dtype=np.float32), 24_000, format="WAV")
    voices = [VoicePrompt.from_bytes(b"not audio"), VoicePrompt.from_bytes(empty.getvalue()), None]
    results = await engine.synthesize(
        [SynthesisRequest(text="Hi.", language="en", voice=v) for v in voices]
    )
    assert isinstance(results[0], InvalidRequestError) and results[0].param == "voice"
    assert isinstance(results[1], InvalidRequestError) and "empty" in results[1].message
    assert isinstance(results[2], SynthesisResult)


async def test_text_too_long_for_max_model_len_fails_that_item(tmp_path: Path) -> None:
    engine, _ = _engine(tmp_path, max_model_len=64)
    await engine.start()
    results = await engine.synthesize(
        [
            SynthesisRequest(text="word " * 40, language="en"),
            SynthesisRequest(text="Hi.", language="en"),
        ]
    )
    assert (
        isinstance(results[0], InvalidRequestError)
        and "VLLM_MAX_MODEL_LEN=64" in results[0].message
    )
    assert isinstance(results[1], SynthesisResult)


async def test_no_speech_tokens_and_unexpected_errors_fail_their_items(tmp_path: Path) -> None:
    class Fragile(FakeChatterboxTTS):
        def update_exaggeration(self, cond_emb: Any, exaggeration: float) -> Any:
            if exaggeration > 1.5:
                raise RuntimeError("boom")
            return super().update_exaggeration(cond_emb, exaggeration)

    engine, tts = _engine(tmp_path, Fragile(FakeLLM(tokens_per_prompt=0)))
    await engine.start()
    results = await engine.synthesize(
        [
            SynthesisRequest(text="Hi.", language="en", exaggeration=2.0),
            SynthesisRequest(text="Hi.", language="en"),
        ]
    )
    assert isinstance(results[0], EngineError) and "boom" in results[0].message
    assert isinstance(results[1], EngineError) and "no speech tokens" in results[1].message


async def test_lifecycle_and_health(tmp_path: Path) -> None:
    engine, tts = _engine(tmp_path)
    assert engine.needs_gpu and engine.sample_rate == 24_000
    with pytest.raises(EngineError, match="not started"):
        await engine.check_health()
    await engine.start()
    await engine.check_health()
    info = engine.info()
    assert info["engine"] == "vllm" and info["started"] and info["alive"]
    assert info["model"] == "multilingual" and info["s3gen_runner"] == "SequentialS3GenRunner"
    await engine.shutdown()
    assert tts.shut_down and not (tmp_path / "t3-model").exists()
    with pytest.raises(EngineError, match="shut down"):
        await engine.check_health()
    await engine.shutdown()  # idempotent


async def test_a_failed_start_releases_the_model(tmp_path: Path) -> None:
    def broken_runner(s3gen: Any) -> Any:
        raise RuntimeError("no runner")

    engine, tts = _engine(tmp_path, runner=broken_runner)
    with pytest.raises(RuntimeError, match="no runner"):
        await engine.start()
    assert tts.shut_down


async def test_engine_uses_the_batched_s3gen_runner_by_default(tmp_path: Path) -> None:
    engine, _ = _engine(tmp_path, runner=None)
    await engine.start()
    try:
        assert engine.info()["s3gen_runner"] == "BatchedS3GenRunner"
    finally:
        await engine.shutdown()
