"""The reference side of the Turbo vLLM proof: prompt rows, logits, and both sampling orders.

Runs on any device (the CPU tests and `turbo_proof --dry` use the tiny checkpoint):

- `upstream_turbo_t3`: upstream chatterbox-tts 0.1.7's own `T3` with Turbo's settings
  (GPT-2 via `GPT2Model`, as `ChatterboxTurboTTS.from_local` builds it), loaded from the
  same `t3_turbo_v1.safetensors`; `upstream_rows` are its `prepare_input_embeds` rows,
  the prompt `T3.inference_turbo` feeds;
- `reference_logits`: our reference `TurboT3` teacher-forced along given tokens, one
  forward pass, every step's raw logits (float32); `upstream_logits` the same through
  upstream's GPT-2;
- `upstream_order` / `vllm_order`: the log-probabilities each sampling order gives at
  each step. Upstream `inference_turbo`: temperature, top_k, top_p, then the
  repetition penalty over the start token (step 0) or the generated tokens (later).
  vLLM 0.26 (model runner V2, `Sampler.apply_sampling_params`): the penalty first, over
  the prompt ids (all start-of-speech) and the generated tokens, then temperature,
  top_k, top_p. vLLM is held to `vllm_order`; `total_variation` says how far that
  sits from upstream's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from chatterbox_serve.model.t3.generation import GenerationItem
from chatterbox_serve.model.t3.sampling import (
    apply_nucleus,
    apply_repetition_penalty,
    apply_temperature,
)
from chatterbox_serve.model.turbo import checkpoint
from chatterbox_serve.model.turbo.reference import TurboSampling
from chatterbox_serve.model.turbo.sampling import TurboChain, apply_top_k

# The name under which the checkpoint's GPT-2 shape joins upstream's config table.
UPSTREAM_CONFIG = "GPT2_turbo_proof"


def upstream_turbo_t3(ours: Any, directory: Path) -> Any:
    """Upstream's `T3` with Turbo's hyperparameters and the checkpoint's weights, eval mode."""
    from safetensors.torch import load_file

    from tools.upstream_t3 import import_upstream_t3

    up = import_upstream_t3()
    bb = ours.config.backbone
    up.LLAMA_CONFIGS[UPSTREAM_CONFIG] = dict(
        up.LLAMA_CONFIGS["GPT2_medium"],
        n_embd=bb.hidden_size,
        hidden_size=bb.hidden_size,
        n_layer=bb.num_layers,
        n_head=bb.num_heads,
        n_positions=bb.max_positions,
        n_ctx=bb.max_positions,
        vocab_size=ours.config.text_vocab_size,
    )
    hp = up.T3Config(text_tokens_dict_size=ours.config.text_vocab_size)
    hp.llama_config_name = UPSTREAM_CONFIG
    hp.speech_tokens_dict_size = ours.config.speech_vocab_size
    hp.input_pos_emb = None
    hp.speech_cond_prompt_len = ours.config.speech_cond_prompt_len
    hp.use_perceiver_resampler = False
    hp.emotion_adv = False
    t3 = up.T3(hp)
    t3.load_state_dict(load_file(str(directory / checkpoint.T3_FILE)))
    del t3.tfmr.wte  # as upstream's from_local
    return t3.eval()


def upstream_rows(
    up: Any, speaker: Tensor, prompt_tokens: Tensor, text_ids: Sequence[int]
) -> Tensor:
    """Upstream's prompt rows of one item (P, D): `prepare_input_embeds` with the start token."""
    from tools.upstream_t3 import import_upstream_t3

    device = up.speech_head.weight.device
    cond = (
        import_upstream_t3()
        .T3Cond(speaker_emb=speaker.to(device), cond_prompt_speech_tokens=prompt_tokens.to(device))
        .to(device=device)
    )
    text = torch.tensor([list(text_ids)], device=device)
    start = torch.full((1, 1), up.hp.start_speech_token, device=device)
    with torch.inference_mode():
        embeds, _ = up.prepare_input_embeds(
            t3_cond=cond, text_tokens=text, speech_tokens=start, cfg_weight=0.0
        )
    rows: Tensor = embeds[0]
    return rows


