"""Planted bugs for the vLLM T3 proofs: subclasses swapped in, production code untouched.

A proof must show that its tolerance catches real mistakes. Each bug here is one a
CFG-in-one-sequence port could plausibly make; `plant` switches it on inside a loaded
`ChatterboxT3ForCFG` by changing the class of the modules involved to a subclass that
has the bug, and `plant(model, None)` changes them back:

- `no_speech_pos`: generated tokens get no speech position embedding
  (`speech_pos_emb` returns zeros);
- `uncond_no_history`: the unconditional branch attends to itself only, as
  chatterbox-vllm's does (each layer's `attn_uncond` returns its values);
- `cfg_weight_ignored`: every request's logits use CFG weight 0.5, whatever it asked
  (the weight channels are overwritten before `compute_logits`).

The swap acts on the eager forward pass: run the engine with `enforce_eager=True`, or
plant before anything is captured. From a vLLM `LLM`:

    llm.apply_model(functools.partial(plant, bug="no_speech_pos"))

(`VLLM_ALLOW_INSECURE_SERIALIZATION=1`, and the engine core must import `tools.gpu`,
which it does when the tool runs from the repository root.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

PLANTED_BUGS = ("no_speech_pos", "uncond_no_history", "cfg_weight_ignored")
# The CFG weight `cfg_weight_ignored` puts in every request.
IGNORED_WEIGHT = 0.5


class _NoSpeechPos:
    """Over `nn.Embedding`: every speech position embeds as zeros."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(super().forward(ids))  # type: ignore[misc]


class _UncondNoHistory:
    """Over vLLM's `Attention`: each row's output is its own value, no history at all."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value.contiguous()


class _CfgWeightIgnored:
    """Over `ChatterboxT3ForCFG`: the weight channels say `IGNORED_WEIGHT` for every row."""

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        from chatterbox_serve.engines.vllm.positions import weight_code

        d = self.model.hidden  # type: ignore[attr-defined]
        code = weight_code(IGNORED_WEIGHT)
        digits = [code // 65536, (code // 256) % 256, code % 256]
        hidden = hidden_states.clone()
        hidden[:, 2 * d : 2 * d + 3] = torch.tensor(
            digits, dtype=hidden.dtype, device=hidden.device
        )
        out: torch.Tensor = super().compute_logits(hidden)  # type: ignore[misc]
        return out


_MIXINS: dict[str, type] = {
    "no_speech_pos": _NoSpeechPos,
    "uncond_no_history": _UncondNoHistory,
    "cfg_weight_ignored": _CfgWeightIgnored,
}


def plant(model: Any, bug: str | None) -> None:
    """Switch `bug` on in a loaded `ChatterboxT3ForCFG` (None: every bug off)."""
    if bug is not None and bug not in PLANTED_BUGS:
        raise ValueError(f"unknown planted bug {bug!r}; known: {PLANTED_BUGS}")
    for module in _targets(model).values():
        for m in module:
            _restore(m)
    if bug is None:
        return
    for m in _targets(model)[bug]:
        base = type(m)
        m.__class__ = type(f"Planted{base.__name__}", (_MIXINS[bug], base), {"_unplanted": base})


def planted_bug(model: Any) -> str | None:
    """The bug now planted in `model`, if any."""
    for bug, modules in _targets(model).items():
        if any("_unplanted" in type(m).__dict__ for m in modules):
            return bug
    return None


def _targets(model: Any) -> dict[str, list[nn.Module]]:
    return {
        "no_speech_pos": [model.model.speech_pos_emb],
        "uncond_no_history": [layer.self_attn.attn_uncond for layer in model.model.layers],
        "cfg_weight_ignored": [model],
    }


def _restore(module: nn.Module) -> None:
    base = type(module).__dict__.get("_unplanted")
    if base is not None:
        module.__class__ = base
