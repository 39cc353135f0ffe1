"""Planted bugs for the served T3 proof, by subclassing parts of the vLLM model.

Each bug is a defect a source audit found in chatterbox-vllm, or one a refactor could
easily make; the proof must show its bound catches every one. A bug is switched on
inside a running (eager) engine by swapping the class of the module it lives in
(`LLM.apply_model(plant("..."))`), and off again by `plant(None)`; production code
carries no switch for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from vllm.model_executor.layers.attention import Attention

from chatterbox_serve.engines.vllm.t3_vllm import ChatterboxT3ForCFG


class _NoSpeechPositions(nn.Embedding):
    """Generated tokens without upstream's learned speech position."""

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return torch.zeros(
            (*positions.shape, self.embedding_dim),
            dtype=self.weight.dtype,
            device=self.weight.device,
        )


class _UncondWithoutHistory(Attention):
    """The unconditional branch attends to nothing but itself, as chatterbox-vllm's did."""

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *a: Any, **kw: Any
    ) -> torch.Tensor:  # noqa: E501
        return value.contiguous()


class _GuidanceIgnored(ChatterboxT3ForCFG):
    """Every request's CFG weight read as 0: the conditional logits alone."""

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        d = self.model.hidden
        hidden = hidden_states.clone()
        hidden[:, 2 * d : 2 * d + 3] = 0  # the weight's code channels
        return super().compute_logits(hidden)


BUGS = ("no_speech_pos", "uncond_no_history", "cfg_weight_ignored")


def _targets(model: Any, bug: str) -> list[tuple[nn.Module, type]]:
    if bug == "no_speech_pos":
        return [(model.model.speech_pos_emb, _NoSpeechPositions)]
    if bug == "uncond_no_history":
        return [
            (layer.self_attn.attn_uncond, _UncondWithoutHistory) for layer in model.model.layers
        ]
    if bug == "cfg_weight_ignored":
        return [(model, _GuidanceIgnored)]
    raise ValueError(f"unknown planted bug {bug!r}")


def plant(bug: str | None) -> Callable[[Any], None]:
    """A function for `LLM.apply_model` that switches on `bug` (None: every bug off)."""

    def apply(model: Any) -> None:
        for module in model.modules():
            original = getattr(module, "_unplanted_class", None)
            if original is not None:
                module.__class__ = original
                del module._unplanted_class
        if bug is None:
            return
        for module, planted in _targets(model, bug):
            module._unplanted_class = module.__class__  # type: ignore[assignment]
            module.__class__ = planted

    return apply
