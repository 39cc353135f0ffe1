"""Our vLLM T3 plugin without a GPU: entry point, position packing, model directory."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import tomllib

from chatterbox_serve.engines.vllm import positions
from chatterbox_serve.engines.vllm.model_dir import (
    ARCHITECTURE,
    build_model_dir,
    hf_config,
)
from chatterbox_serve.model.t3.config import T3Config

ROOT = Path(__file__).resolve().parents[2]


def test_entry_point_resolves_to_the_register_function() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = project["project"]["entry-points"]["vllm.general_plugins"]["chatterbox_t3"]
    module, _, name = target.partition(":")
    assert callable(getattr(importlib.import_module(module), name))


def test_register_adds_our_architecture_to_vllms_registry() -> None:
    vllm = pytest.importorskip("vllm", reason="vLLM 0.26 not installed")
    from chatterbox_serve.engines.vllm.plugin import register

    register()
    register()  # idempotent
    assert ARCHITECTURE in vllm.ModelRegistry.get_supported_archs()


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.5, 1.0, 0.1234, positions.MAX_CFG_WEIGHT])
@pytest.mark.parametrize("start", [1, 120, positions.CENTER])
def test_positions_carry_speech_start_and_weight_through_decode(weight: float, start: int) -> None:
    values, delta = positions.prompt_positions(start, start, weight)
    ropes = [positions.unpack(v).rope_index for v in values]
    # RoPE sees consecutive indices (a constant shift of upstream's: same attention).
    assert ropes == list(range(ropes[0], ropes[0] + start))
    # vLLM 0.26 keeps positions and delta as int32.
    assert 0 <= delta < 2**31 and all(0 <= v < 2**31 for v in values)
    # vLLM feeds the k-th generated token at context_len + delta.
    for k in (0, 1, 2, positions.CENTER - 1):
        packed = start + k + delta
        assert packed < 2**31
        p = positions.unpack(packed)
        assert p.rope_index == ropes[0] + start + k
        assert p.speech_position == k + 1  # upstream's speech position of that token
        assert p.cfg_weight == pytest.approx(weight, abs=5e-5)
    assert positions.unpack(values[-1]).speech_position == 0  # second start token


def test_positions_refuse_values_they_cannot_carry() -> None:
    with pytest.raises(ValueError):
        positions.weight_code(-0.1)
    with pytest.raises(ValueError):
        positions.weight_code(positions.MAX_CFG_WEIGHT + 0.01)
    with pytest.raises(ValueError):
        positions.pack(0, positions.CENTER + 1, 0)  # a prompt longer than CENTER
    with pytest.raises(ValueError):
        positions.pack(10 + positions.CENTER, 10, 0)  # CENTER generated tokens


def test_model_dir_config_switches_vllm_to_mrope_and_doubles_hidden(tmp_path: Path) -> None:
    weights = tmp_path / "t3.safetensors"
    weights.write_bytes(b"x")
    t3_config = T3Config()
    directory = build_model_dir(weights, t3_config)
    config = json.loads((directory / "config.json").read_text())
    assert config == hf_config(t3_config)
    assert config["architectures"] == [ARCHITECTURE]
    assert "mrope_section" in config["rope_scaling"]  # vLLM's uses_mrope switch
    assert config["hidden_size"] == 2 * t3_config.hidden_size
    assert (directory / "model.safetensors").resolve() == weights.resolve()
