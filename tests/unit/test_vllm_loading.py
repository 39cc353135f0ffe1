"""Loading on a fake checkpoint directory, up to the point where vLLM would start."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from chatterbox_serve.config import EngineConfig, Settings
from chatterbox_serve.engines.vllm.engine import VLLMEngine
from chatterbox_serve.engines.vllm.loading import (
    ENGLISH,
    MULTILINGUAL,
    ModelVariant,
    build_model_dir,
    load_model,
    resolve_checkpoint,
)
from chatterbox_serve.errors import EngineError
from tests.conftest import SHARED
from tests.unit.vllm_doubles import FakeChatterboxTTS, FakeTorch, SamplingParams


def _settings(**engine: Any) -> Settings:
    return Settings(engine=EngineConfig(**engine))


def _checkpoint(root: Path, variant: ModelVariant, skip: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in variant.files:
        if name != skip:
            (root / name).write_bytes(b"[]" if name.endswith(".json") else b"weights")
    return root


@pytest.fixture
def fake_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[FakeChatterboxTTS]:
    """vllm, torch and chatterbox-vllm's vLLM-importing modules, replaced by doubles."""
    tts_module = ModuleType("chatterbox_vllm.tts")
    tts_module.ChatterboxTTS = FakeChatterboxTTS  # type: ignore[attr-defined]
    t3_module = ModuleType("chatterbox_vllm.models.t3")
    t3_module.SPEECH_TOKEN_OFFSET = 2500  # type: ignore[attr-defined]
    vllm = ModuleType("vllm")
    vllm.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    for name, module in [
        ("chatterbox_vllm.tts", tts_module),
        ("chatterbox_vllm.models.t3", t3_module),
        ("vllm", vllm),
        ("torch", FakeTorch()),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    for var in ("CHATTERBOX_CFG_SCALE", "VLLM_ENABLE_V1_MULTIPROCESSING"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(FakeChatterboxTTS, "loads", [])
    return FakeChatterboxTTS


def test_load_calls_from_local_with_an_explicit_model_dir(
    tmp_path: Path, fake_stack: type[FakeChatterboxTTS]
) -> None:
    ckpt = _checkpoint(tmp_path / "ckpt", MULTILINGUAL)
    settings = _settings(
        model_dir=str(ckpt),
        max_batch_size=6,
        max_model_len=900,
        compile=True,
        s3gen_fp16=True,
        cfg_scale=0.3,
        gpu_memory_utilization=0.4,
    )
    model = load_model(settings)
    [(path, kwargs)] = fake_stack.loads
    model_dir = Path(kwargs.pop("model"))
    assert path == ckpt.resolve() and model.checkpoint_dir == ckpt.resolve()
    assert kwargs == {
        "target_device": "cuda",
        "variant": "multilingual",
        "max_model_len": 900,
        "max_batch_size": 6,
        "compile": True,
        "s3gen_use_fp16": True,
        "gpu_memory_utilization": 0.4,
        "max_num_seqs": 6,
    }
    assert model_dir.is_absolute() and model_dir.parent == tmp_path / "tmp"
    config = json.loads((model_dir / "config.json").read_text())
    reference = SHARED / "reference/chatterbox-vllm-t3-model-config.json"
    assert config == json.loads(reference.read_text())
    assert config["architectures"] == ["ChatterboxT3"]
    weights = model_dir / "model.safetensors"
    assert weights.is_symlink() and weights.resolve() == ckpt.resolve() / MULTILINGUAL.t3_weights
    assert os.environ["CHATTERBOX_CFG_SCALE"] == "0.3"
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert model.speech_token_offset == 2500 and model.sampling_params is SamplingParams
    model.close()
    assert model.tts.shut_down and not model_dir.exists()


def test_each_load_gets_its_own_model_dir(tmp_path: Path) -> None:
    weights = tmp_path / "t3.safetensors"
    weights.write_bytes(b"w")
    first, second = build_model_dir(weights), build_model_dir(weights)
    assert first != second and all(d.is_absolute() for d in (first, second))
    assert (first / "model.safetensors").resolve() == weights.resolve()


async def test_the_engine_starts_from_a_fake_english_checkpoint(
    tmp_path: Path, fake_stack: type[FakeChatterboxTTS]
) -> None:
    ckpt = _checkpoint(tmp_path / "ckpt", ENGLISH)
    engine = VLLMEngine(_settings(model_dir=str(ckpt), use_multilingual_model=False))
    await engine.start()
    assert fake_stack.loads[0][1]["variant"] == "english"
    assert engine.info()["started"]
    await engine.shutdown()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_failed_from_local_removes_the_model_dir(
    tmp_path: Path, fake_stack: type[FakeChatterboxTTS], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(cls: Any, ckpt_dir: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(FakeChatterboxTTS, "from_local", classmethod(refuse))
    ckpt = _checkpoint(tmp_path / "ckpt", ENGLISH)
    with pytest.raises(RuntimeError, match="out of memory"):
        load_model(_settings(model_dir=str(ckpt), use_multilingual_model=False))
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("multilingual", "missing"),
    [
        (True, "t3_mtl23ls_v2.safetensors"),
        (False, "t3_cfg.safetensors"),
        (True, "Cangjie5_TC.json"),
    ],
)
def test_a_missing_file_is_named(tmp_path: Path, multilingual: bool, missing: str) -> None:
    variant = MULTILINGUAL if multilingual else ENGLISH
    ckpt = _checkpoint(tmp_path, variant, skip=missing)
    with pytest.raises(EngineError) as err:
        resolve_checkpoint(_settings(model_dir=str(ckpt), use_multilingual_model=multilingual))
    message = err.value.message
    assert missing in message and "CHATTERBOX_MODEL_DIR" in message
    assert f"USE_MULTILINGUAL_MODEL={str(multilingual).lower()}" in message


def test_a_missing_model_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"CHATTERBOX_MODEL_DIR=.*nope is not a directory"):
        resolve_checkpoint(_settings(model_dir=str(tmp_path / "nope")))


def test_without_model_dir_the_hub_is_used_at_the_pinned_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def snapshot_download(repo_id: str, *, revision: str, allow_patterns: list[str]) -> str:
        calls.append({"repo_id": repo_id, "revision": revision, "allow_patterns": allow_patterns})
        return str(_checkpoint(tmp_path / revision, MULTILINGUAL))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert resolve_checkpoint(_settings()) == tmp_path / MULTILINGUAL.revision
    assert calls == [
        {
            "repo_id": "ResembleAI/chatterbox",
            "revision": "05e904af2b5c7f8e482687a9d7336c5c824467d9",
            "allow_patterns": list(MULTILINGUAL.files),
        }
    ]


def test_an_unreachable_hub_says_to_set_model_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(repo_id: str, **kwargs: Any) -> str:
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(EngineError, match="Set CHATTERBOX_MODEL_DIR") as err:
        resolve_checkpoint(_settings(use_multilingual_model=False))
    assert ENGLISH.revision[:12] in err.value.message


def test_a_hub_download_missing_a_file_is_named(tmp_path: Path) -> None:
    def partial(variant: ModelVariant) -> Path:
        return _checkpoint(tmp_path, variant, skip="conds.pt")

    with pytest.raises(EngineError, match="hub download.*conds.pt"):
        resolve_checkpoint(_settings(), download=partial)
