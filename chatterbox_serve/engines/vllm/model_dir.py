"""The directory vLLM loads our T3 from: a `config.json` naming our architecture, and the weights.

vLLM reads a Hugging Face config to size its buffers and pick the model class. Each
model family has its own, written from the loaded T3's `config` (`T3Config` or
`TurboConfig`: the one declaration of its shape and token ids). The original's is a
`llama` config whose `architectures` names `ChatterboxT3ForCFG` (registered by our
plugin), with four deliberate twists, each explained where it is written:

- `hidden_size` is twice T3's: one input row carries both CFG branches;
- `rope_scaling` holds an `mrope_section`, the switch that makes vLLM call the model's
  `get_mrope_input_positions` (see `positions.py`); the model applies T3's own Llama 3
  RoPE itself, from `t3_rope`;
- `vocab_size` is the speech vocabulary: T3 only ever emits speech tokens;
- `eos_token_id` is T3's stop-of-speech token. Left out, transformers fills in
  `LlamaConfig`'s default, 2, and vLLM adds the model's generation-config eos to
  every request's stop ids (`SamplingParams.update_from_generation_config`): speech
  token 2, an ordinary S3 code, would then end a chunk wherever it first appears.

Turbo's (`turbo_hf_config`) is a `gpt2` config naming `ChatterboxTurboT3`: GPT-2's own
learned positions, `vocab_size` the speech vocabulary (6563), and the same eos lesson
twice over: `GPT2Config` defaults `bos_token_id` and `eos_token_id` to 50256, so both are
set to the speech start and stop tokens, and the stop token is the only eos.

This module imports neither torch nor vLLM.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from chatterbox_serve.engines.vllm.positions import SPAN
from chatterbox_serve.model.t3.config import T3Config
from chatterbox_serve.model.turbo.config import TurboConfig

ARCHITECTURE = "ChatterboxT3ForCFG"
MODEL_CLASS = "chatterbox_serve.engines.vllm.t3_vllm:ChatterboxT3ForCFG"
TURBO_ARCHITECTURE = "ChatterboxTurboT3"
TURBO_MODEL_CLASS = "chatterbox_serve.engines.vllm.turbo_vllm:ChatterboxTurboT3"
# Every architecture the plugin registers, with its class's import path.
MODEL_CLASSES = {ARCHITECTURE: MODEL_CLASS, TURBO_ARCHITECTURE: TURBO_MODEL_CLASS}
# The one modality our processor accepts; vLLM's parsers know "image" by name, and a
# prompt's whole T3 prefix (conditioning, text, start of speech) is one such item.
MODALITY = "image"


def hf_config(config: T3Config) -> dict[str, Any]:
    """The `config.json` contents for a T3 of this config (a loaded T3's `config`)."""
    b = config.backbone
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "llama",
        "hidden_size": 2 * b.hidden_size,
        "intermediate_size": b.intermediate_size,
        "num_hidden_layers": b.num_layers,
        "num_attention_heads": b.num_heads,
        "num_key_value_heads": b.num_kv_heads,
        "head_dim": b.head_dim,
        "rms_norm_eps": b.rms_norm_eps,
        "vocab_size": config.speech_vocab_size,
        "eos_token_id": config.stop_speech_token,
        "max_position_embeddings": SPAN,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "rope_theta": b.rope_theta,
        "rope_scaling": {"rope_type": "default", "mrope_section": [b.head_dim // 2, 0, 0]},
        "t3_rope": {
            "rope_type": "llama3",
            "rope_theta": b.rope_theta,
            "factor": b.rope_factor,
            "low_freq_factor": b.rope_low_freq_factor,
            "high_freq_factor": b.rope_high_freq_factor,
            "original_max_position_embeddings": b.rope_original_max_positions,
        },
        "t3_hidden_size": b.hidden_size,
        "t3_speech_positions": config.speech_positions,
        "t3_start_speech_token": config.start_speech_token,
        "t3_stop_speech_token": config.stop_speech_token,
    }


def turbo_hf_config(config: TurboConfig) -> dict[str, Any]:
    """The `config.json` contents for a Turbo T3 of this config (a loaded T3's `config`)."""
    b = config.backbone
    return {
        "architectures": [TURBO_ARCHITECTURE],
        "model_type": "gpt2",
        "n_embd": b.hidden_size,
        "n_layer": b.num_layers,
        "n_head": b.num_heads,
        "n_positions": b.max_positions,
        "n_inner": None,  # 4 x n_embd, as upstream's GPT2_medium
        "activation_function": "gelu_new",
        "layer_norm_epsilon": b.layer_norm_eps,
        "vocab_size": config.speech_vocab_size,
        "bos_token_id": config.start_speech_token,
        "eos_token_id": config.stop_speech_token,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "t3_start_speech_token": config.start_speech_token,
        "t3_stop_speech_token": config.stop_speech_token,
    }


def config_of(config: T3Config | TurboConfig) -> dict[str, Any]:
    """The `config.json` contents for either family's config."""
    return turbo_hf_config(config) if isinstance(config, TurboConfig) else hf_config(config)


def build_model_dir(t3_weights: Path, config: T3Config | TurboConfig) -> Path:
    """A fresh private directory holding our config and a link to the T3 weights.

    `mkdtemp` gives one directory per process, so replicas never race on it; the
    caller deletes it at shutdown.
    """
    model_dir = Path(tempfile.mkdtemp(prefix="chatterbox-serve-t3-")).resolve()
    (model_dir / "config.json").write_text(json.dumps(config_of(config), indent=2))
    (model_dir / "model.safetensors").symlink_to(t3_weights.resolve())
    return model_dir
