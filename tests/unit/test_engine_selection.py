import pytest

from chatterbox_serve.config import load_settings
from chatterbox_serve.engines import build_engine, resolve_engine_name, vllm_available
from chatterbox_serve.engines.simulated import SimulatedEngine


def test_auto_picks_simulated_without_the_vllm_extra():
    assert not vllm_available()  # CI installs no vLLM
    settings = load_settings({"CHATTERBOX_ENGINE": "auto"}, dotenv_path=None)
    assert resolve_engine_name(settings) == "simulated"
    assert isinstance(build_engine(settings), SimulatedEngine)


@pytest.mark.parametrize("name", ["simulated", "vllm"])
def test_explicit_choice_is_kept(name):
    settings = load_settings({"CHATTERBOX_ENGINE": name}, dotenv_path=None)
    assert resolve_engine_name(settings) == name
