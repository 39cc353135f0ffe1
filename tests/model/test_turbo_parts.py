"""Turbo's parts on their own: sampling chain, GPT-2 backbone, tokenizer files, references.

Each part is checked against the third-party code upstream uses (Hugging Face's logits
processors and `GPT2Model`, pyloudnorm through upstream's `norm_loudness`), so a
failure names the part; tests/model/test_turbo_upstream.py checks them together.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from chatterbox_serve.errors import EngineError, InvalidRequestError
from chatterbox_serve.model.t3.generation import GenerationItem
from chatterbox_serve.model.turbo import checkpoint
from chatterbox_serve.model.turbo.backbone import GPT2Backbone
from chatterbox_serve.model.turbo.config import GPT2Config
from chatterbox_serve.model.turbo.sampling import TurboChain, apply_top_k
from chatterbox_serve.model.turbo.tokenizer import ADDED_TOKENS_FILE, TurboTextTokenizer
from chatterbox_serve.model.turbo.voice import normalize_loudness, prepare_reference
from chatterbox_serve.model.voice import S3GEN_RATE

START, STOP = 6561, 6562


def _item(**kw: float) -> GenerationItem:
    return GenerationItem(prefix=torch.zeros(1, 4), text_tokens=(1,), **kw)  # type: ignore[arg-type]


def _hf_chain(temperature: float, top_k: int, top_p: float, penalty: float) -> object:
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    # Upstream `T3.inference_turbo`'s list, conditions included.
    chain = LogitsProcessorList()
    if temperature > 0 and temperature != 1.0:
        chain.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        chain.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        chain.append(TopPLogitsWarper(top_p))
    if penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(penalty))
    return chain


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "penalty"),
    [(0.8, 1000, 0.95, 1.2), (1.0, 50, 1.0, 1.0), (0.5, 0, 0.8, 2.0), (1.3, 1, 0.9, 1.2)],
)
def test_chain_matches_upstreams_processors(
    temperature: float, top_k: int, top_p: float, penalty: float
) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6563, generator=gen) * 3
    logits[:, 7] = logits[:, 8]  # a tie at whatever rank
    generated = torch.randint(0, 6563, (2, 30), generator=gen)
    produced = torch.zeros(2, 6563, dtype=torch.bool).scatter(1, generated, True)
    item = _item(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=penalty)
    hf = _hf_chain(temperature, top_k, top_p, penalty)
    chain = TurboChain(START)
    start_ids = torch.full((2, 1), START)
    assert torch.equal(chain(logits, produced, [item, item], 0), hf(start_ids, logits))  # type: ignore[operator]
    assert torch.equal(chain(logits, produced, [item, item], 3), hf(generated, logits))  # type: ignore[operator]


def test_top_k_keeps_ties_and_zero_keeps_all() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    out = apply_top_k(logits, torch.tensor([2.0, 0.0]))
    assert torch.isinf(out[0]).tolist() == [False, True, False, False, True]
    assert torch.equal(out[1], logits[1])


def test_backbone_matches_gpt2_and_padding_changes_nothing() -> None:
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2Model

    torch.manual_seed(0)
    config = GPT2Config(hidden_size=32, num_layers=2, num_heads=4, max_positions=64)
    hf = GPT2Model(HFConfig(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=11)).eval()
    ours = GPT2Backbone(config, text_vocab_size=11).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    embeds = torch.randn(1, 9, 32)
    with torch.inference_mode():
        want = hf(inputs_embeds=embeds).last_hidden_state
        cache = ours.new_cache(2, 16)
        batch = torch.zeros(2, 12, 32)
        batch[0, 3:], batch[1] = embeds[0], torch.randn(12, 32)
        valid = torch.ones(2, 12, dtype=torch.bool)
        valid[0, :3] = False
        positions = torch.stack([torch.arange(12) - 3, torch.arange(12)]).clamp(min=0)
        got = ours(batch, positions, cache, valid)
        after = torch.randn(2, 1, 32)
        step_want = hf(inputs_embeds=torch.cat([embeds, after[:1]], dim=1)).last_hidden_state
        step = ours(after, torch.tensor([[9], [12]]), cache, torch.ones(2, 1, dtype=torch.bool))
    torch.testing.assert_close(got[0, 3:], want[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(step[0, 0], step_want[0, -1], rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tools.write_checkpoint import write_turbo_tokenizer

    directory = tmp_path_factory.mktemp("turbo-tokenizer")
    write_turbo_tokenizer(directory)
    return directory


def test_tokenizer_refuses_moved_added_tokens(tokenizer_dir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(tokenizer_dir, moved)
    added = json.loads((moved / ADDED_TOKENS_FILE).read_text())
    added["[laugh]"] += 100
    (moved / ADDED_TOKENS_FILE).write_text(json.dumps(added))
    with pytest.raises(EngineError, match="would not be"):
        TurboTextTokenizer.load(moved)
    (moved / ADDED_TOKENS_FILE).unlink()
    with pytest.raises(EngineError, match=ADDED_TOKENS_FILE):
        TurboTextTokenizer.load(moved)


def test_tokenizer_speaks_english_and_neutralises_control_words(tokenizer_dir: Path) -> None:
    tokenizer = TurboTextTokenizer.load(tokenizer_dir)
    with pytest.raises(InvalidRequestError, match="Turbo"):
        tokenizer.encode("Bonjour.", "fr")
    assert tokenizer.encode("Hi [START] there.") == tokenizer.encode("Hi START there.")
    assert tokenizer.encode("Hi [sigh] there.") != tokenizer.encode("Hi sigh there.")


def test_missing_checkpoint_files_are_named(tokenizer_dir: Path) -> None:
    with pytest.raises(EngineError, match=checkpoint.T3_FILE):
        checkpoint.check_checkpoint_dir(tokenizer_dir)


def test_reference_of_five_seconds_or_less_is_a_400() -> None:
    with pytest.raises(InvalidRequestError, match="more than 5 s") as info:
        prepare_reference(np.zeros(5 * S3GEN_RATE, dtype=np.float32))
    assert info.value.param == "voice"


def test_loudness_normalisation_is_upstreams() -> None:
    tts = checkpoint.upstream_module("chatterbox.tts_turbo")
    t = np.arange(6 * S3GEN_RATE) / S3GEN_RATE
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 0.5 * t)).astype(np.float32)
    want = tts.ChatterboxTurboTTS.norm_loudness(None, wav, S3GEN_RATE)
    got = prepare_reference(wav)
    np.testing.assert_array_equal(got, want)
    import pyloudnorm

    assert pyloudnorm.Meter(S3GEN_RATE).integrated_loudness(got) == pytest.approx(-27, abs=0.01)
    silence = np.zeros(6 * S3GEN_RATE, dtype=np.float32)
    np.testing.assert_array_equal(normalize_loudness(silence, S3GEN_RATE), silence)