def reference_logits(t3: Any, rows: Tensor, tokens: Sequence[int]) -> Tensor:
    """Our `TurboT3`'s raw logits (len(tokens), V) at each step along `tokens`."""
    device = t3.device
    fed = torch.tensor(list(tokens[:-1]), dtype=torch.long, device=device)
    with torch.inference_mode():
        embeds = torch.cat((rows.to(device, t3.dtype), t3.embed_speech(fed, fed)))[None]
        n = embeds.shape[1]
        cache = t3.tfmr.new_cache(1, n)
        positions = torch.arange(n, device=device)[None]
        valid = torch.ones(1, n, dtype=torch.bool, device=device)
        hidden = t3.tfmr(embeds, positions, cache, valid)
        start = rows.shape[0] - 1
        out: Tensor = t3.speech_head(hidden[0, start : start + len(tokens)]).float()
    return out


def upstream_logits(up: Any, rows: Tensor, tokens: Sequence[int]) -> Tensor:
    """The same as `reference_logits` through upstream's GPT-2 and speech head."""
    device = up.speech_head.weight.device
    fed = torch.tensor(list(tokens[:-1]), dtype=torch.long, device=device)
    with torch.inference_mode():
        embeds = torch.cat((rows.to(device), up.speech_emb(fed)))[None]
        hidden = up.tfmr(inputs_embeds=embeds, use_cache=False)[0]
        start = rows.shape[0] - 1
        out: Tensor = up.speech_head(hidden[0, start : start + len(tokens)]).float()
    return out


@dataclass(frozen=True)
class Chain:
    """One item's sampling values; upstream's Turbo defaults (`TurboSampling`)."""

    temperature: float = TurboSampling.temperature
    top_k: int = TurboSampling.top_k
    top_p: float = TurboSampling.top_p
    repetition_penalty: float = TurboSampling.repetition_penalty


def upstream_order(logits: Tensor, tokens: Sequence[int], chain: Chain, start: int) -> Tensor:
    """Log-probabilities (steps, V) after upstream `inference_turbo`'s processors.

    Our `TurboChain` is that list bitwise (tests/model/test_turbo_parts.py).
    """
    item = GenerationItem(
        prefix=logits.new_zeros(0),
        text_tokens=(),
        temperature=chain.temperature,
        top_k=chain.top_k,
        top_p=chain.top_p,
        repetition_penalty=chain.repetition_penalty,
    )
    turbo = TurboChain(start)
    produced = torch.zeros(1, logits.shape[-1], dtype=torch.bool, device=logits.device)
    steps = []
    for k in range(logits.shape[0]):
        steps.append(torch.log_softmax(turbo(logits[k : k + 1], produced, [item], k), -1))
        produced[0, tokens[k]] = True
    return torch.cat(steps)


def vllm_order(logits: Tensor, tokens: Sequence[int], chain: Chain, start: int) -> Tensor:
    """Log-probabilities (steps, V) after vLLM 0.26's order with the same values."""
    device = logits.device
    seen = torch.zeros(1, logits.shape[-1], dtype=torch.bool, device=device)
    seen[0, start] = True  # the prompt's ids
    one = torch.ones(1, device=device)
    steps = []
    for k in range(logits.shape[0]):
        step = apply_repetition_penalty(logits[k : k + 1], seen, one * chain.repetition_penalty)
        step = apply_temperature(step, one * chain.temperature)
        step = apply_top_k(step, one * chain.top_k)
        step = apply_nucleus(step, one * (1.0 - chain.top_p))
        steps.append(torch.log_softmax(step, -1))
        seen[0, tokens[k]] = True
    return torch.cat(steps)


def total_variation(a: Tensor, b: Tensor) -> Tensor:
    """Per-step total variation distance between two (steps, V) log-probability tables."""
    return 0.5 * (a.double().exp() - b.double().exp()).abs().sum(-1)
