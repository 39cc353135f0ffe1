"""The batched T3 generation loop: many items, each with its own voice, text and settings.

`generate` prefills every item together (left-padded, with a key mask), then decodes
one token per step for all items still running, with a shared KV cache. An item whose
CFG weight is above 0 gets a second, unconditional row (zeroed text embeddings, its
own cache rows), combined as `cond + w * (cond - uncond)` before sampling, exactly as
upstream; with weight 0 upstream's formula reduces to the conditional logits, so that
row is skipped. Each item stops at its stop-of-speech token or its token budget, and
its rows leave the batch (the cache is compacted). Each item samples from its own
`torch.Generator`, so its tokens are the same whether it runs alone or in a batch.

The sampling chain is the family's (`SamplingChain`): `OriginalChain` here, Turbo's in
`model.turbo.sampling`; any model with `SpeechTokenModel`'s interface runs in the loop.

`use_alignment=True` runs upstream 0.1.7's multilingual alignment analyzer
(`alignment.py`) on each item's logits after CFG, as 0.1.7 does on every multilingual
call; `tests/model` prove our loop equal to 0.1.7 with it. Upstream main removed the
analyzer (resemble-ai/chatterbox#516) and crops the last token's audio instead; the
engines follow main (`engines.torch_engine.end_of_speech`), so it is off by default.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from chatterbox_serve.generation import GenerationParameters
from chatterbox_serve.model.t3.alignment import ALIGNED_HEADS, AlignmentAnalyzer, capture_plan
from chatterbox_serve.model.t3.sampling import combine_cfg, process_logits, sample


@dataclass(frozen=True)
class GenerationItem:
    """One utterance to generate speech tokens for.

    `prefix` is the item's conditioning (`T3.conditioning(...)[0]`, (34, D));
    `text_tokens` already carry the start and stop text tokens (`T3.text_tokens_for`).
    `max_new_tokens` counts the stop token, as upstream's loop does.
    """

    prefix: Tensor
    text_tokens: tuple[int, ...]
    # The sampling settings of `GenerationParameters`, which declares their defaults.
    cfg_weight: float = GenerationParameters.cfg_weight
    temperature: float = GenerationParameters.temperature
    top_p: float = GenerationParameters.top_p
    min_p: float = GenerationParameters.min_p
    repetition_penalty: float = GenerationParameters.repetition_penalty
    seed: int | None = GenerationParameters.seed
    max_new_tokens: int = 1000
    top_k: int = 0  # 0: off; only the Turbo chain reads it


@dataclass(frozen=True)
class GenerationResult:
    """Every token the loop produced for an item (stop token included if reached)."""

    tokens: tuple[int, ...]
    stopped: bool
    first_token_s: float

    def speech_tokens(self, speech_vocab: int = 6561) -> list[int]:
        """The tokens S3Gen takes: start/stop-of-speech and anything above dropped."""
        return [t for t in self.tokens if 0 <= t < speech_vocab]


class SpeechTokenModel(Protocol):
    """What the loop needs of a T3: `T3`, and Turbo's GPT-2 T3 (`model.turbo`)."""

    config: Any
    tfmr: Any
    speech_head: Any

    @property
    def device(self) -> torch.device: ...

    def prefill_embeds(
        self, prefix: Tensor, text_tokens: Sequence[int], uncond: bool
    ) -> Tensor: ...

    def embed_speech(self, tokens: Tensor, positions: Tensor) -> Tensor: ...


class SamplingChain(Protocol):
    """A family's logits processing, after CFG: (N, V) logits of the running items in.

    `produced` (N, V) marks the tokens each item has generated so far (start-of-speech
    not included: each chain marks it as its upstream does); `step` counts from 0.
    """

    def __call__(
        self, logits: Tensor, produced: Tensor, items: Sequence[GenerationItem], step: int
    ) -> Tensor: ...


@dataclass(frozen=True)
class OriginalChain:
    """Upstream `T3.inference`'s chain; the start-of-speech token counts as seen throughout."""

    start_token: int

    def __call__(
        self, logits: Tensor, produced: Tensor, items: Sequence[GenerationItem], step: int
    ) -> Tensor:
        seen = produced.clone()
        seen[:, self.start_token] = True
        device = logits.device
        return process_logits(
            logits,
            seen,
            repetition_penalty=item_values(items, "repetition_penalty", device),
            temperature=item_values(items, "temperature", device),
            min_p=item_values(items, "min_p", device),
            top_p=item_values(items, "top_p", device),
        )


@dataclass
class _Item:
    index: int
    spec: GenerationItem
    rows: list[int]  # row numbers in the current batch: cond, then uncond if any
    pad: int
    length: int  # real tokens in the cache
    generator: torch.Generator | None
    analyzer: AlignmentAnalyzer | None
    tokens: list[int]
    first_token_s: float = 0.0


