"""One defaults table: the YAML files carry only overrides that really differ from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from chatterbox_serve.config import load_settings
from deployments.defaults import DEPLOYMENTS, deployment_defaults

ROOT = Path(__file__).resolve().parents[2]


def _serve_configs() -> dict[str, dict[str, Any]]:
    manifest = yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())
    return {
        "serve_config.yaml": yaml.safe_load((ROOT / "serve_config.yaml").read_text()),
        "k8s/rayservice.yaml": yaml.safe_load(manifest["spec"]["serveConfigV2"]),
    }


def restated_defaults(config: dict[str, Any]) -> list[str]:
    """Options a serve config sets to a value the defaults table already has, or contradicts.

    A value equal to the default is noise that drifts; a Serve-level `deployments:` entry
    that differs silently overrides the table (Serve applies it after the builder).
    """
    found = []
    for app in config["applications"]:
        args = app.get("args", {})
        settings = load_settings({}, None, {"CHATTERBOX_ENGINE": "simulated", **args["settings"]})
        for needs_gpu in (False, True):
            table = deployment_defaults(settings, needs_gpu)
            for name, options in args.get("deployments", {}).items():
                for key, value in options.items():
                    default = table[name].get(key)
                    if isinstance(value, dict) and isinstance(default, dict):
                        found += [
                            f"args.deployments.{name}.{key}.{k}={v!r} restates the default"
                            for k, v in value.items()
                            if default.get(k) == v and not (key == "ray_actor_options")
                        ]
                    elif default == value:
                        found.append(f"args.deployments.{name}.{key}={value!r} is the default")
            for entry in app.get("deployments", []):
                for key, value in entry.items():
                    if key != "name" and key in table[entry["name"]]:
                        if table[entry["name"]][key] != value:
                            found.append(
                                f"deployments[{entry['name']}].{key}={value!r} differs from the "
                                f"default {table[entry['name']][key]!r}"
                            )
    return sorted(set(found))


@pytest.mark.parametrize("name", ["serve_config.yaml", "k8s/rayservice.yaml"])
def test_the_shipped_configs_restate_no_default(name):
    assert restated_defaults(_serve_configs()[name]) == []


def test_a_config_restating_a_default_with_another_value_fails():
    # A disagreement once found: 1024 in the YAML, 64 x VLLM_MAX_BATCH_SIZE in code.
    config = _serve_configs()["serve_config.yaml"]
    config["applications"][0]["deployments"] = [
        {"name": "SpeechModelDeployment", "max_ongoing_requests": 1024}
    ]
    assert restated_defaults(config) == [
        "deployments[SpeechModelDeployment].max_ongoing_requests=1024 differs from the default 640"
    ]


def test_an_override_equal_to_the_default_fails():
    config = _serve_configs()["serve_config.yaml"]
    config["applications"][0]["args"]["deployments"] = {
        "TextAudioDeployment": {"max_ongoing_requests": 64}
    }
    assert restated_defaults(config) == [
        "args.deployments.TextAudioDeployment.max_ongoing_requests=64 is the default"
    ]


def test_model_options_follow_the_one_batch_setting():
    settings = load_settings({"VLLM_MAX_BATCH_SIZE": "16"}, None)
    model = deployment_defaults(settings, needs_gpu=True)["SpeechModelDeployment"]
    assert "max_batch_size" not in model["user_config"]
    assert model["max_ongoing_requests"] >= 16  # or batches never fill
    assert model["autoscaling_config"]["target_ongoing_requests"] == 32
    assert model["ray_actor_options"]["num_gpus"] == 1
    assert list(deployment_defaults(settings, False)) == list(DEPLOYMENTS)
