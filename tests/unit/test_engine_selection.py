"""Choosing an engine: `auto`, explicit names, unknown names, and the registry's contract."""

import pytest

from chatterbox_serve.config import ConfigError, load_settings
from chatterbox_serve.engines import (
    ENGINES,
    TTSEngine,
    build_engine,
    engine_class,
    resolve_engine_name,
    vllm_available,
)
from chatterbox_serve.engines.simulated import SimulatedEngine


def test_auto_picks_simulated_without_a_gpu_or_checkpoint():
    # CI installs vLLM (for its contract tests) but has no GPU; either way, no vLLM.
    assert vllm_available() in (True, False)
    settings = load_settings({"CHATTERBOX_ENGINE": "auto"}, dotenv_path=None)
    assert resolve_engine_name(settings) == "simulated"
    assert isinstance(build_engine(settings), SimulatedEngine)


def test_simulated_engine_is_built_from_its_settings_section():
    settings = load_settings(
        {"CHATTERBOX_ENGINE": "simulated", "CHATTERBOX_SIM_BASE_S": "0.125"}, dotenv_path=None
    )
    engine = build_engine(settings)
    assert isinstance(engine, SimulatedEngine) and engine.config.base_s == 0.125


def test_every_registered_engine_imports_without_its_extra_and_says_if_it_needs_a_gpu():
    # The vLLM engine module imports vLLM only in `start`, so the builder can read
    # `needs_gpu` on a machine without the extra.
    needs = {name: engine_class(path).needs_gpu for name, path in ENGINES.items()}
    assert needs == {"simulated": False, "vllm": True, "torch": False}


def test_an_unknown_engine_name_is_refused_with_the_allowed_names():
    with pytest.raises(ConfigError, match="CHATTERBOX_ENGINE.*allowed: auto, simulated, vllm"):
        load_settings({"CHATTERBOX_ENGINE": "tpu"}, dotenv_path=None)


def test_a_registry_entry_that_is_not_an_engine_is_refused():
    with pytest.raises(ConfigError, match="not a TTSEngine"):
        engine_class("chatterbox_serve.config:Settings")
    assert issubclass(engine_class("simulated"), TTSEngine)
