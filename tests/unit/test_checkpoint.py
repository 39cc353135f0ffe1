"""Checkpoint resolution: local directory first, then the hub at the pinned revision.

Offline, the hub fails fast and the error names `CHATTERBOX_MODEL_DIR`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chatterbox_serve.errors import EngineError
from chatterbox_serve.model import checkpoint
from chatterbox_serve.model.checkpoint import ENGLISH, MULTILINGUAL, resolve_checkpoint_dir


def _fill(directory: Path, names: tuple[str, ...]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_bytes(b"x")
    return directory


def test_a_complete_directory_is_used_as_is(tmp_path: Path) -> None:
    directory = _fill(tmp_path / "m", MULTILINGUAL.files)
    assert resolve_checkpoint_dir(str(directory), multilingual=True) == directory.resolve()


def test_missing_files_are_named_with_the_variant(tmp_path: Path) -> None:
    directory = _fill(tmp_path / "m", ENGLISH.files)
    with pytest.raises(EngineError, match="t3_mtl23ls_v2.safetensors.*USE_MULTILINGUAL_MODEL=true"):
        resolve_checkpoint_dir(str(directory), multilingual=True)


def test_the_hub_is_asked_for_the_pinned_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    asked: list[str] = []

    def download(variant: checkpoint.CheckpointVariant) -> Path:
        asked.append(variant.revision)
        return _fill(tmp_path / "hub", variant.files)

    assert resolve_checkpoint_dir(None, multilingual=False, download=download) == tmp_path / "hub"
    assert asked == [ENGLISH.revision]


def test_offline_hub_fails_fast_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(EngineError, match="Set CHATTERBOX_MODEL_DIR") as info:
        resolve_checkpoint_dir(None, multilingual=False)
    assert ENGLISH.revision[:12] in str(info.value)
