"""The application builder and serve_config.yaml, checked without starting Ray."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from chatterbox_serve.config import ConfigError
from chatterbox_serve.engines import ENGINES
from deployments.builder import build_app
from deployments.defaults import DEPLOYMENTS

ROOT = Path(__file__).resolve().parents[2]


def _deployments(app):
    ingress = app._bound_deployment
    audio = ingress.init_args[0]._bound_deployment
    model = ingress.init_args[1]._bound_deployment
    return ingress, audio, model


def _job_worker(app):
    return app._bound_deployment.init_args[4]._bound_deployment


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
    assert model.user_config == {"batch_wait_timeout_s": 0.0}
    assert model.max_ongoing_requests >= 24


def test_bad_args_and_bad_settings_stop_the_build():
    with pytest.raises(ConfigError, match="CHATTERBOX_ENGINE"):
        build_app({"engine": "tpu", "dotenv_path": None})
    with pytest.raises(ValidationError):
        build_app({"enigne": "vllm"})
    with pytest.raises(ConfigError, match="VLLM_MAX_BATCH_SIZE"):
        build_app({"settings": {"VLLM_MAX_BATCH_SIZE": 0}, "dotenv_path": None})
    with pytest.raises(ConfigError, match="SpeechModelDeploymnet"):
        build_app({"deployments": {"SpeechModelDeploymnet": {}}, "dotenv_path": None})


def test_the_model_replica_builds_the_engine_resolved_once(monkeypatch):
    monkeypatch.delenv("CHATTERBOX_ENGINE", raising=False)
    ingress, _, model = _deployments(build_app({"engine": "auto", "dotenv_path": None}))
    assert ingress.init_args[3] == "simulated"  # no vllm extra here
    assert model.init_args[1] == ENGINES["simulated"]


def test_overrides_merge_key_by_key_over_the_defaults(monkeypatch):
    monkeypatch.delenv("CHATTERBOX_ENGINE", raising=False)
    app = build_app(
        {
            "engine": "simulated",
            "dotenv_path": None,
            "deployments": {"TextAudioDeployment": {"autoscaling_config": {"max_replicas": 3}}},
        }
    )
    _, audio, _ = _deployments(app)
    autoscaling = audio._deployment_config.autoscaling_config
    assert autoscaling.max_replicas == 3
    assert autoscaling.target_ongoing_requests == 16  # kept from the defaults table


def test_a_serve_batch_size_other_than_the_engine_batch_size_is_refused(monkeypatch):
    monkeypatch.delenv("CHATTERBOX_ENGINE", raising=False)
    with pytest.raises(ConfigError, match=r"set VLLM_MAX_BATCH_SIZE \(now 10\)"):
        build_app(
            {
                "engine": "simulated",
                "dotenv_path": None,
                "deployments": {"SpeechModelDeployment": {"user_config": {"max_batch_size": 16}}},
            }
        )


def test_the_builder_logs_the_merged_options(monkeypatch):
    # Ray's "ray.serve" logger does not propagate to pytest's handler; listen on it.
    monkeypatch.delenv("CHATTERBOX_ENGINE", raising=False)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    serve_logger = logging.getLogger("ray.serve")
    serve_logger.addHandler(handler)
    monkeypatch.setattr(serve_logger, "level", logging.INFO)
    try:
        build_app(
            {
                "engine": "simulated",
                "dotenv_path": None,
                "deployments": {"TextAudioDeployment": {"autoscaling_config": {"max_replicas": 3}}},
            }
        )
    finally:
        serve_logger.removeHandler(handler)
    logged = "\n".join(r.getMessage() for r in records)
    assert "deployment options" in logged
    assert "'max_replicas': 3, 'target_ongoing_requests': 16" in logged


def test_serve_config_builds_and_has_no_serve_level_deployment_options(monkeypatch):
    monkeypatch.delenv("CHATTERBOX_ENGINE", raising=False)
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    assert schema.http_options.port == 8000
    assert schema.http_options.request_timeout_s >= 300
    (application,) = config["applications"]
    assert application["import_path"] == "deployments.builder:build_app"
    # Serve's own list would replace whole option dicts and bypass the builder.
    assert "deployments" not in application
    app = build_app({**application["args"], "dotenv_path": None})
    ingress, audio, model = _deployments(app)
    worker = _job_worker(app)
    assert [d.name for d in (ingress, audio, model, worker)] == list(DEPLOYMENTS)
    # The job worker feeds the model deployment, on CPU, always at least one replica.
    assert worker.init_args[0]["chatterbox-multilingual"]._bound_deployment is model
    assert audio.init_args[0]["chatterbox-multilingual"]._bound_deployment is model
    assert worker.ray_actor_options.get("num_gpus", 0) == 0
    assert worker._deployment_config.autoscaling_config.min_replicas >= 1


def test_importing_the_builder_builds_nothing_and_serve_build_has_its_own_module():
    import subprocess
    import sys

    import deployments.builder

    assert not hasattr(deployments.builder, "app")  # no import-time app, no env read
    code = (
        "from ray.serve import Application; import deployments.app as m; "
        "assert isinstance(m.app, Application)"
    )
    env = {"CHATTERBOX_ENGINE": "simulated", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_each_loaded_family_is_its_own_model_deployment(monkeypatch):
    monkeypatch.delenv("CHATTERBOX_ENGINE", raising=False)
    settings = {
        "CHATTERBOX_MODELS": "chatterbox-multilingual,chatterbox-turbo",
        "CHATTERBOX_DEFAULT_MODEL": "chatterbox-turbo",
    }
    overrides = {
        "SpeechModelDeployment": {"autoscaling_config": {"max_replicas": 6}},
        "SpeechModelDeployment-chatterbox-turbo": {
            "autoscaling_config": {"min_replicas": 2, "initial_replicas": 2}
        },
    }
    app = build_app(
        {"engine": "simulated", "dotenv_path": None, "settings": settings, "deployments": overrides}
    )
    ingress, audio, default_model = _deployments(app)
    models = {name: h._bound_deployment for name, h in audio.init_args[0].items()}
    assert list(models) == ["chatterbox-multilingual", "chatterbox-turbo"]
    assert [d.name for d in models.values()] == [
        "SpeechModelDeployment-chatterbox-multilingual",
        "SpeechModelDeployment-chatterbox-turbo",
    ]
    # Each engine is built for its one family; the ingress asks the default's health.
    assert [d.init_args[0].family.value for d in models.values()] == list(models)
    assert default_model is models["chatterbox-turbo"]
    worker = _job_worker(app)
    assert {n: h._bound_deployment for n, h in worker.init_args[0].items()} == models
    multi, turbo = (d._deployment_config.autoscaling_config for d in models.values())
    assert (multi.max_replicas, multi.min_replicas) == (6, 1)
    assert (turbo.max_replicas, turbo.min_replicas) == (6, 2)


def test_a_per_family_override_needs_that_family_loaded(monkeypatch):
    monkeypatch.delenv("CHATTERBOX_ENGINE", raising=False)
    with pytest.raises(ConfigError, match="unknown deployments"):
        build_app(
            {
                "engine": "simulated",
                "dotenv_path": None,
                "deployments": {"SpeechModelDeployment-chatterbox-turbo": {"max_replicas": 2}},
            }
        )
