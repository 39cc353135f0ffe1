"""Builds the Serve application: `import_path: deployments.builder:build_app`.

The engine is resolved here, once: `auto` becomes a registry name, its class decides
whether the model replica asks for a GPU, and its import path is bound into the
model deployment, which builds exactly that engine. Deployment options come from
the one table in `deployments/defaults.py`, with `args.deployments` merged over it.
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
    MODEL,
    TEXT_AUDIO,
    check_batch_size,
    deployment_defaults,
    merge_options,
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
    options = merge_options(deployment_defaults(settings, needs_gpu), app_args.deployments)
    check_batch_size(options, settings)
    logger.info("Engine %s (%s); deployment options: %s", engine, engine_path, options)
    model = _deployment(SpeechModelDeployment, options[MODEL]).bind(settings, engine_path)
    text_audio = _deployment(TextAudioDeployment, options[TEXT_AUDIO]).bind(
        model, settings, cls.streams_with(settings)
    )
    worker = _deployment(JobWorkerDeployment, options[JOB_WORKER]).bind(model, settings)
    ingress = _deployment(SpeechIngress, options[INGRESS])
    return ingress.bind(text_audio, model, settings, engine, worker)


def _deployment(cls: type, options: dict[str, Any]) -> Deployment:
    deployment = serve.deployment(cls)
    assert isinstance(deployment, Deployment)
    return deployment.options(**options)
