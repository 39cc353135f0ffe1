"""Our T3 produces upstream Chatterbox's speech tokens and conditioning, bit for bit.

Both models load the same random-weight tiny checkpoint (tools/write_checkpoint.py).
Upstream's `T3.inference` always samples (`torch.multinomial`), so the runs use
`min_p=1.0`: min_p keeps only tokens at least as likely as the most likely one, so
the distribution left is one-hot and the draw is deterministic; no upstream code is
patched. Repetition penalty, CFG and (multilingual) the alignment analyzer still act
on the logits before that filter, so they are all exercised.

Planted bugs (the ones a source audit found in chatterbox-vllm) must make the
comparison fail, or the test proves nothing.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from chatterbox_serve.model.t3 import generation as generation_module
from chatterbox_serve.model.t3.generation import GenerationItem, generate
from chatterbox_serve.model.t3.model import T3
from tests.model.conftest import build_upstream

MAX_NEW_TOKENS = 24
# Upstream's perceiver calls a deprecated torch context manager on every forward.
pytestmark = pytest.mark.filterwarnings("ignore:.*sdp_kernel.*:FutureWarning")


def _inputs(seed: int, text_vocab: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "speaker": torch.randn(1, 256, generator=gen),
        "prompt": torch.randint(0, 6561, (1, 150), generator=gen),
        "text": [255, *torch.randint(1, text_vocab, (16,), generator=gen).tolist(), 0],
        "exaggeration": 0.7,
    }


def _upstream_tokens(
    upstream: Any, inputs: dict[str, Any], cfg_weight: float, **kw: Any
) -> list[int]:
    from tests.model.conftest import import_upstream_t3

    cond = import_upstream_t3().T3Cond(
        speaker_emb=inputs["speaker"],
        cond_prompt_speech_tokens=inputs["prompt"],
        emotion_adv=inputs["exaggeration"] * torch.ones(1, 1, 1),
    )
    # Upstream's callers always pass two text rows (tts.py for CFG, mtl_tts.py always).
    text = torch.tensor([inputs["text"], inputs["text"]])
    tokens = upstream.inference(
        t3_cond=cond,
        text_tokens=text,
        max_new_tokens=MAX_NEW_TOKENS,
        temperature=0.8,
        top_p=1.0,
        min_p=1.0,
        repetition_penalty=kw.get("repetition_penalty", 1.2),
        cfg_weight=cfg_weight,
    )
    return [int(t) for t in tokens[0]]


def _our_tokens(model: T3, inputs: dict[str, Any], cfg_weight: float, **kw: Any) -> list[int]:
    with torch.inference_mode():
        prefix = model.conditioning(
            inputs["speaker"], inputs["prompt"], torch.tensor([inputs["exaggeration"]])
        )[0]
    item = GenerationItem(
        prefix=prefix,
        text_tokens=tuple(inputs["text"]),
        cfg_weight=cfg_weight,
        temperature=0.8,
        min_p=1.0,
        repetition_penalty=kw.get("repetition_penalty", 1.2),
        seed=11,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    # Upstream 0.1.7 runs its alignment analyzer on every multilingual call.
    analyzer = model.config.is_multilingual
    return list(generate(model, [item], use_alignment=analyzer)[0].tokens)


@pytest.fixture(scope="module")
def english_upstream(english_t3: T3, english_dir: Any) -> Any:
    return build_upstream(english_t3, english_dir)


@pytest.fixture(scope="module")
def multilingual_upstream(multilingual_t3: T3, multilingual_dir: Any) -> Any:
    return build_upstream(multilingual_t3, multilingual_dir)


def test_conditioning_matches_upstream(english_t3: T3, english_upstream: Any) -> None:
    from tests.model.conftest import import_upstream_t3

    inputs = _inputs(1, 704)
    cond = import_upstream_t3().T3Cond(
        speaker_emb=inputs["speaker"],
        cond_prompt_speech_tokens=inputs["prompt"],
        emotion_adv=0.3 * torch.ones(1, 1, 1),
    )
    with torch.inference_mode():
        theirs = english_upstream.prepare_conditioning(cond)
        ours = english_t3.conditioning(inputs["speaker"], inputs["prompt"], torch.tensor([0.3]))
    assert ours.shape == theirs.shape == (1, 34, 1024)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cfg_weight", [0.0, 0.5])
def test_english_tokens_match_upstream(
    english_t3: T3, english_upstream: Any, cfg_weight: float
) -> None:
    inputs = _inputs(2, 704)
    theirs = _upstream_tokens(english_upstream, inputs, cfg_weight)
    assert len(theirs) == MAX_NEW_TOKENS
    assert _our_tokens(english_t3, inputs, cfg_weight) == theirs


@pytest.mark.parametrize("cfg_weight", [0.0, 0.5])
def test_multilingual_tokens_match_upstream(
    multilingual_t3: T3, multilingual_upstream: Any, cfg_weight: float
) -> None:
    # A strong repetition penalty keeps the analyzer's repeated-token stop from ending
    # the random-weight run after a few tokens, so more steps are compared.
    inputs = _inputs(3, 2454)
    theirs = _upstream_tokens(multilingual_upstream, inputs, cfg_weight, repetition_penalty=2.0)
    assert len(theirs) >= 8
    assert _our_tokens(multilingual_t3, inputs, cfg_weight, repetition_penalty=2.0) == theirs


class _NoSpeechPositions(T3):
    def embed_speech(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.speech_emb(tokens)
        return out


class _UncondWithoutTextPositions(T3):
    def embed_text(self, tokens: torch.Tensor, uncond: bool = False) -> torch.Tensor:
        if uncond:
            return torch.zeros(*tokens.shape, self.config.hidden_size, device=tokens.device)
        return super().embed_text(tokens, uncond)


def _planted(model: T3, cls: type[T3]) -> T3:
    planted = copy.copy(model)
    planted.__class__ = cls
    return planted


@pytest.mark.parametrize(
    ("bug", "cfg_weight"),
    [(_NoSpeechPositions, 0.0), (_NoSpeechPositions, 0.5), (_UncondWithoutTextPositions, 0.5)],
)
def test_planted_embedding_bugs_diverge(
    english_t3: T3, english_upstream: Any, bug: type[T3], cfg_weight: float
) -> None:
    inputs = _inputs(2, 704)
    theirs = _upstream_tokens(english_upstream, inputs, cfg_weight)
    assert _our_tokens(_planted(english_t3, bug), inputs, cfg_weight) != theirs


def test_planted_bias_only_cfg_diverges(
    english_t3: T3, english_upstream: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CFG whose unconditional row never follows its own history is a fixed logit bias."""
    first_uncond: list[torch.Tensor] = []
    combine = generation_module.combine_cfg

    def bias_only(cond: torch.Tensor, uncond: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if not first_uncond:
            first_uncond.append(uncond.clone())
        return combine(cond, first_uncond[0], weight)

    inputs = _inputs(2, 704)
    theirs = _upstream_tokens(english_upstream, inputs, 0.5)
    monkeypatch.setattr(generation_module, "combine_cfg", bias_only)
    assert _our_tokens(english_t3, inputs, 0.5) != theirs
