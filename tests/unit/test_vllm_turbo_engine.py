"""`engine: vllm` for Turbo on the tiny Turbo checkpoint, with a double of vLLM's `AsyncLLM`.

Everything but vLLM is real: Turbo's tokenizer, the reference T3's prefill rows (the
prompt vLLM receives: one sequence, no CFG), the served sampling values, upstream's
silence tokens and the meanflow S3Gen in 2 steps on the CPU, whole and streamed. What
`ChatterboxTurboT3` does inside vLLM is tests/unit/test_vllm_turbo.py's and the GPU
proof's (tools/gpu/turbo_proof.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chatterbox_serve.config import EngineConfig, Settings
from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult
from chatterbox_serve.engines.vllm.engine import VLLMEngine
from chatterbox_serve.families import ModelFamily
from chatterbox_serve.generation import family_defaults
from tests.unit.asyncllm_double import FakeAsyncLLM

pytest.importorskip("vllm", reason="the engine builds vLLM SamplingParams")
# Writing and loading the full-size meanflow S3Gen is most of the module's time.
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.timeout(900)]

SAMPLES_PER_TOKEN = 960
START, STOP = 6561, 6562
SPOKEN = 12  # tokens the double decodes before the stop token
SILENCE = 3  # upstream appends three silence tokens before S3Gen


@pytest.fixture(scope="module")
def turbo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tools.write_checkpoint import write_turbo_checkpoint

    return write_turbo_checkpoint(tmp_path_factory.mktemp("turbo"), tiny=True, seed=3)


def _script(prompt: dict[str, Any], params: Any) -> list[int]:
    rows = prompt["multi_modal_data"]["image"]["t3_prefix"]
    if len(prompt["prompt_token_ids"]) != rows.shape[0] or set(prompt["prompt_token_ids"]) != {
        START
    }:
        raise ValueError("the prompt must open with one start-of-speech id per prefix row")
    return [100 + i for i in range(SPOKEN)] + [STOP] + [7] * 1000


def _request(text: str, seed: int) -> SynthesisRequest:
    """A request as the pipeline makes it for Turbo: the family's defaults, seeded."""
    generation = dataclasses.replace(family_defaults(ModelFamily.TURBO), seed=seed)
    return SynthesisRequest(text=text, language="en", generation=generation)


class Factory:
    def __init__(self, **kw: Any) -> None:
        self.kw = kw
        self.llm: FakeAsyncLLM | None = None

    def __call__(self, settings: Settings, model_dir: Path) -> FakeAsyncLLM:
        config = (model_dir / "config.json").read_text()
        assert '"ChatterboxTurboT3"' in config
        self.llm = FakeAsyncLLM(max_num_seqs=settings.engine.max_batch_size, **self.kw)
        return self.llm


@pytest.fixture(scope="module")
def started(turbo_dir: Path) -> Any:
    settings = Settings(
        engine=EngineConfig(
            models=(ModelFamily.TURBO,),
            turbo_model_dir=str(turbo_dir),
            device="cpu",
            max_new_tokens=40,
            max_model_len=600,
            stream_first_tokens=4,
        )
    )
    engine = VLLMEngine.from_settings(settings)
    factory = Factory(script_for=_script, step_s=0.02)
    engine._llm_factory = factory
    asyncio.run(engine.start())
    yield engine, factory
    asyncio.run(engine.shutdown())


def test_turbo_items_are_one_sequence_each_with_turbos_sampling(started: Any) -> None:
    from chatterbox_serve.engines.vllm.turbo_engine import TurboVLLMEngine

    engine, factory = started
    assert type(engine) is TurboVLLMEngine
    before = len(factory.llm.prompts)
    request = _request("Well [laugh] hello there.", seed=5)
    (result,) = asyncio.run(engine.synthesize([request]))
    assert isinstance(result, SynthesisResult), result
    (prompt, params) = factory.llm.prompts[before]
    t3 = engine._live().t3
    ids = engine._live().tokenizer.encode(request.text, "en")
    rows = prompt["multi_modal_data"]["image"]["t3_prefix"]
    # Speaker, 375 prompt speech tokens, the text, one start-of-speech; one branch.
    assert rows.shape == (1 + 375 + len(ids) + 1, t3.config.hidden_size)
    assert float(prompt["multi_modal_data"]["image"]["t3_cfg_weight"][0]) == 0.0
    chain = (params.temperature, params.top_k, params.top_p, params.repetition_penalty)
    assert chain == (0.8, 1000, 0.95, 1.2) and params.min_p == 0.0 and params.seed == 5
    assert params.stop_token_ids == [STOP]
    assert result.output_tokens == SPOKEN
    assert len(result.audio) == SAMPLES_PER_TOKEN * (SPOKEN + SILENCE)
    assert engine.info()["diffusion_steps"] == 2


def test_a_streamed_turbo_item_adds_up_to_the_whole(started: Any) -> None:
    engine, _ = started
    request = _request("A longer line of speech for the stream.", seed=9)

    async def go() -> list[SynthesisResult]:
        return [piece async for piece in engine.synthesize_stream(request)]

    pieces = asyncio.run(go())
    (whole,) = asyncio.run(engine.synthesize([request]))
    assert isinstance(whole, SynthesisResult)
    assert pieces[0].partial and pieces[0].audio.size > 0 and not pieces[-1].partial
    joined = np.concatenate([p.audio for p in pieces])
    assert joined.shape == whole.audio.shape == (SAMPLES_PER_TOKEN * (SPOKEN + SILENCE),)
    assert np.abs(joined).max() > 0


def test_stream_noise_at_a_frame_depends_on_the_seed_alone() -> None:
    import types

    import torch

    from chatterbox_serve.model.checkpoint import ensure_torchaudio

    ensure_torchaudio()  # S3Gen's modules import torchaudio, which this machine may lack
    from chatterbox_serve.model.turbo.s3gen import stable_noise

    def noise(frames: list[int], seeds: list[int]) -> torch.Tensor:
        inputs = types.SimpleNamespace(mu=torch.ones(len(frames), 80, 700), mel_lens=frames)
        return stable_noise(inputs, seeds)  # type: ignore[arg-type]

    short, grown = noise([300, 650], [4, 4]), noise([650], [4])
    # A stream's prefix grows; the frames it shares keep their noise, past them zeros.
    assert torch.equal(short[0, :, :300], grown[0, :, :300])
    assert torch.equal(short[1], grown[0]) and float(short[0, :, 300:].abs().max()) == 0
    assert not torch.equal(noise([300], [5])[0, :, :300], short[0, :, :300])
