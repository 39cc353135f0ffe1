"""The batched generation loop gives each item what it gets alone, and stops items on time."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from chatterbox_serve.model.t3.generation import GenerationItem, generate
from chatterbox_serve.model.t3.model import T3


def _prefix(model: T3, seed: int, exaggeration: float, prompt_len: int = 150) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    speaker = torch.randn(1, 256, generator=gen)
    prompt = torch.randint(0, 6561, (1, prompt_len), generator=gen)
    with torch.inference_mode():
        return model.conditioning(speaker, prompt, torch.tensor([exaggeration]))[0]


def _text(seed: int, length: int, vocab: int = 704) -> tuple[int, ...]:
    gen = torch.Generator().manual_seed(100 + seed)
    return (255, *torch.randint(1, vocab, (length,), generator=gen).tolist(), 0)


def _mixed_items(model: T3) -> list[GenerationItem]:
    """Items differing in voice, exaggeration, text length, CFG, seed and every sampling value."""
    return [
        GenerationItem(_prefix(model, 1, 0.5), _text(1, 12), cfg_weight=0.5, seed=1,
                       max_new_tokens=20),
        GenerationItem(_prefix(model, 2, 1.2), _text(2, 30), cfg_weight=0.0, temperature=1.1,
                       top_p=0.9, min_p=0.1, seed=2, max_new_tokens=12),
        GenerationItem(_prefix(model, 3, 0.3, prompt_len=80), _text(3, 5), cfg_weight=0.8,
                       temperature=0.0, repetition_penalty=2.0, max_new_tokens=16),
        GenerationItem(_prefix(model, 4, 0.5), _text(4, 20), cfg_weight=0.3, temperature=0.6,
                       min_p=0.0, repetition_penalty=1.0, seed=4, max_new_tokens=7),
    ]  # fmt: skip


def test_batched_items_get_the_tokens_they_get_alone(english_t3: T3) -> None:
    items = _mixed_items(english_t3)
    batched = generate(english_t3, items)
    alone = [generate(english_t3, [item])[0] for item in items]
    assert [r.tokens for r in batched] == [r.tokens for r in alone]
    # Each item ran to its own budget (random weights rarely say stop-of-speech).
    assert [len(r.tokens) for r in batched] == [20, 12, 16, 7]


def test_order_of_the_batch_does_not_matter(english_t3: T3) -> None:
    items = _mixed_items(english_t3)
    forward = generate(english_t3, items)
    backward = generate(english_t3, items[::-1])[::-1]
    assert [r.tokens for r in forward] == [r.tokens for r in backward]


def test_seed_decides_sampled_tokens(english_t3: T3) -> None:
    item = GenerationItem(_prefix(english_t3, 1, 0.5), _text(1, 12), temperature=1.5, min_p=0.0,
                          seed=7, max_new_tokens=10)  # fmt: skip
    again = generate(english_t3, [item, item])
    other = generate(english_t3, [replace(item, seed=8)])[0]
    assert again[0].tokens == again[1].tokens
    assert other.tokens != again[0].tokens


def test_an_item_stops_at_stop_of_speech(english_t3: T3) -> None:
    """With a speech head that scores only stop-of-speech positively, the item ends at once."""
    stop = english_t3.config.stop_speech_token
    biased: Any = T3(english_t3.config)
    biased.load_state_dict(english_t3.state_dict())
    biased.eval()
    row = english_t3.speech_head.weight[stop].detach().clone()
    item = GenerationItem(_prefix(biased, 1, 0.5), _text(1, 12), cfg_weight=0.0, temperature=0.0,
                          max_new_tokens=50)  # fmt: skip
    # The first step's hidden state does not depend on the head, so one of the two signs
    # makes stop-of-speech the only positive logit there.
    for sign in (1.0, -1.0):
        with torch.no_grad():
            biased.speech_head.weight.zero_()
            biased.speech_head.weight[stop] = sign * 100 * row
        result = generate(biased, [item])[0]
        if result.stopped:
            break
    assert result.stopped
    assert result.tokens == (stop,)
    assert result.speech_tokens() == []


def test_multilingual_batch_matches_single_runs(multilingual_t3: T3) -> None:
    items = [
        GenerationItem(_prefix(multilingual_t3, 5, 0.5), _text(5, 14, 2454), cfg_weight=0.5,
                       repetition_penalty=2.0, seed=5, max_new_tokens=12),
        GenerationItem(_prefix(multilingual_t3, 6, 0.9), _text(6, 8, 2454), cfg_weight=0.0,
                       temperature=0.0, repetition_penalty=2.0, max_new_tokens=12),
    ]  # fmt: skip
    batched = generate(multilingual_t3, items, use_alignment=True)
    alone = [generate(multilingual_t3, [item], use_alignment=True)[0] for item in items]
    assert [r.tokens for r in batched] == [r.tokens for r in alone]


def test_empty_batch_is_empty(english_t3: T3) -> None:
    assert generate(english_t3, []) == []


def test_alignment_needs_the_aligned_layers(english_t3: T3) -> None:
    item = GenerationItem(_prefix(english_t3, 1, 0.5), _text(1, 4), max_new_tokens=2)
    with pytest.raises(ValueError, match="alignment analyzer"):
        generate(english_t3, [item], use_alignment=True)
