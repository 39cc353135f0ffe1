"""`engine: torch` on a tiny random checkpoint: real T3 and S3Gen on the CPU.

The weights are random, so the audio is noise; what a user notices still holds: each
item gets audio whose length follows its generated speech tokens (S3Gen makes 960
samples per token at 24 kHz), and one bad item fails alone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chatterbox_serve.config import EngineConfig, Settings
from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult, VoicePrompt
from chatterbox_serve.engines.torch_engine import TorchEngine, pick_device
from chatterbox_serve.errors import EngineError, InvalidRequestError, VoiceAudioMissingError
from tests.conftest import synthesis_request

SAMPLES_PER_TOKEN = 960


def _settings(model_dir: Path | str, **engine: object) -> Settings:
    values: dict[str, object] = {
        "model_dir": str(model_dir),
        "use_multilingual_model": False,
        "device": "cpu",
        "diffusion_steps": 2,
        "max_new_tokens": 40,
        **engine,
    }
    return Settings(engine=EngineConfig(**values))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path) -> TorchEngine:
    eng = TorchEngine(_settings(tiny_checkpoint))
    asyncio.run(eng.start())
    return eng


def _request(text: str, **kw: object) -> SynthesisRequest:
    return synthesis_request(text, **kw)


def test_audio_length_follows_generated_tokens(engine: TorchEngine) -> None:
    requests = [
        _request("Hello there.", max_new_tokens=6, seed=1),
        _request("A somewhat longer sentence to speak.", max_new_tokens=14, seed=2, cfg_weight=0.0),
    ]
    results = asyncio.run(engine.synthesize(requests))
    assert all(isinstance(r, SynthesisResult) for r in results)
    lengths = []
    for result, request in zip(results, requests, strict=True):
        assert isinstance(result, SynthesisResult)
        assert result.sample_rate == 24_000 and result.batch_size == 2
        assert 0 < result.output_tokens <= (request.max_new_tokens or 0)
        assert len(result.audio) == SAMPLES_PER_TOKEN * result.output_tokens
        lengths.append(len(result.audio))
    assert lengths[1] > lengths[0]


def test_one_bad_item_fails_alone(engine: TorchEngine) -> None:
    requests = [
        _request("Fine.", max_new_tokens=5, seed=3),
        _request("Bonjour.", language="xx"),
        _request("Cloned.", voice=VoicePrompt.from_bytes(b"not audio at all")),
        _request("Also fine.", max_new_tokens=4, seed=4),
    ]
    results = asyncio.run(engine.synthesize(requests))
    assert isinstance(results[0], SynthesisResult) and isinstance(results[3], SynthesisResult)
    assert isinstance(results[1], InvalidRequestError) and results[1].param == "language"
    assert isinstance(results[2], InvalidRequestError) and results[2].param == "voice"
    assert len(results[3].audio) == SAMPLES_PER_TOKEN * results[3].output_tokens


def test_a_batched_item_gets_the_tokens_it_gets_alone(engine: TorchEngine) -> None:
    item = _request("Same seed, same speech.", max_new_tokens=8, seed=9, temperature=1.0)
    other = _request("Another item entirely, with another length.", max_new_tokens=12, seed=5)
    alone = asyncio.run(engine.synthesize([item]))[0]
    batched = asyncio.run(engine.synthesize([other, item]))[1]
    assert isinstance(alone, SynthesisResult) and isinstance(batched, SynthesisResult)
    assert alone.output_tokens == batched.output_tokens
    assert alone.audio.shape == batched.audio.shape


def test_info_names_device_and_model(engine: TorchEngine) -> None:
    info = engine.info()
    assert info["engine"] == "torch" and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["model"] == "english" and info["t3_layers"] == 2 and info["alive"] is True


def test_missing_checkpoint_names_the_setting(tmp_path: Path) -> None:
    eng = TorchEngine(_settings(tmp_path / "nowhere"))
    with pytest.raises(EngineError, match="CHATTERBOX_MODEL_DIR"):
        asyncio.run(eng.start())
    (tmp_path / "partial").mkdir()
    eng = TorchEngine(_settings(tmp_path / "partial"))
    with pytest.raises(EngineError, match="t3_cfg.safetensors"):
        asyncio.run(eng.start())


def test_not_started_engine_refuses_work(tiny_checkpoint: Path) -> None:
    eng = TorchEngine(_settings(tiny_checkpoint))
    with pytest.raises(EngineError, match="not started"):
        asyncio.run(eng.synthesize([_request("x")]))


def test_device_auto_prefers_cuda_then_mps_then_cpu() -> None:
    import torch

    mps = torch.backends.mps.is_available()
    expected = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    assert pick_device("auto") == expected
    assert pick_device("cuda:1") == "cuda:1"


def test_voice_audio_is_decoded_within_the_upload_caps(engine: TorchEngine) -> None:
    from chatterbox_serve.model.voice import decode_reference
    from tests.voice_audio import encode, sample

    wav = decode_reference(encode(3.0, rate=44_100, channels=2))
    assert wav.dtype.name == "float32" and abs(len(wav) - 3 * 24_000) <= 480
    assert len(decode_reference(sample(0))) > 24_000
    too_long = VoicePrompt.from_bytes(encode(70.0, rate=8_000))
    (result,) = asyncio.run(engine.synthesize([_request("Too long a voice.", voice=too_long)]))
    assert isinstance(result, InvalidRequestError)
    assert result.param == "voice" and result.code == "audio_too_long"


def test_a_voice_sent_by_hash_alone_and_never_computed_here_is_asked_for(
    engine: TorchEngine,
) -> None:
    unseen = VoicePrompt.from_bytes(b"audio this engine was never sent").detach()
    results = asyncio.run(
        engine.synthesize(
            [
                _request("Never sent.", voice=unseen, max_new_tokens=4),
                _request("Built-in voice.", max_new_tokens=4, seed=2),
            ]
        )
    )
    assert isinstance(results[0], VoiceAudioMissingError)
    assert isinstance(results[1], SynthesisResult)


def test_the_pipeline_budget_stops_a_model_that_never_says_stop(tiny_checkpoint: Path) -> None:
    from chatterbox_serve.audio import AudioFormat
    from chatterbox_serve.config import ChunkingConfig
    from chatterbox_serve.speech import SpeechOrder, SpeechPipeline
    from tools.bench.direct import DirectSubmitter

    # Random weights rarely sample the stop token, so each chunk runs to its budget:
    # 300 tokens (12 s) from the engine's own limit, 125 (5 s) from the audio cap.
    settings = _settings(tiny_checkpoint, max_new_tokens=300).model_copy(
        update={"chunking": ChunkingConfig(max_audio_s_per_char=0.1)}
    )
    eng = TorchEngine(settings)
    asyncio.run(eng.start())
    job = SpeechOrder("rid", "Hello.", AudioFormat.WAV, synthesis_request("", seed=3))
    rendered = asyncio.run(SpeechPipeline(settings, DirectSubmitter(eng)).render(job))
    assert rendered.usage.output_tokens <= 125
    assert rendered.audio_s <= 5.0
