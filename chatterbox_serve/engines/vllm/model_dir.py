"""The directory vLLM loads our T3 from: a `config.json` naming our architecture, and the weights.

vLLM reads a Hugging Face config to size its buffers and pick the model class. Each
model family has its own (`hf_config` of its shape). The original's is a `llama` config
whose `architectures` names `ChatterboxT3ForCFG` (registered by our plugin), with four
deliberate twists, each explained where it is written:

- `hidden_size` is twice T3's: one input row carries both CFG branches;
- `rope_scaling` holds an `mrope_section`, the switch that makes vLLM call the model's
  `get_mrope_input_positions` (see `positions.py`); the model applies T3's own Llama 3
  RoPE itself, from `t3_rope`;
- `vocab_size` is the speech vocabulary: T3 only ever emits speech tokens;
- `eos_token_id` is T3's stop-of-speech token. Left out, transformers fills in
  `LlamaConfig`'s default, 2, and vLLM adds the model's generation-config eos to
  every request's stop ids (`SamplingParams.update_from_generation_config`): speech
  token 2, an ordinary S3 code, would then end a chunk wherever it first appears.

Turbo's (`TurboShape`) is a `gpt2` config naming `ChatterboxTurboT3`: GPT-2's own
learned positions, `vocab_size` the speech vocabulary (6563), and the same eos lesson
twice over: `GPT2Config` defaults `bos_token_id` and `eos_token_id` to 50256, so both are
set to the speech start and stop tokens, and the stop token is the only eos.

This module imports neither torch nor vLLM.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatterbox_serve.engines.vllm.positions import SPAN

ARCHITECTURE = "ChatterboxT3ForCFG"
MODEL_CLASS = "chatterbox_serve.engines.vllm.t3_vllm:ChatterboxT3ForCFG"
TURBO_ARCHITECTURE = "ChatterboxTurboT3"
TURBO_MODEL_CLASS = "chatterbox_serve.engines.vllm.turbo_vllm:ChatterboxTurboT3"
# Every architecture the plugin registers, with its class's import path.
MODEL_CLASSES = {ARCHITECTURE: MODEL_CLASS, TURBO_ARCHITECTURE: TURBO_MODEL_CLASS}
# The one modality our processor accepts; vLLM's parsers know "image" by name, and a
# prompt's whole T3 prefix (conditioning, text, start of speech) is one such item.
MODALITY = "image"


@dataclass(frozen=True)
class T3Shape:
    """What vLLM must know of a T3 checkpoint (defaults: upstream's 520M Llama)."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 30
    num_heads: int = 16
    num_kv_heads: int = 16
    head_dim: int = 64
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500_000.0
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_positions: int = 8192
    speech_vocab_size: int = 8194
    speech_positions: int = 4100
    start_speech_token: int = 6561
    stop_speech_token: int = 6562


def hf_config(shape: T3Shape) -> dict[str, Any]:
    """The `config.json` contents for a T3 of this shape."""
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "llama",
        "hidden_size": 2 * shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "head_dim": shape.head_dim,
        "rms_norm_eps": shape.rms_norm_eps,
        "vocab_size": shape.speech_vocab_size,
        "eos_token_id": shape.stop_speech_token,
        "max_position_embeddings": SPAN,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "rope_theta": shape.rope_theta,
        "rope_scaling": {"rope_type": "default", "mrope_section": [shape.head_dim // 2, 0, 0]},
        "t3_rope": {
            "rope_type": "llama3",
            "rope_theta": shape.rope_theta,
            "factor": shape.rope_factor,
            "low_freq_factor": shape.rope_low_freq_factor,
            "high_freq_factor": shape.rope_high_freq_factor,
            "original_max_position_embeddings": shape.rope_original_max_positions,
        },
        "t3_hidden_size": shape.hidden_size,
        "t3_speech_positions": shape.speech_positions,
        "t3_start_speech_token": shape.start_speech_token,
        "t3_stop_speech_token": shape.stop_speech_token,
    }


@dataclass(frozen=True)
class TurboShape:
    """What vLLM must know of a Turbo T3 checkpoint (defaults: upstream's GPT-2 medium)."""

    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    max_positions: int = 8196
    layer_norm_eps: float = 1e-5
    speech_vocab_size: int = 6563
    start_speech_token: int = 6561
    stop_speech_token: int = 6562


def turbo_hf_config(shape: TurboShape) -> dict[str, Any]:
    """The `config.json` contents for a Turbo T3 of this shape."""
    return {
        "architectures": [TURBO_ARCHITECTURE],
        "model_type": "gpt2",
        "n_embd": shape.hidden_size,
        "n_layer": shape.num_layers,
        "n_head": shape.num_heads,
        "n_positions": shape.max_positions,
        "n_inner": None,  # 4 x n_embd, as upstream's GPT2_medium
        "activation_function": "gelu_new",
        "layer_norm_epsilon": shape.layer_norm_eps,
        "vocab_size": shape.speech_vocab_size,
        "bos_token_id": shape.start_speech_token,
        "eos_token_id": shape.stop_speech_token,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "t3_start_speech_token": shape.start_speech_token,
        "t3_stop_speech_token": shape.stop_speech_token,
    }


def config_of(shape: T3Shape | TurboShape) -> dict[str, Any]:
    """The `config.json` contents for either family's shape."""
    return turbo_hf_config(shape) if isinstance(shape, TurboShape) else hf_config(shape)


def build_model_dir(t3_weights: Path, shape: T3Shape | TurboShape) -> Path:
    """A fresh private directory holding our config and a link to the T3 weights.

    `mkdtemp` gives one directory per process, so replicas never race on it; the
    caller deletes it at shutdown.
    """
    model_dir = Path(tempfile.mkdtemp(prefix="chatterbox-serve-t3-")).resolve()
    (model_dir / "config.json").write_text(json.dumps(config_of(shape), indent=2))
    (model_dir / "model.safetensors").symlink_to(t3_weights.resolve())
    return model_dir
