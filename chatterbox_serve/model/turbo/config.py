"""Turbo T3 hyperparameters (upstream's `T3Config` for Turbo and `GPT2_medium`); no torch.

A checkpoint's own shapes win (`TurboConfig.from_state_dict_shapes`); the head count
cannot be read from shapes, so a non-standard backbone (tools/write_checkpoint.py
`--turbo --tiny`) records it in `t3_backbone.json`, as the original's tiny checkpoints do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from chatterbox_serve.model.t3.config import read_backbone_override

TEXT_VOCAB = 50276
SPEECH_VOCAB = 6563  # 6561 S3 tokens, then start- and stop-of-speech


@dataclass(frozen=True)
class GPT2Config:
    """The GPT-2 decoder inside Turbo's T3 (upstream's `GPT2_medium`)."""

    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    max_positions: int = 8196
    layer_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class TurboConfig:
    """Token ids, table sizes and the backbone of Turbo's T3."""

    text_vocab_size: int = TEXT_VOCAB
    speech_vocab_size: int = SPEECH_VOCAB
    start_speech_token: int = 6561
    stop_speech_token: int = 6562
    speech_cond_prompt_len: int = 375
    speaker_embed_size: int = 256
    backbone: GPT2Config = dataclasses.field(default_factory=GPT2Config)
    # Read by the shared generation loop, which runs the alignment analyzer only on
    # multilingual checkpoints.
    is_multilingual: bool = False

    @property
    def hidden_size(self) -> int:
        return self.backbone.hidden_size

    @classmethod
    def from_state_dict_shapes(
        cls, shapes: Mapping[str, tuple[int, ...]], backbone: GPT2Config | None = None
    ) -> TurboConfig:
        """The config a Turbo T3 state dict (upstream keys) implies; heads from `backbone`."""
        base = backbone or GPT2Config()
        layers = {int(k.split(".")[2]) for k in shapes if k.startswith("tfmr.h.")}
        return cls(
            text_vocab_size=shapes["text_emb.weight"][0],
            speech_vocab_size=shapes["speech_emb.weight"][0],
            speaker_embed_size=shapes["cond_enc.spkr_enc.weight"][1],
            backbone=dataclasses.replace(
                base,
                hidden_size=shapes["speech_emb.weight"][1],
                num_layers=len(layers),
                max_positions=shapes["tfmr.wpe.weight"][0],
            ),
        )


def read_backbone_file(checkpoint_dir: Path) -> GPT2Config | None:
    """The backbone override next to a checkpoint, if any."""
    return read_backbone_override(checkpoint_dir, GPT2Config)
