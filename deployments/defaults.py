"""The one table of deployment options, and how user overrides merge over it.

Every Serve option of the three deployments has its default here and nowhere else:
not on the deployment classes, not in `serve_config.yaml`, not in `k8s/`. Users
override options through the application's `args.deployments`, which the builder
merges over this table one level deep (so `autoscaling_config: {max_replicas: 8}`
keeps the other autoscaling keys) and logs. Serve's own per-deployment section of a
config file replaces `ray_actor_options`, `user_config` and `autoscaling_config` as
whole dicts, bypassing the builder, so our configs leave it out (a test checks).

With several model families loaded (CHATTERBOX_MODELS), each family has its own model
deployment, `SpeechModelDeployment-<family>`: overrides of `SpeechModelDeployment`
apply to every one of them, then overrides under the family's own name. With one
family, its deployment is `SpeechModelDeployment` as always.

The model's batching is not an option here: the engine class declares it
(`TTSEngine.batch_limits`: `VLLM_MAX_BATCH_SIZE` items per call, its calls in
flight) and the model replica builds its batch queue from that. `user_config`
carries only the batch wait; a `max_batch_size` in it is refused.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from chatterbox_serve.config import ConfigError, Settings
from chatterbox_serve.families import ModelFamily

INGRESS = "SpeechIngress"
TEXT_AUDIO = "TextAudioDeployment"
MODEL = "SpeechModelDeployment"
JOB_WORKER = "JobWorkerDeployment"
DEPLOYMENTS = (INGRESS, TEXT_AUDIO, MODEL, JOB_WORKER)

# Options whose value is a dict that the builder merges key by key.
NESTED_OPTIONS = frozenset({"ray_actor_options", "autoscaling_config", "user_config"})


def _lifecycle(graceful_shutdown_timeout_s: float) -> dict[str, Any]:
    return {
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        "graceful_shutdown_timeout_s": graceful_shutdown_timeout_s,
        "graceful_shutdown_wait_loop_s": 2,
    }


def deployment_defaults(settings: Settings, needs_gpu: bool) -> dict[str, dict[str, Any]]:
    """Options by deployment name for these settings; `needs_gpu` is the engine class's."""
    batch = settings.engine.max_batch_size
    jobs = settings.jobs.jobs_per_worker
    return {
        INGRESS: {
            "ray_actor_options": {"num_cpus": 0.25},
            "max_ongoing_requests": 256,
            "max_queued_requests": 1024,
            "autoscaling_config": {
                "min_replicas": 1,
                "initial_replicas": 1,
                "max_replicas": 4,
                "target_ongoing_requests": 64,
                "upscale_delay_s": 10,
                "downscale_delay_s": 300,
            },
            **_lifecycle(30),
        },
        TEXT_AUDIO: {
            "ray_actor_options": {"num_cpus": 0.5},
            "max_ongoing_requests": 64,
            "max_queued_requests": 512,
            "autoscaling_config": {
                "min_replicas": 1,
                "initial_replicas": 1,
                "max_replicas": 8,
                "target_ongoing_requests": 16,
                "upscale_delay_s": 10,
                "downscale_delay_s": 300,
            },
            **_lifecycle(30),
        },
        MODEL: {
            "ray_actor_options": {
                "num_gpus": 1 if needs_gpu else 0,
                "num_cpus": 1 if needs_gpu else 0.5,
            },
            # At least max_batch_size x the engine's calls in flight, or batches never
            # fill.
            # 64x: chunks wait at the replica's batch gate, not in the callers' routers,
            # whose retries back off up to 0.5 s once a replica is full and then arrive
            # as one- and two-item batches (docs/PERFORMANCE.md).
            "max_ongoing_requests": 64 * batch,
            "max_queued_requests": 64 * batch,
            "autoscaling_config": {
                "min_replicas": 1,
                "initial_replicas": 1,
                "max_replicas": 4,
                "target_ongoing_requests": 2 * batch,
                "upscale_delay_s": 30,
                "downscale_delay_s": 600,
            },
            # The batch gate forms batches while the engine runs; waiting on an idle
            # engine only adds latency (docs/PERFORMANCE.md).
            "user_config": {"batch_wait_timeout_s": 0.0},
            **_lifecycle(60),
        },
        JOB_WORKER: {
            "ray_actor_options": {"num_cpus": 0.5},
            # One ongoing request per running job (`run_job` lasts the whole job), so the
            # autoscaler adds a worker when each has its share of jobs running.
            "max_ongoing_requests": jobs,
            "max_queued_requests": 64 * jobs,
            "autoscaling_config": {
                "min_replicas": 1,
                "initial_replicas": 1,
                "max_replicas": 4,
                "target_ongoing_requests": jobs,
                "upscale_delay_s": 30,
                "downscale_delay_s": 600,
            },
            # Stopping cancels its runs; their leases lapse and another worker resumes them.
            **_lifecycle(10),
        },
    }


def merge_options(
    defaults: Mapping[str, dict[str, Any]], overrides: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """`overrides` over `defaults`, nested option dicts key by key.

    Raises:
        ConfigError: an override names an unknown deployment.
    """
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ConfigError(f"args.deployments names unknown deployments {sorted(unknown)}")
    merged = copy.deepcopy(dict(defaults))
    for name, options in overrides.items():
        for key, value in options.items():
            if key in NESTED_OPTIONS and isinstance(value, Mapping):
                merged[name][key] = {**merged[name].get(key, {}), **value}
            else:
                merged[name][key] = copy.deepcopy(value)
    return merged


def model_deployment_names(families: Sequence[ModelFamily]) -> dict[ModelFamily, str]:
    """The model deployment of each family: `SpeechModelDeployment` alone, else by family."""
    if len(families) == 1:
        return {families[0]: MODEL}
    return {f: f"{MODEL}-{f.value}" for f in families}


def merge_model_options(
    defaults: Mapping[str, dict[str, Any]],
    overrides: Mapping[str, Mapping[str, Any]],
    families: Sequence[ModelFamily],
) -> dict[str, dict[str, Any]]:
    """`merge_options` with one model entry per family's deployment.

    Each family's model deployment takes the model's defaults, the overrides of
    `SpeechModelDeployment`, then those under its own name.

    Raises:
        ConfigError: an override names an unknown deployment.
    """
    names = model_deployment_names(families)
    own = {n for n in names.values() if n != MODEL}
    merged = merge_options(defaults, {k: v for k, v in overrides.items() if k not in own})
    for name in own:
        merged[name] = merge_options({MODEL: merged[MODEL]}, {MODEL: overrides.get(name, {})})[
            MODEL
        ]
    if MODEL not in names.values():
        del merged[MODEL]
    return merged


def check_batch_size(options: Mapping[str, dict[str, Any]], settings: Settings) -> None:
    """Refuse a Serve batch size in `user_config`: the engine's (`VLLM_MAX_BATCH_SIZE`) rules."""
    for name in model_deployment_names(settings.families).values():
        serve_batch = options[name].get("user_config", {}).get("max_batch_size")
        if serve_batch is not None:
            raise ConfigError(
                f"{name} user_config.max_batch_size={serve_batch!r} is not an option; set "
                f"VLLM_MAX_BATCH_SIZE (now {settings.engine.max_batch_size}), which the "
                "engine's batching follows."
            )
