"""Fixtures for the T3 tests: tiny random checkpoints and upstream Chatterbox's T3 on them.

Upstream is resemble-ai's `chatterbox-tts` package, installed without its pinned
dependencies, loaded by `tools/upstream_t3.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools.upstream_t3 import build_upstream, import_upstream_t3

__all__ = ["build_upstream", "import_upstream_t3"]


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
