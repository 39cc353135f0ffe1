"""Where an item's speech ends: upstream main's rule, the same in both engines.

Upstream main (resemble-ai/chatterbox#516) removed 0.1.7's alignment analyzer from the
multilingual model and drops the last speech token's audio instead (~40 ms of noise
T3 emits just before stop-of-speech). Both engines, whole and streamed, end items so;
the English model keeps every token's audio, as upstream's `tts.py` does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from chatterbox_serve.engines.base import SynthesisResult
from chatterbox_serve.engines.torch_engine import SAMPLES_PER_TOKEN, TorchEngine, end_of_speech

pytest.importorskip("vllm", reason="the vLLM engine builds vLLM SamplingParams")

from chatterbox_serve.engines.vllm.engine import VLLMEngine  # noqa: E402
from tests.unit.test_vllm_engine import Factory, _request, _script, _settings  # noqa: E402


def test_the_multilingual_model_drops_the_last_tokens_audio() -> None:
    assert end_of_speech(10 * SAMPLES_PER_TOKEN, 10, multilingual=True) == 9 * SAMPLES_PER_TOKEN
    assert end_of_speech(10 * SAMPLES_PER_TOKEN, 10, multilingual=False) == 10 * SAMPLES_PER_TOKEN
    assert end_of_speech(SAMPLES_PER_TOKEN, 1, multilingual=True) == SAMPLES_PER_TOKEN
    assert end_of_speech(100, 10, multilingual=True) == 100  # never longer than rendered


@pytest.fixture(scope="module")
def multilingual_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tools.write_checkpoint import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("tiny-mtl"), multilingual=True, tiny=True)


@pytest.mark.timeout(900)  # two engines with S3Gen on a shared CPU
def test_both_engines_end_multilingual_speech_where_upstream_main_does(
    multilingual_checkpoint: Path,
) -> None:
    settings = {"use_multilingual_model": True, "stream_first_tokens": 6}
    factory = Factory(script_for=_script, step_s=0.03)
    engine = VLLMEngine(_settings(multilingual_checkpoint, **settings), llm_factory=factory)
    request = _request("Une phrase assez longue.", language="fr", cfg_weight=2.0, seed=11)

    async def streamed() -> list[SynthesisResult]:
        return [piece async for piece in engine.synthesize_stream(request)]

    asyncio.run(engine.start())
    try:
        (whole,) = asyncio.run(engine.synthesize([request]))
        pieces = asyncio.run(streamed())
    finally:
        asyncio.run(engine.shutdown())
    assert isinstance(whole, SynthesisResult) and whole.output_tokens == 23  # _script
    assert len(whole.audio) == SAMPLES_PER_TOKEN * (whole.output_tokens - 1)
    assert len(pieces) >= 2 and pieces[-1].output_tokens == 23
    assert np.concatenate([p.audio for p in pieces]).shape == whole.audio.shape

    torch_engine = TorchEngine(_settings(multilingual_checkpoint, **settings))
    asyncio.run(torch_engine.start())
    try:
        (result,) = asyncio.run(torch_engine.synthesize([request]))
    finally:
        asyncio.run(torch_engine.shutdown())
    assert isinstance(result, SynthesisResult)
    assert len(result.audio) == SAMPLES_PER_TOKEN * (result.output_tokens - 1)
