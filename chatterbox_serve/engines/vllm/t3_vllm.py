"""Chatterbox T3 as a vLLM 0.26 model, with exact classifier-free guidance per request.

Upstream Chatterbox runs CFG as two sequences: a conditional one and an unconditional
one whose text embeddings are zeroed, each attending over its own history; logits are
`cond + w * (cond - uncond)`. Here one vLLM sequence carries both branches:

- **Inputs.** Every input row is `[cond row | uncond row]` (hidden size 2D). The
  prefix (conditioning, text, start-of-speech twice) arrives as one multimodal item
  built by the shared model code (`T3.prefill_embeds`); a generated token embeds as
  `speech_emb(token) + speech_pos_emb(k + 1)` in both halves, as upstream feeds it.
- **Backbone.** The two halves run through the same Llama weights as 2N rows, but
  attention is split: layer i's conditional rows go through `attn`, the unconditional
  rows through `attn_uncond`, two vLLM `Attention` layers with their own KV caches
  under the one block table. So each branch attends to exactly its own history, as
  upstream's second sequence does, with no masking tricks and no extra scheduling.
- **Per-request values.** The speech start and the CFG weight travel in the M-RoPE
  position ids (`positions.py`); the forward pass returns the weight as three extra
  channels so `compute_logits` applies each request's own weight.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from transformers import BatchFeature
from vllm.compilation.decorators import support_torch_compile
from vllm.config import VllmConfig
from vllm.inputs import MultiModalDataDict, MultiModalInput, mm_input
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import (
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.interfaces import (
    MultiModalEmbeddings,
    SupportsMRoPE,
    SupportsMultiModal,
)
from vllm.model_executor.models.utils import _merge_multimodal_embeddings, maybe_prefix
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import (
    MultiModalFeatureSpec,
    MultiModalFieldConfig,
    MultiModalKwargsItems,
    PlaceholderRange,
)
from vllm.multimodal.parse import ModalityDataItems, MultiModalDataItems, MultiModalDataParser
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    ProcessorInputs,
    PromptUpdate,
    TimingContext,
)
from vllm.sequence import IntermediateTensors

from chatterbox_serve.engines.vllm.model_dir import MODALITY
from chatterbox_serve.engines.vllm.positions import CENTER, SPAN, WEIGHT_SCALE, prompt_positions

PREFIX_KEY = "t3_prefix"  # (P, 2D) packed prefix rows
WEIGHT_KEY = "t3_cfg_weight"  # (1,) float


# Multimodal processing: the prefix rows pass through unchanged -------------------------


class _PrefixItems(ModalityDataItems[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]):
    """One prompt's T3 prefix: `{t3_prefix: (P, 2D), t3_cfg_weight: (1,)}`."""

    def get_count(self) -> int:
        return 1

    def get(self, index: int) -> Mapping[str, torch.Tensor]:
        # vLLM iterates items through __getitem__ (the sequence protocol, no __iter__),
        # so IndexError past the one item is what ends that loop; without it the
        # renderer spins forever before the request reaches the engine core.
        if index != 0:
            raise IndexError(index)
        return self.data

    def get_processor_data(self) -> Mapping[str, object]:
        return {}

    def get_passthrough_data(self) -> Mapping[str, object]:
        return self.data


class _PrefixParser(MultiModalDataParser):
    def parse_mm_data(self, mm_data: MultiModalDataDict) -> MultiModalDataItems:
        data = mm_data.get(MODALITY)
        if not isinstance(data, Mapping) or set(data) != {PREFIX_KEY, WEIGHT_KEY}:
            raise ValueError(
                f"T3 expects multi_modal_data={{{MODALITY!r}: {{{PREFIX_KEY}, {WEIGHT_KEY}}}}}"
            )
        return MultiModalDataItems({MODALITY: _PrefixItems(dict(data), MODALITY)})


class T3ProcessingInfo(BaseProcessingInfo):
    def get_data_parser(self) -> MultiModalDataParser:
        return _PrefixParser()

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {MODALITY: 1}

    def get_mm_max_tokens_per_item(
        self, seq_len: int, mm_counts: Mapping[str, int]
    ) -> Mapping[str, int] | None:
        return {MODALITY: seq_len}