@torch.inference_mode()
def generate(
    model: SpeechTokenModel,
    items: Sequence[GenerationItem],
    *,
    use_alignment: bool = False,
    chain: SamplingChain | None = None,
) -> list[GenerationResult]:
    """Generate speech tokens for every item; one result per item, in input order.

    `chain` is the family's sampling chain (default: the original model's).
    """
    if not items:
        return []
    started = time.perf_counter()
    config = model.config
    device = model.device
    chain = chain or OriginalChain(config.start_speech_token)
    align = use_alignment
    plan = capture_plan(config.backbone.num_layers) if align else {}
    if align and not plan:
        raise ValueError(
            f"the alignment analyzer reads layers {sorted({lyr for lyr, _ in ALIGNED_HEADS})}; "
            f"this T3 has {config.backbone.num_layers}"
        )

    prompts: list[Tensor] = []
    states: list[_Item] = []
    for index, spec in enumerate(items):
        rows = [len(prompts)]
        prompts.append(model.prefill_embeds(spec.prefix, spec.text_tokens, uncond=False))
        if spec.cfg_weight > 0:
            rows.append(len(prompts))
            prompts.append(model.prefill_embeds(spec.prefix, spec.text_tokens, uncond=True))
        generator = None
        if spec.seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(spec.seed)
        cond_len = spec.prefix.shape[0]
        analyzer = None
        if align:
            analyzer = AlignmentAnalyzer(
                cond_len, cond_len + len(spec.text_tokens), config.stop_speech_token
            )
        states.append(
            _Item(index, spec, rows, 0, prompts[rows[0]].shape[0], generator, analyzer, [])
        )

    longest = max(p.shape[0] for p in prompts)
    budget = max(s.spec.max_new_tokens for s in states)
    cache = model.tfmr.new_cache(len(prompts), longest + budget)
    embeds = prompts[0].new_zeros(len(prompts), longest, config.hidden_size)
    valid = torch.zeros(len(prompts), longest, dtype=torch.bool, device=device)
    positions = torch.zeros(len(prompts), longest, dtype=torch.long, device=device)
    for state in states:
        state.pad = longest - state.length
        for row in state.rows:
            embeds[row, state.pad :] = prompts[row]
            valid[row, state.pad :] = True
            positions[row, state.pad :] = torch.arange(state.length, device=device)

    captured: dict[tuple[int, int], Tensor] = {}
    hidden = model.tfmr(embeds, positions, cache, valid, plan, captured)
    logits = model.speech_head(hidden[:, -1]).float()
    produced = torch.zeros(len(states), config.speech_vocab_size, dtype=torch.bool, device=device)
    active = states
    results: dict[int, GenerationResult] = {}
    step = 0
    while active:
        cond = logits[[s.rows[0] for s in active]]
        uncond = logits[[s.rows[-1] for s in active]]
        weight = torch.tensor([s.spec.cfg_weight for s in active], device=device)
        mixed = combine_cfg(cond, uncond, weight)
        if align:
            mixed = _align(mixed, active, captured, step, config.start_speech_token)
        specs = [s.spec for s in active]
        processed = chain(mixed, produced[[s.index for s in active]], specs, step)
        next_tokens = sample(
            processed, item_values(specs, "temperature", device), [s.generator for s in active]
        ).tolist()
        still: list[_Item] = []
        for state, token in zip(active, next_tokens, strict=True):
            if not state.tokens:
                state.first_token_s = time.perf_counter() - started
            state.tokens.append(token)
            produced[state.index, token] = True
            stopped = token == config.stop_speech_token
            if stopped or len(state.tokens) >= state.spec.max_new_tokens:
                results[state.index] = GenerationResult(
                    tuple(state.tokens), stopped, state.first_token_s
                )
            else:
                still.append(state)
        if not still:
            break
        if len(still) < len(active):
            keep = [row for s in still for row in s.rows]
            cache.keep(torch.tensor(keep, device=device))
            renumber = {old: new for new, old in enumerate(keep)}
            for state in still:
                state.rows = [renumber[r] for r in state.rows]
        active = still
        step += 1
        row_tokens = torch.tensor(
            [s.tokens[-1] for s in active for _ in s.rows], device=device
        ).view(-1, 1)
        speech_pos = torch.full_like(row_tokens, step)
        row_positions = torch.tensor(
            [s.length for s in active for _ in s.rows], device=device
        ).view(-1, 1)
        for state in active:
            state.length += 1
        captured = {}
        step_embeds = model.embed_speech(row_tokens, speech_pos)
        step_valid = torch.ones_like(row_tokens, dtype=torch.bool)
        hidden = model.tfmr(step_embeds, row_positions, cache, step_valid, plan, captured)
        logits = model.speech_head(hidden[:, -1]).float()
    return [results[i] for i in range(len(items))]


def item_values(items: Sequence[GenerationItem], name: str, device: torch.device) -> Tensor:
    """One setting of every item as a float tensor (N,)."""
    return torch.tensor([float(getattr(item, name)) for item in items], device=device)


def _align(
    logits: Tensor,
    active: Sequence[_Item],
    captured: dict[tuple[int, int], Tensor],
    step: int,
    start_token: int,
) -> Tensor:
    rows = []
    for k, state in enumerate(active):
        assert state.analyzer is not None
        row = state.rows[0]
        attention = torch.stack([captured[key][row] for key in ALIGNED_HEADS]).mean(0)
        if step == 0:
            attention = attention[state.pad :, state.pad :]
        else:
            attention = attention[:, state.pad :]
        last = state.tokens[-1] if state.tokens else start_token
        rows.append(state.analyzer.step(logits[k], attention, last))
    return torch.stack(rows)
