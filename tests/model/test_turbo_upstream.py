"""Our Turbo gives upstream `ChatterboxTurboTTS`'s speech tokens and waveform.

Both load the same random-weight tiny Turbo checkpoint (tools/write_checkpoint.py
`--turbo --tiny`); upstream is built from its own classes and those files, never from
the hub. Sampling runs with upstream's defaults (temperature 0.8, top_k 1000, top_p
0.95, repetition penalty 1.2) and a seed: upstream draws from the global generator
after `torch.manual_seed(seed)`, ours from a generator seeded alike, so the tokens
must be equal, all of them. For S3Gen, upstream's global generator is seeded again
before its flow stage and its vocoder (a subclass of upstream's S3Gen, a test double
of third-party code), which is the contract of our seeded runner.

Waveforms are compared within `WAVE_TOLERANCE` (relative L2): our S3Gen runs the
batched path (both texts padded into one batch, the estimator's bias made once),
upstream its own, one item at a time.

Planted bugs, each a subclass of ours, must fail the comparison.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from chatterbox_serve.model.s3gen.batch import S3GenBatchPolicy
from chatterbox_serve.model.turbo import checkpoint
from chatterbox_serve.model.turbo.model import TurboT3
from chatterbox_serve.model.turbo.reference import TurboModel
from chatterbox_serve.model.turbo.sampling import TurboChain

# Measured on the CPU: 1e-7 and below (float rounding of the batched path).
WAVE_TOLERANCE = 1e-5
PLAIN = "Hello there, how are you doing today?"
TAGGED = "I can't believe it [laugh] well [sigh] that was something [clear throat] okay"
# Seeds under which the random-weight model stops after about 30 tokens.
PLAIN_SEED, TAGGED_SEED = 14, 15
# Writing and loading a full-size S3Gen three times (file, ours, upstream's) is most of
# the module's time.
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def turbo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tools.write_checkpoint import write_turbo_checkpoint

    return write_turbo_checkpoint(tmp_path_factory.mktemp("turbo"), tiny=True, seed=3)


@pytest.fixture(scope="module")
def ours(turbo_dir: Path) -> TurboModel:
    # One S3Gen batch whatever the lengths, so padding is part of what is compared.
    return TurboModel.load(turbo_dir, policy=S3GenBatchPolicy(max_length_ratio=float("inf")))


class _NoWatermark:
    """Stands in for Perth's watermarker (here without its own dependencies); the
    service applies its own watermark."""

    def apply_watermark(self, wav: Any, sample_rate: int) -> Any:
        return wav


def _reseeding_s3gen(base: type, seed: list[int]) -> Any:
    class ReseedingS3Gen(base):  # type: ignore[misc, valid-type]
        def flow_inference(self, *args: Any, **kwargs: Any) -> Any:
            torch.manual_seed(seed[0])
            return super().flow_inference(*args, **kwargs)

        def hift_inference(self, *args: Any, **kwargs: Any) -> Any:
            torch.manual_seed(seed[0])
            return super().hift_inference(*args, **kwargs)

    return ReseedingS3Gen(meanflow=True)


@pytest.fixture(scope="module")
def upstream(ours: TurboModel, turbo_dir: Path) -> Any:
    """Upstream's `ChatterboxTurboTTS` put together as its `from_local` does, tiny GPT-2."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from tools.gpu.turbo_reference import upstream_turbo_t3

    tts = checkpoint.upstream_module("chatterbox.tts_turbo")
    # Upstream's T3 with Turbo's hyperparameters, loaded and trimmed as `from_local` does.
    t3 = upstream_turbo_t3(ours.t3, turbo_dir)
    seed = [0]
    s3gen = _reseeding_s3gen(tts.S3Gen, seed)
    s3gen.load_state_dict(load_file(str(turbo_dir / checkpoint.S3GEN_FILE)), strict=True)
    ve = tts.VoiceEncoder()
    ve.load_state_dict(load_file(str(turbo_dir / "ve.safetensors")))
    tokenizer = AutoTokenizer.from_pretrained(turbo_dir)
    tokenizer.pad_token = tokenizer.eos_token
    conds = tts.Conditionals.load(turbo_dir / "conds.pt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tts.perth, "PerthImplicitWatermarker", _NoWatermark)
        model = tts.ChatterboxTurboTTS(t3.eval(), s3gen.eval(), ve.eval(), tokenizer, "cpu", conds)
    model.test_seed = seed
    return model


def _upstream_run(upstream: Any, text: str, seed: int) -> tuple[list[int], Tensor]:
    """Upstream's speech tokens (stop removed, as it returns them) and its waveform."""
    tokens: list[Tensor] = []
    inference_turbo = upstream.t3.inference_turbo

    def recording(*args: Any, **kwargs: Any) -> Tensor:
        out: Tensor = inference_turbo(*args, **kwargs)
        tokens.append(out)
        return out

    upstream.t3.inference_turbo = recording
    upstream.test_seed[0] = seed
    torch.manual_seed(seed)
    try:
        wav = upstream.generate(text)
    finally:
        del upstream.t3.inference_turbo
    return tokens[0][0].tolist(), wav.reshape(-1)


def _our_run(model: TurboModel, texts: Sequence[str], seeds: Sequence[int]) -> Any:
    results = model.speech_tokens(texts, [model.builtin_voice] * len(texts), seeds)
    wavs = model.synthesize(texts, seeds=seeds)
    stop = model.t3.config.stop_speech_token
    return [[t for t in r.tokens if t != stop] for r in results], [w.reshape(-1) for w in wavs]


def _relative_l2(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def expected(upstream: Any) -> dict[str, tuple[list[int], Tensor]]:
    return {
        text: _upstream_run(upstream, text, seed)
        for text, seed in ((PLAIN, PLAIN_SEED), (TAGGED, TAGGED_SEED))
    }


def test_tokenizer_matches_upstream(ours: TurboModel, upstream: Any) -> None:
    from chatterbox_serve.model.turbo.tokenizer import PARALINGUISTIC_TAGS, normalize_punctuation

    dot = ours.tokenizer.tokenizer.encode(".").ids
    tts = checkpoint.upstream_module("chatterbox.tts_turbo")
    for text in (PLAIN, TAGGED, "[chuckle]oh…  [gasp] “no”: [groan][sniff] [shush] [cough]"):
        assert normalize_punctuation(text) == tts.punc_norm(text)
        theirs = upstream.tokenizer(tts.punc_norm(text)).input_ids
        assert ours.tokenizer.encode(text) == theirs
    for tag in PARALINGUISTIC_TAGS:
        # One token for the tag, then the full stop the normalisation appends.
        assert ours.tokenizer.encode(tag) == [ours.tokenizer.tokenizer.token_to_id(tag), *dot]


def test_tokens_and_waveforms_match_upstream(
    ours: TurboModel, expected: dict[str, tuple[list[int], Tensor]]
) -> None:
    """Both texts in one batch: each item's tokens and waveform are what upstream gives alone."""
    tokens, wavs = _our_run(ours, [PLAIN, TAGGED], [PLAIN_SEED, TAGGED_SEED])
    for text, got_tokens, wav in zip((PLAIN, TAGGED), tokens, wavs, strict=True):
        want_tokens, want_wav = expected[text]
        assert len(want_tokens) >= 5
        assert got_tokens == want_tokens
        assert wav.shape == want_wav.shape
        assert _relative_l2(wav, want_wav) < WAVE_TOLERANCE


class _NoTopK(TurboChain):
    """A chain that forgets top_k (samples from the whole nucleus)."""

    def __call__(self, logits: Tensor, produced: Tensor, items: Any, step: int) -> Tensor:
        return super().__call__(
            logits, produced, [dataclasses.replace(i, top_k=0) for i in items], step
        )


class _StartTwice(TurboT3):
    """The original model's prompt, which ends with the start-of-speech token twice."""

    def prefill_embeds(self, prefix: Tensor, text_tokens: Any, uncond: bool) -> Tensor:
        rows = super().prefill_embeds(prefix, text_tokens, uncond)
        return torch.cat((rows, rows[-1:]))


class _PositionMixUp(TurboT3):
    """Generated rows with the speech step's `wpe` row taken off: a position mix-up."""

    def embed_speech(self, tokens: Tensor, positions: Tensor) -> Tensor:
        return super().embed_speech(tokens, positions) - self.tfmr.wpe(positions)


def _with_t3(model: TurboModel, cls: type[TurboT3]) -> TurboModel:
    t3 = copy.copy(model.t3)
    t3.__class__ = cls
    return TurboModel(t3, model.s3gen, model.tokenizer, model.builtin_voice)


@pytest.mark.parametrize(
    "plant",
    [
        pytest.param(lambda m: _with_t3(m, _StartTwice), id="start-twice"),
        pytest.param(lambda m: _with_t3(m, _PositionMixUp), id="position-mix-up"),
        pytest.param(
            lambda m: TurboModel(m.t3, m.s3gen, m.tokenizer, m.builtin_voice, _NoTopK(6561)),
            id="no-top-k",
        ),
    ],
)
def test_planted_t3_bugs_diverge(
    ours: TurboModel, expected: dict[str, tuple[list[int], Tensor]], plant: Any
) -> None:
    results = plant(ours).speech_tokens([PLAIN], [ours.builtin_voice], [PLAIN_SEED])
    stop = ours.t3.config.stop_speech_token
    assert [t for t in results[0].tokens if t != stop] != expected[PLAIN][0]


def test_planted_s3gen_noise_diverges(
    ours: TurboModel, expected: dict[str, tuple[list[int], Tensor]]
) -> None:
    """Noise only over the speech frames (upstream also noises the prompt's) moves the wave."""
    from chatterbox_serve.model.turbo import s3gen as turbo_s3gen

    class _NoPromptNoise(turbo_s3gen.MeanflowS3GenRunner):
        def initial_noise(self, inputs: Any, speech_lens: Any, seeds: Any) -> Tensor:
            noise = super().initial_noise(inputs, speech_lens, seeds)
            for i, frames in enumerate(inputs.prompt_lens):
                noise[i, :, :frames] = 0
            return noise

    planted = TurboModel(
        ours.t3, _NoPromptNoise(ours.s3gen.s3gen), ours.tokenizer, ours.builtin_voice
    )
    wav = planted.synthesize([PLAIN], seeds=[PLAIN_SEED])[0].reshape(-1)
    assert _relative_l2(wav, expected[PLAIN][1]) > 100 * WAVE_TOLERANCE


def test_checkpoint_files_are_upstreams_layout(turbo_dir: Path) -> None:
    assert checkpoint.missing_files(turbo_dir) == []
    for name in checkpoint.TOKENIZER_JSONS:
        assert (turbo_dir / name).is_file()
