"""Fixtures for the T3 tests: tiny random checkpoints and upstream Chatterbox's T3 on them.

Upstream is resemble-ai's `chatterbox-tts` package, installed without its pinned
dependencies. Its top-level `__init__` imports the whole TTS stack (watermarker,
Gradio-era pins); the T3 subpackage needs only torch, transformers and einops, so it
is imported without running that `__init__`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest


def import_upstream_t3() -> types.SimpleNamespace:
    """Upstream's T3 class, its config, its conditioning dataclass and its Llama configs."""
    if "chatterbox" not in sys.modules:
        spec = importlib.util.find_spec("chatterbox")
        assert spec is not None and spec.submodule_search_locations, "chatterbox-tts missing"
        package = types.ModuleType("chatterbox")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["chatterbox"] = package
    t3 = importlib.import_module("chatterbox.models.t3.t3")
    return types.SimpleNamespace(
        T3=t3.T3,
        T3Config=importlib.import_module("chatterbox.models.t3.modules.t3_config").T3Config,
        T3Cond=importlib.import_module("chatterbox.models.t3.modules.cond_enc").T3Cond,
        LLAMA_CONFIGS=importlib.import_module("chatterbox.models.t3.llama_configs").LLAMA_CONFIGS,
    )


def build_upstream(ours: Any, checkpoint_dir: Path) -> Any:
    """Upstream's T3 with the same (tiny) hyperparameters and the same weight file."""
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


def _write_t3_only(tmp: Path, multilingual: bool) -> Path:
    from tools.write_checkpoint import write_checkpoint

    return write_checkpoint(tmp, multilingual=multilingual, tiny=True, seed=3, with_s3gen=False)


@pytest.fixture(scope="session")
def english_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_t3_only(tmp_path_factory.mktemp("t3-en"), multilingual=False)


@pytest.fixture(scope="session")
def multilingual_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_t3_only(tmp_path_factory.mktemp("t3-mtl"), multilingual=True)


@pytest.fixture(scope="session")
def english_t3(english_dir: Path) -> Any:
    from chatterbox_serve.model.checkpoint import load_t3

    return load_t3(english_dir, multilingual=False)


@pytest.fixture(scope="session")
def multilingual_t3(multilingual_dir: Path) -> Any:
    from chatterbox_serve.model.checkpoint import load_t3

    return load_t3(multilingual_dir, multilingual=True)


@pytest.fixture(scope="module")
def s3gen() -> Any:
    """Full-size S3Gen with random weights on the CPU (seeded: weights and the CFM's noise)."""
    import torch

    from chatterbox_serve.model.checkpoint import ensure_torchaudio

    ensure_torchaudio()
    from chatterbox_vllm.models.s3gen import S3Gen

    torch.manual_seed(0)
    return S3Gen().eval()


def two_voice_workload(lengths: tuple[int, int]) -> tuple[list[Any], list[dict[str, Any]]]:
    """Speech tokens of `lengths` for two random voices of different prompt lengths."""
    import torch

    gen = torch.Generator().manual_seed(5)
    refs = []
    for prompt in (8, 12):
        refs.append(
            {
                "prompt_token": torch.randint(0, 6561, (1, prompt), generator=gen),
                "prompt_token_len": torch.tensor([prompt]),
                "prompt_feat": torch.randn(1, 2 * prompt, 80, generator=gen) - 5,
                "prompt_feat_len": None,
                "embedding": torch.randn(1, 192, generator=gen),
            }
        )
    tokens = [torch.randint(0, 6561, (n,), generator=gen) for n in lengths]
    return tokens, refs
