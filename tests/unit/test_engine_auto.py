"""`engine: auto` picks vllm, else torch, else simulated, and says why it passed each over.

CI has torch, chatterbox-vllm's model modules and vLLM but no GPU, so `auto`
here chooses between torch and simulated depending on whether a checkpoint is at hand.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from chatterbox_serve.config import Settings, load_settings
from chatterbox_serve.engines import resolve_engine_name, vllm_available
from chatterbox_serve.engines.auto import choose_engine
from chatterbox_serve.model.checkpoint import ENGLISH, REPO_ID

# CI has vLLM installed but no GPU; a machine without the extra says so instead.
VLLM_REASON = (
    "vllm: installed, but no CUDA GPU is visible" if vllm_available() else "vllm: not installed"
)


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point huggingface_hub at an empty cache (a third-party setting, not our code)."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _settings(**env: str) -> Settings:
    return load_settings(
        {"CHATTERBOX_ENGINE": "auto", "USE_MULTILINGUAL_MODEL": "false", **env},
        dotenv_path=None,
    )


def _fill(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ENGLISH.files:
        (directory / name).write_bytes(b"x")
    return directory


def test_a_checkpoint_directory_makes_auto_pick_torch(tmp_path: Path) -> None:
    settings = _settings(CHATTERBOX_MODEL_DIR=str(_fill(tmp_path / "ckpt")))
    choice = choose_engine(settings)
    assert choice.engine == "torch"
    assert any(r.startswith(VLLM_REASON) for r in choice.reasons)
    assert resolve_engine_name(settings) == "torch"


def test_an_incomplete_directory_falls_back_with_the_missing_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = _fill(tmp_path / "ckpt")
    (directory / "s3gen.safetensors").unlink()
    with caplog.at_level(logging.WARNING):
        choice = choose_engine(_settings(CHATTERBOX_MODEL_DIR=str(directory)))
    assert choice.engine == "simulated"
    assert "lacks s3gen.safetensors" in caplog.text
    assert VLLM_REASON in caplog.text


def test_no_checkpoint_anywhere_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        choice = choose_engine(_settings())
    assert choice.engine == "simulated"
    assert "CHATTERBOX_MODEL_DIR is unset" in caplog.text
    assert ENGLISH.revision[:12] in caplog.text


def test_the_pinned_revision_in_the_hub_cache_counts(empty_hub_cache: Path) -> None:
    repo = empty_hub_cache / ("models--" + REPO_ID.replace("/", "--"))
    _fill(repo / "snapshots" / ENGLISH.revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(ENGLISH.revision)
    assert choose_engine(_settings()).engine == "torch"


def test_another_revision_in_the_cache_does_not(empty_hub_cache: Path) -> None:
    repo = empty_hub_cache / ("models--" + REPO_ID.replace("/", "--"))
    _fill(repo / "snapshots" / ("0" * 40))
    assert choose_engine(_settings()).engine == "simulated"
