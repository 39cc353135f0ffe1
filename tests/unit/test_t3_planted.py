"""The proofs' planted bugs (tools/gpu/t3_planted.py) on a small CPU stand-in of the model.

The production model has no test hooks; the bugs are subclasses swapped in. This checks
that each swap changes what it should, and that unplanting gives back the exact model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("vllm", reason="vLLM 0.26 not installed")

from chatterbox_serve.engines.vllm.positions import weight_code  # noqa: E402
from chatterbox_serve.engines.vllm.t3_vllm import ChatterboxT3ForCFG  # noqa: E402
from tools.gpu.t3_planted import IGNORED_WEIGHT, PLANTED_BUGS, plant, planted_bug  # noqa: E402

D, V = 8, 12


class _Attention(nn.Module):
    """Stands in for vLLM's `Attention`: any function of (q, k, v) that is not just v."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return q + 2 * k + v


def _model() -> Any:
    model = ChatterboxT3ForCFG.__new__(ChatterboxT3ForCFG)
    nn.Module.__init__(model)
    backbone = nn.Module()
    backbone.hidden = D
    backbone.speech_pos_emb = nn.Embedding(10, D)
    layers = nn.ModuleList()
    for _ in range(2):
        layer = nn.Module()
        layer.self_attn = nn.Module()
        layer.self_attn.attn_uncond = _Attention()
        layers.append(layer)
    backbone.layers = layers
    model.model = backbone
    model.speech_head = nn.Linear(D, V, bias=False)
    return model


def _hidden(weight: float, rows: int = 3) -> torch.Tensor:
    code = weight_code(weight)
    digits = torch.tensor([code // 65536, (code // 256) % 256, code % 256], dtype=torch.float32)
    return torch.cat((torch.randn(rows, 2 * D), digits.expand(rows, 3)), dim=-1)


def test_cfg_weight_ignored_uses_one_weight_for_every_request() -> None:
    torch.manual_seed(0)
    model = _model()
    hidden = _hidden(0.9)
    right = model.compute_logits(hidden)
    plant(model, "cfg_weight_ignored")
    assert planted_bug(model) == "cfg_weight_ignored"
    wrong = model.compute_logits(hidden)
    assert torch.allclose(wrong, ChatterboxT3ForCFG.compute_logits(model, _with_weight(hidden)))
    assert not torch.allclose(wrong, right)
    plant(model, None)
    assert type(model) is ChatterboxT3ForCFG and planted_bug(model) is None
    assert torch.equal(model.compute_logits(hidden), right)


def _with_weight(hidden: torch.Tensor) -> torch.Tensor:
    return torch.cat((hidden[:, : 2 * D], _hidden(IGNORED_WEIGHT, hidden.shape[0])[:, 2 * D :]), -1)


def test_no_speech_pos_zeroes_the_speech_position_embedding() -> None:
    model = _model()
    ids = torch.tensor([1, 2, 3])
    right = model.model.speech_pos_emb(ids)
    plant(model, "no_speech_pos")
    assert torch.equal(model.model.speech_pos_emb(ids), torch.zeros_like(right))
    plant(model, None)
    assert type(model.model.speech_pos_emb) is nn.Embedding
    assert torch.equal(model.model.speech_pos_emb(ids), right)


def test_uncond_no_history_makes_every_layers_uncond_branch_return_its_values() -> None:
    model = _model()
    q, k, v = (torch.randn(4, D) for _ in range(3))
    plant(model, "uncond_no_history")
    for layer in model.model.layers:
        assert torch.equal(layer.self_attn.attn_uncond(q, k, v), v)
    plant(model, "no_speech_pos")  # one bug at a time: the last one replaces the first
    assert planted_bug(model) == "no_speech_pos"
    for layer in model.model.layers:
        assert type(layer.self_attn.attn_uncond) is _Attention
        assert torch.equal(layer.self_attn.attn_uncond(q, k, v), q + 2 * k + v)


def test_unknown_bugs_are_refused_and_production_has_no_hooks() -> None:
    with pytest.raises(ValueError, match="unknown planted bug"):
        plant(_model(), "typo")
    assert set(PLANTED_BUGS) == {"no_speech_pos", "uncond_no_history", "cfg_weight_ignored"}
    import chatterbox_serve.engines.vllm.t3_vllm as production

    assert "planted" not in Path(production.__file__).read_text().lower()
