import pytest

from chatterbox_serve.config import ConfigError, env_aliases, env_names, load_settings


def test_defaults_match_the_documented_names_and_values():
    view = load_settings({}, dotenv_path=None).env_view()
    expected = {
        "VLLM_MAX_BATCH_SIZE": 10,
        # The original's 1000 cannot hold a 280-character chunk's prompt plus upstream's
        # 1000 speech tokens; ours is 2048 (at most 4096: engines/vllm/positions.py).
        "VLLM_MAX_MODEL_LEN": 2048,
        "VLLM_COMPILE": False,
        "VLLM_S3GEN_FP16": False,
        "VLLM_DIFFUSION_STEPS": 10,
        "CHATTERBOX_CFG_SCALE": 0.5,
        "EXAGGERATION": 0.5,
        "TEMPERATURE": 0.8,
        "MAX_CHUNK_LENGTH": 280,
        "MAX_TOTAL_LENGTH": 4096,
        "VOICE_LIBRARY_DIR": "./voices",
        "USE_MULTILINGUAL_MODEL": True,
        "CORS_ORIGINS": "*",
    }
    for key, value in expected.items():
        assert view[key] == value, key


def test_environment_beats_dotenv_beats_overrides(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("MAX_CHUNK_LENGTH=200\nTEMPERATURE=0.3\n")
    s = load_settings(
        {"MAX_CHUNK_LENGTH": "150"},
        dotenv_path=dotenv,
        overrides={"MAX_CHUNK_LENGTH": 100, "TEMPERATURE": 0.9, "EXAGGERATION": 0.7},
    )
    assert s.chunking.max_chunk_length == 150
    assert s.generation.temperature == 0.3
    assert s.generation.exaggeration == 0.7


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("VLLM_MAX_BATCH_SIZE", "0", ">= 1"),
        ("VLLM_COMPILE", "maybe", "true or false"),
        ("TEMPERATURE", "9", "<= 5.0"),
        ("CHATTERBOX_ENGINE", "tpu", "simulated"),
        ("MAX_CHUNK_LENGTH", "abc", "integer"),
    ],
)
def test_invalid_values_name_the_variable_and_the_allowed_range(var, value, fragment):
    with pytest.raises(ConfigError) as info:
        load_settings({var: value}, dotenv_path=None)
    assert var in str(info.value)
    assert fragment in str(info.value)


def test_unknown_override_key_is_rejected():
    with pytest.raises(ConfigError, match="MAX_CHUNK_LEN"):
        load_settings({}, dotenv_path=None, overrides={"MAX_CHUNK_LEN": 5})


def test_unknown_chatterbox_env_var_warns(caplog):
    load_settings({"CHATTERBOX_TYPO": "1"}, dotenv_path=None)
    assert "CHATTERBOX_TYPO" in caplog.text


def test_every_setting_has_a_unique_env_name():
    names = env_names()
    assert len(names) == len(set(names))


def test_an_alias_sets_its_setting_and_the_name_wins_over_it():
    assert load_settings({"CFG_WEIGHT": "0.2"}, dotenv_path=None).generation.cfg_weight == 0.2
    both = {"CFG_WEIGHT": "0.2", "CHATTERBOX_CFG_SCALE": "0.7"}
    assert load_settings(both, dotenv_path=None).generation.cfg_weight == 0.7
    from_args = load_settings({}, dotenv_path=None, overrides={"CFG_WEIGHT": 0.1})
    assert from_args.generation.cfg_weight == 0.1
    assert env_aliases() == {"CFG_WEIGHT": "CHATTERBOX_CFG_SCALE"}
    assert "CFG_WEIGHT" not in env_names()


def test_generation_defaults_carry_the_parameter_models_bounds():
    with pytest.raises(ConfigError, match=r"CHATTERBOX_CFG_SCALE=.*<= 1.0"):
        load_settings({"CFG_WEIGHT": "1.5"}, dotenv_path=None)