class T3DummyInputs(BaseDummyInputsBuilder[T3ProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return ""

    def get_dummy_mm_data(
        self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Mapping[str, Any]
    ) -> MultiModalDataDict:
        width = self.info.get_hf_config().hidden_size
        return {
            MODALITY: {
                PREFIX_KEY: torch.zeros(seq_len, width),
                WEIGHT_KEY: torch.tensor([0.5]),
            }
        }


def _fields(hf_inputs: Mapping[str, torch.Tensor]) -> Mapping[str, MultiModalFieldConfig]:
    return {
        PREFIX_KEY: MultiModalFieldConfig.batched(MODALITY),
        WEIGHT_KEY: MultiModalFieldConfig.batched(MODALITY),
    }


class T3PrefixProcessor(BaseMultiModalProcessor[T3ProcessingInfo]):
    """Turns `{prefix rows, cfg weight}` into one placeholder run covering the prefix.

    The prompt's token ids must be the start-of-speech id, once per prefix row
    (optionally followed by speech tokens, for teacher forcing): vLLM's repetition
    penalty then sees what upstream's sees, the start token and generated speech.
    """

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return _fields(hf_inputs)

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        return []

    def apply(self, inputs: ProcessorInputs, timing_ctx: TimingContext) -> MultiModalInput:
        data = inputs.mm_data_items[MODALITY].get_passthrough_data()
        prefix = torch.as_tensor(data[PREFIX_KEY])
        weight = torch.as_tensor(data[WEIGHT_KEY], dtype=torch.float64).reshape(1)
        rows = prefix.shape[0]
        config = self.info.get_hf_config()
        start = config.t3_start_speech_token
        token_ids = [start] * rows if isinstance(inputs.prompt, str) else list(inputs.prompt)
        if prefix.ndim != 2 or prefix.shape[1] != config.hidden_size:
            raise ValueError(
                f"{PREFIX_KEY} must be (rows, {config.hidden_size}), got {tuple(prefix.shape)}"
            )
        if len(token_ids) < rows or any(t != start for t in token_ids[:rows]):
            raise ValueError(f"the prompt must open with {rows} start-of-speech ids ({start})")
        batch = BatchFeature({PREFIX_KEY: prefix[None], WEIGHT_KEY: weight[None]})
        mm_kwargs = MultiModalKwargsItems.from_hf_inputs(batch, _fields(batch))
        return mm_input(
            prompt_token_ids=token_ids,
            mm_kwargs=mm_kwargs,
            # vLLM's hasher walks tensors element by element (minutes for a prefix);
            # a prefix is never reused across requests, so a fresh id is the right key.
            mm_hashes={MODALITY: [uuid.uuid4().hex]},
            mm_placeholders={MODALITY: [PlaceholderRange(offset=0, length=rows)]},
        )


# The backbone: Llama layers whose attention keeps one KV cache per CFG branch --------


class _Attention(nn.Module):
    def __init__(self, config: Any, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        heads, kv_heads, head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        hidden = config.t3_hidden_size
        self.q_size, self.kv_size = heads * head_dim, kv_heads * head_dim
        self.qkv_proj = QKVParallelLinear(
            hidden, head_dim, heads, kv_heads, bias=False, prefix=f"{prefix}.qkv_proj"
        )
        self.o_proj = RowParallelLinear(
            heads * head_dim, hidden, bias=False, prefix=f"{prefix}.o_proj"
        )
        self.rotary_emb = get_rope(
            head_dim, max_position=SPAN, is_neox_style=True, rope_parameters=dict(config.t3_rope)
        )
        common: dict[str, Any] = {
            "num_kv_heads": kv_heads,
            "cache_config": vllm_config.cache_config,
        }
        # Two layers, two KV caches, one block table: each branch sees only itself.
        self.attn = Attention(heads, head_dim, head_dim**-0.5, prefix=f"{prefix}.attn", **common)
        self.attn_uncond = Attention(
            heads, head_dim, head_dim**-0.5, prefix=f"{prefix}.attn_uncond", **common
        )

    def forward(self, rope_positions: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        n = rope_positions.shape[0]
        qkv, _ = self.qkv_proj(hidden)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q, k = self.rotary_emb(torch.cat((rope_positions, rope_positions)), q, k)
        cond = self.attn(q[:n], k[:n], v[:n])
        uncond = self.attn_uncond(q[n:], k[n:], v[n:])
        out, _ = self.o_proj(torch.cat((cond, uncond)))
        return out


class _MLP(nn.Module):
    def __init__(self, config: Any, prefix: str) -> None:
        super().__init__()
        hidden, inner = config.t3_hidden_size, config.intermediate_size
        self.gate_up_proj = MergedColumnParallelLinear(
            hidden, [inner, inner], bias=False, prefix=f"{prefix}.gate_up_proj"
        )
        self.down_proj = RowParallelLinear(inner, hidden, bias=False, prefix=f"{prefix}.down_proj")
        self.act_fn = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up, _ = self.gate_up_proj(x)
        out, _ = self.down_proj(self.act_fn(gate_up))
        return out


class _Layer(nn.Module):
    def __init__(self, config: Any, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        hidden, eps = config.t3_hidden_size, config.rms_norm_eps
        self.self_attn = _Attention(config, vllm_config, f"{prefix}.self_attn")
        self.mlp = _MLP(config, f"{prefix}.mlp")
        self.input_layernorm = RMSNorm(hidden, eps=eps)
        self.post_attention_layernorm = RMSNorm(hidden, eps=eps)

    def forward(
        self, rope_positions: torch.Tensor, hidden: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = hidden
            hidden = self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(rope_positions, hidden)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


@support_torch_compile(dynamic_arg_dims={"input_ids": 0, "positions": -1, "inputs_embeds": 0})
class T3Backbone(nn.Module):
    """Speech embeddings, the Llama stack over both branches, and the final norm."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.hidden = config.t3_hidden_size
        self.speech_emb = nn.Embedding(config.vocab_size, self.hidden)
        self.speech_pos_emb = nn.Embedding(config.t3_speech_positions, self.hidden)
        self.layers = nn.ModuleList(
            _Layer(config, vllm_config, f"{prefix}.layers.{i}")
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(self.hidden, eps=config.rms_norm_eps)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Generated speech tokens, the same row in both halves (positions come later)."""
        emb = self.speech_emb(input_ids.clamp(0, self.speech_emb.num_embeddings - 1))
        return torch.cat((emb, emb), dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        assert inputs_embeds is not None, "T3 always runs on embeddings"
        packed = positions[0]
        rope_positions = packed % SPAN
        code = packed // SPAN
        n, d = inputs_embeds.shape[0], self.hidden
        # Generated tokens sit at CENTER + k and get upstream's speech position k + 1;
        # prefix rows (below CENTER) already carry theirs.
        speech_pos = rope_positions - CENTER + 1
        generated = (speech_pos >= 1).unsqueeze(-1)
        pos_emb = self.speech_pos_emb(speech_pos.clamp(0, self.speech_pos_emb.num_embeddings - 1))
        pos_emb = torch.where(generated, pos_emb, torch.zeros_like(pos_emb))
        hidden = torch.cat((inputs_embeds[:, :d] + pos_emb, inputs_embeds[:, d:] + pos_emb))
        residual = None
        for layer in self.layers:
            hidden, residual = layer(rope_positions, hidden, residual)
        hidden, _ = self.norm(hidden, residual)
        # The CFG weight code (18 bits) rides along as three base-256 digits, each an
        # integer below 256 and so exact in bf16.
        code_channels = torch.stack((code // 65536, (code // 256) % 256, code % 256), dim=-1).to(
            hidden.dtype
        )
        return torch.cat((hidden[:n], hidden[n:], code_channels), dim=-1)


class PrefixedT3(nn.Module, SupportsMultiModal):
    """What both T3s on vLLM share (this module's and `turbo_vllm.ChatterboxTurboT3`).

    The prompt rows arrive as one multimodal item (`T3PrefixProcessor`), one
    placeholder id per row; generated tokens embed through the backbone; the backbone
    runs on embeddings. A subclass names its backbone (`_backbone`), whose
    `embed_input_ids` embeds speech tokens and whose call takes vLLM's forward
    arguments, and the width of one prefix row (`_row_width`).
    """

    # vLLM's multimodal tokens are our prefix rows, never real token ids.
    requires_raw_input_tokens = False

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        return None

    def _backbone(self) -> Any:
        raise NotImplementedError

    def _row_width(self) -> int:
        raise NotImplementedError

    def _row_dtype(self) -> torch.dtype:
        raise NotImplementedError

    def get_language_model(self) -> Any:
        # vLLM types this as its text-model protocol; our backbone embeds speech tokens,
        # which is what vLLM calls it for.
        return self._backbone()

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        prefixes = kwargs[PREFIX_KEY]
        rows = prefixes if isinstance(prefixes, (list, tuple)) else list(prefixes)  # type: ignore[call-overload]
        width, dtype = self._row_width(), self._row_dtype()
        return [torch.as_tensor(r).reshape(-1, width).to(dtype) for r in rows]

    def embed_input_ids(
        self,
        input_ids: torch.Tensor,
        multimodal_embeddings: MultiModalEmbeddings | None = None,
        *,
        is_multimodal: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embeds: torch.Tensor = self._backbone().embed_input_ids(input_ids)
        if multimodal_embeddings is None or len(multimodal_embeddings) == 0:
            return embeds
        assert is_multimodal is not None
        return _merge_multimodal_embeddings(embeds, multimodal_embeddings, is_multimodal)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        out: torch.Tensor = self._backbone()(
            input_ids, positions, intermediate_tensors, inputs_embeds
        )
        return out


@MULTIMODAL_REGISTRY.register_processor(
    T3PrefixProcessor, info=T3ProcessingInfo, dummy_inputs=T3DummyInputs
)
class ChatterboxT3ForCFG(PrefixedT3, SupportsMRoPE):
    """T3 with both CFG branches in one sequence; see the module docstring."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        self.model = T3Backbone(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
        self.speech_head = nn.Linear(config.t3_hidden_size, config.vocab_size, bias=False)

    # Multimodal and positions --------------------------------------------------------

    def _backbone(self) -> Any:
        return self.model

    def _row_width(self) -> int:
        return 2 * self.model.hidden  # [cond row | uncond row]

    def _row_dtype(self) -> torch.dtype:
        return self.model.speech_emb.weight.dtype

    def get_mrope_input_positions(
        self, input_tokens: list[int], mm_features: list[MultiModalFeatureSpec]
    ) -> tuple[torch.Tensor, int]:
        prefix = [f for f in mm_features if f.modality == MODALITY and f.data is not None]
        if prefix:
            feature = prefix[0]
            assert feature.data is not None
            weight = float(torch.as_tensor(feature.data[WEIGHT_KEY].data).reshape(-1)[0])
            speech_start = feature.mm_position.offset + feature.mm_position.length
        else:
            # Only vLLM's own warm-up sends token ids without a prefix; the engine never
            # does (its processor refuses such prompts). Treat them as all-prompt, no CFG.
            weight, speech_start = 0.0, len(input_tokens)
        values, delta = prompt_positions(len(input_tokens), speech_start, weight)
        return torch.tensor(values, dtype=torch.int64).expand(3, -1).clone(), delta

    # Logits ----------------------------------------------------------------------------

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`cond + w * (cond - uncond)` in float32, each row with its request's weight."""
        d = self.model.hidden
        head = self.speech_head.weight.float()
        cond = hidden_states[:, :d].float() @ head.T
        uncond = hidden_states[:, d : 2 * d].float() @ head.T
        digits = hidden_states[:, 2 * d : 2 * d + 3].float()
        code = digits[:, 0] * 65536 + digits[:, 1] * 256 + digits[:, 2]
        weight = (code / WEIGHT_SCALE).unsqueeze(-1)
        return cond + weight * (cond - uncond)

    # Weights ---------------------------------------------------------------------------

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Load upstream T3 keys; the prompt-side tables stay with the shared model code."""
        stacked = (
            ("qkv_proj", "q_proj", "q"),
            ("qkv_proj", "k_proj", "k"),
            ("qkv_proj", "v_proj", "v"),
            ("gate_up_proj", "gate_proj", 0),
            ("gate_up_proj", "up_proj", 1),
        )
        renames = {
            "speech_emb.weight": "model.speech_emb.weight",
            "speech_pos_emb.emb.weight": "model.speech_pos_emb.weight",
            "speech_head.weight": "speech_head.weight",
            "tfmr.norm.weight": "model.norm.weight",
        }
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            if name in renames:
                target: str | None = renames[name]
            elif name.startswith("tfmr.layers."):
                target = "model." + name.removeprefix("tfmr.")
            else:
                continue  # text tables, conditioning, text head, tfmr.embed_tokens
            assert target is not None
            for fused, part, shard in stacked:
                if f".{part}." in target:
                    fused_name = target.replace(f".{part}.", f".{fused}.")
                    param = params[fused_name]
                    param.weight_loader(param, tensor, shard)  # type: ignore[attr-defined]
                    loaded.add(fused_name)
                    break
            else:
                param = params[target]
                getattr(param, "weight_loader", default_weight_loader)(param, tensor)
                loaded.add(target)
        return loaded
