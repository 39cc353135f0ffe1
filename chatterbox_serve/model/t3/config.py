"""T3 hyperparameters for the English and multilingual v2 checkpoints; imports no torch.

Values are upstream Chatterbox's (`T3Config` and the `Llama_520M` backbone). A
checkpoint's own shapes win over them (`from_state_dict_shapes`), so a tiny test
checkpoint with few layers loads through the same code as the real one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENGLISH_TEXT_VOCAB = 704
MULTILINGUAL_TEXT_VOCAB = 2454
# Written next to a checkpoint whose backbone is not the standard 520M Llama (tools/
# write_checkpoint.py --tiny); real checkpoints have no such file.
BACKBONE_FILE = "t3_backbone.json"
_Backbone = TypeVar("_Backbone")


@dataclass(frozen=True)
class LlamaConfig:
    """The Llama decoder inside T3 (upstream's `Llama_520M`)."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 30
    num_heads: int = 16
    num_kv_heads: int = 16
    head_dim: int = 64
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500_000.0
    # Llama 3 RoPE frequency scaling.
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_positions: int = 8192


@dataclass(frozen=True)
class T3Config:
    """Token ids, vocabulary and table sizes, conditioning layout and the backbone."""

    text_vocab_size: int = ENGLISH_TEXT_VOCAB
    speech_vocab_size: int = 8194
    start_text_token: int = 255
    stop_text_token: int = 0
    start_speech_token: int = 6561
    stop_speech_token: int = 6562
    max_text_tokens: int = 2048
    max_speech_tokens: int = 4096
    speech_cond_prompt_len: int = 150
    speaker_embed_size: int = 256
    perceiver_queries: int = 32
    perceiver_heads: int = 4
    backbone: LlamaConfig = dataclasses.field(default_factory=LlamaConfig)

    @classmethod
    def english(cls) -> T3Config:
        return cls(text_vocab_size=ENGLISH_TEXT_VOCAB)

    @classmethod
    def multilingual(cls) -> T3Config:
        return cls(text_vocab_size=MULTILINGUAL_TEXT_VOCAB)

    @property
    def is_multilingual(self) -> bool:
        """Upstream tells the checkpoints apart by text vocabulary size, and so do we."""
        return self.text_vocab_size == MULTILINGUAL_TEXT_VOCAB

    @property
    def hidden_size(self) -> int:
        return self.backbone.hidden_size

    @property
    def cond_len(self) -> int:
        """Conditioning rows before the text: speaker, perceiver queries, emotion."""
        return 1 + self.perceiver_queries + 1

    @property
    def text_positions(self) -> int:
        """Rows of the learned text position table (upstream: max text tokens + 2)."""
        return self.max_text_tokens + 2

    @property
    def speech_positions(self) -> int:
        """Rows of the learned speech position table (upstream: max speech tokens + 4)."""
        return self.max_speech_tokens + 4

    @classmethod
    def from_state_dict_shapes(
        cls, shapes: Mapping[str, tuple[int, ...]], backbone: LlamaConfig | None = None
    ) -> T3Config:
        """The config a T3 state dict (upstream keys) implies.

        Vocabulary sizes, position tables, layer count and MLP width come from the
        tensor shapes; head counts cannot, so they come from `backbone` (default: the
        520M Llama, or whatever `t3_backbone.json` says for a non-standard checkpoint).
        """
        base = backbone or LlamaConfig()
        layers = {int(k.split(".")[2]) for k in shapes if k.startswith("tfmr.layers.")}
        hidden = shapes["speech_emb.weight"][1]
        backbone = dataclasses.replace(
            base,
            hidden_size=hidden,
            num_layers=len(layers),
            intermediate_size=shapes["tfmr.layers.0.mlp.gate_proj.weight"][0],
        )
        return cls(
            text_vocab_size=shapes["text_emb.weight"][0],
            speech_vocab_size=shapes["speech_emb.weight"][0],
            max_text_tokens=shapes["text_pos_emb.emb.weight"][0] - 2,
            max_speech_tokens=shapes["speech_pos_emb.emb.weight"][0] - 4,
            speaker_embed_size=shapes["cond_enc.spkr_enc.weight"][1],
            perceiver_queries=shapes["cond_enc.perceiver.pre_attention_query"][1],
            backbone=backbone,
        )


def read_backbone_override(
    checkpoint_dir: Path, kind: Callable[..., _Backbone]
) -> _Backbone | None:
    """The backbone override of either family next to a checkpoint, if any, as a `kind`."""
    path = checkpoint_dir / BACKBONE_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return kind(**data)


def read_backbone_file(checkpoint_dir: Path) -> LlamaConfig | None:
    """The backbone override next to a checkpoint, if any."""
    return read_backbone_override(checkpoint_dir, LlamaConfig)


def write_backbone_file(checkpoint_dir: Path, backbone: DataclassInstance) -> None:
    """Record a non-standard backbone (either family's) next to a checkpoint."""
    (checkpoint_dir / BACKBONE_FILE).write_text(json.dumps(dataclasses.asdict(backbone), indent=2))
