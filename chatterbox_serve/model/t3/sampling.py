"""Classifier-free guidance and the sampling chain, per row with per-row values.

Order and arithmetic follow upstream `T3.inference`, which uses Hugging Face's logits
processors one item at a time: CFG, (alignment analyzer), repetition penalty over
every token so far including the start-of-speech token, temperature, min_p, top_p,
softmax, multinomial. Here each row carries its own values, so one call serves a
batch of items with different settings. Temperature 0 means greedy (argmax), an
extension: upstream would divide by zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def combine_cfg(cond: Tensor, uncond: Tensor, weight: Tensor) -> Tensor:
    """`cond + w * (cond - uncond)` with one weight per row, (N, V)."""
    return cond + weight[:, None] * (cond - uncond)


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: Tensor) -> Tensor:
    """Push down tokens already produced (`seen`, (N, V) bool): divide positive, scale negative."""
    p = penalty[:, None].to(logits.dtype)
    penalised = torch.where(logits < 0, logits * p, logits / p)
    return torch.where(seen, penalised, logits)


def apply_temperature(logits: Tensor, temperature: Tensor) -> Tensor:
    """Divide by the temperature; rows with temperature <= 0 (greedy) are left alone."""
    t = torch.where(temperature > 0, temperature, torch.ones_like(temperature))
    return logits / t[:, None].to(logits.dtype)


def apply_min_p(logits: Tensor, min_p: Tensor) -> Tensor:
    """Drop tokens less likely than `min_p` times the most likely one; the top token stays."""
    probs = logits.softmax(-1)
    top = probs.max(-1, keepdim=True).values
    remove = probs < min_p[:, None].to(probs.dtype) * top
    remove.scatter_(1, logits.argmax(-1, keepdim=True), False)
    return logits.masked_fill(remove, float("-inf"))


def apply_top_p(logits: Tensor, top_p: Tensor) -> Tensor:
    """Nucleus filter: drop the least likely tokens whose total mass is at most 1 - top_p."""
    return apply_nucleus(logits, 1 - top_p.to(logits.dtype))


def apply_nucleus(logits: Tensor, tail: Tensor) -> Tensor:
    """Drop each row's least likely tokens whose total mass is at most `tail` (N,).

    The most likely token always stays. Hugging Face's warper compares with `1 - top_p`
    taken in double precision (a Python float) and rounded to the logits' dtype; a
    caller that needs that exact boundary passes `tail` computed so (Turbo's chain).
    """
    sorted_logits, order = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    remove_sorted = cumulative <= tail[:, None].to(cumulative.dtype)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def process_logits(
    logits: Tensor,
    seen: Tensor,
    *,
    repetition_penalty: Tensor,
    temperature: Tensor,
    min_p: Tensor,
    top_p: Tensor,
) -> Tensor:
    """The whole chain after CFG, in upstream's order."""
    logits = apply_repetition_penalty(logits, seen, repetition_penalty)
    logits = apply_temperature(logits, temperature)
    logits = apply_min_p(logits, min_p)
    return apply_top_p(logits, top_p)


def sample(
    logits: Tensor, temperature: Tensor, generators: Sequence[torch.Generator | None]
) -> Tensor:
    """One token per row: argmax where temperature <= 0, else a draw from the row's generator.

    Each row draws from its own generator, so an item's tokens do not depend on which
    other items share its batch.
    """
    probs = logits.float().softmax(-1)
    greedy = logits.argmax(-1)
    out = []
    for row, generator in enumerate(generators):
        if float(temperature[row]) <= 0:
            out.append(greedy[row : row + 1])
        else:
            out.append(torch.multinomial(probs[row : row + 1], 1, generator=generator)[0])
    return torch.cat(out)
