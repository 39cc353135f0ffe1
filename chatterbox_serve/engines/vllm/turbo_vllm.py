"""Chatterbox Turbo's T3 as a vLLM 0.26 model: vLLM's own GPT-2, our prefix, a biased head.

Upstream `T3.inference_turbo` (chatterbox-tts 0.1.7) feeds GPT-2 embeddings only:

- the prompt `[speaker | prompt speech tokens | text | start-of-speech]`, built by the
  reference model (`TurboT3.prefill_embeds`), arrives as the original's plugin passes its
  prefix: one multimodal item, one start-of-speech id per row (`t3_vllm.T3PrefixProcessor`,
  whose CFG weight Turbo's prompts carry as 0 and this model never reads);
- each generated token is fed as `speech_emb(token)`, which is why GPT-2's `wte` here
  holds the speech embeddings (the checkpoint's own `tfmr.wte`, a text table upstream
  deletes after loading, is skipped);
- GPT-2 adds its learned position `wpe` to every row, over the whole sequence from 0:
  exactly vLLM's plain positions, so no packed positions (`positions.py`) are needed;
- logits come from `speech_head`, which has a bias, in float32 like the original's.

The backbone is vLLM's `GPT2Model` itself (fused QKV, its attention, CUDA graphs),
with upstream's weights: Hugging Face's `Conv1D` layout is transposed by its loader.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.gpt2 import GPT2Model
from vllm.model_executor.models.utils import maybe_prefix
from vllm.multimodal import MULTIMODAL_REGISTRY

from chatterbox_serve.engines.vllm.t3_vllm import (
    PrefixedT3,
    T3DummyInputs,
    T3PrefixProcessor,
    T3ProcessingInfo,
)

# Checkpoint keys (upstream's `T3` with `GPT2_medium`) that vLLM's T3 does not hold: the
# text side, the conditioning encoder (the engine builds the prompt rows) and GPT-2's
# text `wte`.
_PROMPT_SIDE = ("text_emb.", "text_head.", "cond_enc.", "tfmr.wte.")


@MULTIMODAL_REGISTRY.register_processor(
    T3PrefixProcessor, info=T3ProcessingInfo, dummy_inputs=T3DummyInputs
)
class ChatterboxTurboT3(PrefixedT3):
    """Turbo's T3 on vLLM; see the module docstring."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        self.hidden = config.hidden_size
        # `wte` is sized by `vocab_size`, the speech vocabulary: the speech embeddings.
        self.transformer = GPT2Model(
            vllm_config=vllm_config, prefix=maybe_prefix(prefix, "transformer")
        )
        self.speech_head = nn.Linear(self.hidden, config.vocab_size, bias=True)

    def _backbone(self) -> Any:
        return self.transformer

    def _row_width(self) -> int:
        return int(self.hidden)

    def _row_dtype(self) -> torch.dtype:
        return self.speech_head.weight.dtype

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Speech logits (with the head's bias) in float32."""
        head = self.speech_head
        return F.linear(hidden_states.float(), head.weight.float(), head.bias.float())

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load upstream's Turbo T3 keys; the prompt-side tables stay with the reference model."""
        backbone: list[tuple[str, torch.Tensor]] = []
        loaded: set[str] = set()
        params = dict(self.named_parameters())
        for name, tensor in weights:
            if name.startswith(_PROMPT_SIDE):
                continue
            if name == "speech_emb.weight":
                backbone.append(("wte.weight", tensor))
            elif name.startswith("tfmr."):
                backbone.append((name.removeprefix("tfmr."), tensor))
            elif name.startswith("speech_head."):
                default_weight_loader(params[name], tensor)
                loaded.add(name)
            else:
                raise ValueError(f"unexpected Turbo T3 weight {name!r}")
        # GPT2Model's loader transposes Conv1D weights and splits the fused c_attn.
        loaded |= {f"transformer.{n}" for n in self.transformer.load_weights(backbone)}
        return loaded
