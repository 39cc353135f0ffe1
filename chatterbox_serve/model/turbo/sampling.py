"""Turbo's sampling chain, per row with per-row values.

Upstream `T3.inference_turbo` builds Hugging Face's processors in this order:
temperature (when not 0 or 1), top_k (when above 0), top_p (when below 1), and the
repetition penalty last, after the filters. The penalty's history differs from the
original model's: at the first step it is the start-of-speech token alone, after that
the generated tokens alone. Temperature 0 means greedy here (an extension: upstream
then samples at temperature 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from chatterbox_serve.model.t3.generation import GenerationItem, item_values
from chatterbox_serve.model.t3.sampling import (
    apply_nucleus,
    apply_repetition_penalty,
    apply_temperature,
)


def apply_top_k(logits: Tensor, top_k: Tensor) -> Tensor:
    """Keep each row's `top_k` most likely tokens (ties with the last one kept); 0 keeps all."""
    k = top_k.long().clamp(min=0, max=logits.shape[-1])
    kth = logits.sort(dim=-1, descending=True).values.gather(1, (k - 1).clamp(min=0)[:, None])
    remove = (logits < kth) & (k > 0)[:, None]
    return logits.masked_fill(remove, float("-inf"))


@dataclass(frozen=True)
class TurboChain:
    """`SamplingChain` of upstream `T3.inference_turbo`."""

    start_token: int

    def __call__(
        self, logits: Tensor, produced: Tensor, items: Sequence[GenerationItem], step: int
    ) -> Tensor:
        device = logits.device
        logits = apply_temperature(logits, item_values(items, "temperature", device))
        logits = apply_top_k(logits, item_values(items, "top_k", device))
        # `1 - top_p` in double precision, then float32: Hugging Face's exact boundary.
        tail = torch.tensor([1.0 - float(item.top_p) for item in items], device=device)
        logits = apply_nucleus(logits, tail)
        if step == 0:
            seen = torch.zeros_like(produced)
            seen[:, self.start_token] = True
        else:
            seen = produced
        return apply_repetition_penalty(
            logits, seen, item_values(items, "repetition_penalty", device)
        )
