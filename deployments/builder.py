"""Builds the Serve application: `import_path: deployments.builder:build_app`.

The engine is resolved here, once: `auto` becomes a registry name, its class decides
whether the model replica asks for a GPU, and its import path is bound into the
model deployment, which builds exactly that engine. Deployment options come from
the one table in `deployments/defaults.py`, with `args.deployments` merged over it.

Each loaded model family (CHATTERBOX_MODELS) is its own model deployment, built from
`Settings.for_family`, so it autoscales alone and a family not loaded costs nothing.
The audio deployment and the job worker get every family's handle by family name
(`deployments/model_routing.py`); the ingress gets the default family's for `/health`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.deployment import Deployment

from chatterbox_serve.config import Settings, load_settings
from chatterbox_serve.engines import ENGINES, engine_class, resolve_engine_name
from deployments.defaults import (
    INGRESS,
    JOB_WORKER,
    TEXT_AUDIO,
    check_batch_size,
    deployment_defaults,
    merge_model_options,
    model_deployment_names,
)
from deployments.ingress import SpeechIngress
from deployments.job_worker import JobWorkerDeployment
from deployments.model import SpeechModelDeployment
from deployments.text_audio import TextAudioDeployment

logger = logging.getLogger("ray.serve")


class AppArgs(BaseModel):
    """The `args:` of the application in `serve_config.yaml`."""

    model_config = ConfigDict(extra="forbid")

    engine: str = Field(
        "auto", description="An engine name, or auto; CHATTERBOX_ENGINE overrides it."
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Settings by env var name; the environment wins."
    )
    dotenv_path: str | None = Field(".env", description="A .env file to read, if present.")
    deployments: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Option overrides by deployment name, merged over deployments/defaults.py.",
    )


def build_settings(args: AppArgs) -> Settings:
    overrides = {"CHATTERBOX_ENGINE": args.engine, **args.settings}
    return load_settings(os.environ, args.dotenv_path, overrides)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Validate the args, load settings and resolve the engine once, and bind the deployments.

    Raises:
        ConfigError: a bad setting, an unknown engine or deployment, or a Serve batch
            size in `user_config` (the engine's `VLLM_MAX_BATCH_SIZE` rules).
    """
    app_args = AppArgs.model_validate(args or {})
    settings = build_settings(app_args)
    engine = resolve_engine_name(settings)
    engine_path = ENGINES[engine]
    cls = engine_class(engine_path)
    needs_gpu = cls.needs_gpu
    if engine == "simulated":
        logger.warning("Engine is SIMULATED: responses are synthetic tones, not speech.")
    families = settings.families
    defaults = deployment_defaults(settings, needs_gpu)
    options = merge_model_options(defaults, app_args.deployments, families)
    check_batch_size(options, settings)
    logger.info(
        "Engine %s (%s); families %s; deployment options: %s",
        engine,
        engine_path,
        ", ".join(families),
        options,
    )
    models = {
        family.value: _deployment(SpeechModelDeployment, options[name])
        .options(name=name)
        .bind(settings.for_family(family), engine_path)
        for family, name in model_deployment_names(families).items()
    }
    streams = any(cls.streams_with(settings.for_family(f)) for f in families)
    text_audio = _deployment(TextAudioDeployment, options[TEXT_AUDIO]).bind(
        models, settings, streams
    )
    worker = _deployment(JobWorkerDeployment, options[JOB_WORKER]).bind(models, settings)
    ingress = _deployment(SpeechIngress, options[INGRESS])
    default_model = models[settings.engine.default_family.value]
    return ingress.bind(text_audio, default_model, settings, engine, worker)


def _deployment(cls: type, options: dict[str, Any]) -> Deployment:
    deployment = serve.deployment(cls)
    assert isinstance(deployment, Deployment)
    return deployment.options(**options)
