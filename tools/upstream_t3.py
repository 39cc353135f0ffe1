"""Upstream Chatterbox's own T3 (`chatterbox-tts` 0.1.7) on one of our checkpoints.

Upstream's top-level `chatterbox/__init__` imports the whole TTS stack (watermarker,
Gradio-era pins); the T3 subpackage needs only torch, transformers and einops, so it
is imported without running that `__init__`. The tests and the GPU proof use these to
hold our code against upstream's, never against itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any


def import_upstream_t3() -> types.SimpleNamespace:
    """Upstream's T3 class, config, conditioning dataclass, Llama configs and T3 module."""
    if "chatterbox" not in sys.modules:
        spec = importlib.util.find_spec("chatterbox")
        assert spec is not None and spec.submodule_search_locations, "chatterbox-tts missing"
        package = types.ModuleType("chatterbox")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["chatterbox"] = package
    t3 = importlib.import_module("chatterbox.models.t3.t3")
    return types.SimpleNamespace(
        module=t3,
        T3=t3.T3,
        T3Config=importlib.import_module("chatterbox.models.t3.modules.t3_config").T3Config,
        T3Cond=importlib.import_module("chatterbox.models.t3.modules.cond_enc").T3Cond,
        LLAMA_CONFIGS=importlib.import_module("chatterbox.models.t3.llama_configs").LLAMA_CONFIGS,
        Backend=importlib.import_module(
            "chatterbox.models.t3.inference.t3_hf_backend"
        ).T3HuggingfaceBackend,
    )


def build_upstream(ours: Any, checkpoint_dir: Path) -> Any:
    """Upstream's T3 with our loaded T3's hyperparameters and the same weight file."""
    from safetensors.torch import load_file

    from chatterbox_serve.model.checkpoint import variant

    up = import_upstream_t3()
    cfg = ours.config
    bb = cfg.backbone
    name = f"test_{bb.num_layers}x{bb.intermediate_size}"
    up.LLAMA_CONFIGS[name] = dict(
        up.LLAMA_CONFIGS["Llama_520M"],
        num_hidden_layers=bb.num_layers,
        intermediate_size=bb.intermediate_size,
        head_dim=bb.head_dim,
        num_attention_heads=bb.num_heads,
        num_key_value_heads=bb.num_kv_heads,
    )
    hp = up.T3Config.multilingual() if cfg.is_multilingual else up.T3Config.english_only()
    hp.llama_config_name = name
    hp.max_text_tokens = cfg.max_text_tokens
    hp.max_speech_tokens = cfg.max_speech_tokens
    model = up.T3(hp)
    state = load_file(str(checkpoint_dir / variant(cfg.is_multilingual).t3_file))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Only upstream's non-persistent RoPE buffer may be absent from the file.
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    return model.eval()
