"""The application builder and serve_config.yaml, checked without starting Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from chatterbox_serve.config import ConfigError
from deployments.builder import build_app

ROOT = Path(__file__).resolve().parents[2]


def _deployments(app):
    ingress = app._bound_deployment
    audio = ingress.init_args[0]._bound_deployment
    model = ingress.init_args[1]._bound_deployment
    return ingress, audio, model


def test_simulated_app_asks_for_no_gpu(monkeypatch):
    monkeypatch.delenv("CHATTERBOX_ENGINE", raising=False)
    ingress, audio, model = _deployments(build_app({"engine": "simulated", "dotenv_path": None}))
    assert [d.name for d in (ingress, audio, model)] == [
        "SpeechIngress",
        "TextAudioDeployment",
        "SpeechModelDeployment",
    ]
    assert model.ray_actor_options.get("num_gpus", 0) == 0
    assert ingress.init_args[3] == "simulated"


def test_vllm_app_asks_for_one_gpu_per_model_replica(monkeypatch):
    monkeypatch.delenv("CHATTERBOX_ENGINE", raising=False)
    _, audio, model = _deployments(build_app({"engine": "vllm", "dotenv_path": None}))
    assert model.ray_actor_options["num_gpus"] == 1
    assert audio.ray_actor_options.get("num_gpus", 0) == 0


def test_env_var_overrides_engine_arg(monkeypatch):
    monkeypatch.setenv("CHATTERBOX_ENGINE", "simulated")
    _, _, model = _deployments(build_app({"engine": "vllm", "dotenv_path": None}))
    assert model.ray_actor_options.get("num_gpus", 0) == 0


def test_batch_settings_reach_user_config_and_ongoing_limit(monkeypatch):
    monkeypatch.delenv("CHATTERBOX_ENGINE", raising=False)
    app = build_app(
        {"engine": "simulated", "dotenv_path": None, "settings": {"VLLM_MAX_BATCH_SIZE": 24}}
    )
    _, _, model = _deployments(app)
    assert model.user_config["max_batch_size"] == 24
    assert model.max_ongoing_requests >= 24


def test_bad_args_and_bad_settings_stop_the_build():
    with pytest.raises(ValidationError):
        build_app({"engine": "tpu"})
    with pytest.raises(ValidationError):
        build_app({"enigne": "vllm"})
    with pytest.raises(ConfigError, match="VLLM_MAX_BATCH_SIZE"):
        build_app({"settings": {"VLLM_MAX_BATCH_SIZE": 0}, "dotenv_path": None})


def test_serve_config_declares_all_three_deployments_validly():
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    assert schema.http_options.port == 8000
    assert schema.http_options.request_timeout_s >= 300
    (application,) = config["applications"]
    assert application["import_path"] == "deployments.builder:build_app"
    by_name = {d["name"]: d for d in application["deployments"]}
    assert set(by_name) == {"SpeechIngress", "TextAudioDeployment", "SpeechModelDeployment"}
    for d in by_name.values():
        for key in (
            "autoscaling_config",
            "max_ongoing_requests",
            "max_queued_requests",
            "health_check_period_s",
            "graceful_shutdown_timeout_s",
        ):
            assert key in d, (d["name"], key)
    model = by_name["SpeechModelDeployment"]
    assert model["max_ongoing_requests"] >= model["user_config"]["max_batch_size"]
    # ray_actor_options replaces the code's dict whole: the builder must own num_gpus.
    assert "ray_actor_options" not in model
