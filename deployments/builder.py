"""Builds the Serve application: `import_path: deployments.builder:build_app`."""

from __future__ import annotations

import logging
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.deployment import Deployment

from chatterbox_serve.config import EngineName, Settings, load_settings
from chatterbox_serve.engines import resolve_engine_name
from deployments.ingress import SpeechIngress
from deployments.model import SpeechModelDeployment
from deployments.text_audio import TextAudioDeployment

logger = logging.getLogger("ray.serve")


class AppArgs(BaseModel):
    """The `args:` of the application in `serve_config.yaml`."""

    model_config = ConfigDict(extra="forbid")

    engine: EngineName = Field("auto", description="Overridden by CHATTERBOX_ENGINE.")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Settings by env var name; the environment wins."
    )
    dotenv_path: str | None = Field(".env", description="A .env file to read, if present.")
    deployments: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Option overrides by deployment name, merged over each class's defaults.",
    )


def build_settings(args: AppArgs) -> Settings:
    overrides = {"CHATTERBOX_ENGINE": args.engine, **args.settings}
    return load_settings(os.environ, args.dotenv_path, overrides)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Validate the args, load settings once, and bind the three deployments."""
    app_args = AppArgs.model_validate(args or {})
    settings = build_settings(app_args)
    engine = resolve_engine_name(settings)
    needs_gpu = engine == "vllm"
    if engine == "simulated":
        logger.warning("Engine is SIMULATED: responses are synthetic tones, not speech.")
    over = app_args.deployments
    model_opts = {
        **SpeechModelDeployment.get_deployment_options(settings, needs_gpu),
        **over.get("SpeechModelDeployment", {}),
    }
    audio_opts = {
        **TextAudioDeployment.get_deployment_options(settings),
        **over.get("TextAudioDeployment", {}),
    }
    ingress_opts = {
        **SpeechIngress.get_deployment_options(settings),
        **over.get("SpeechIngress", {}),
    }
    logger.info(
        "Deployment defaults: model=%s audio=%s ingress=%s", model_opts, audio_opts, ingress_opts
    )
    model = _deployment(SpeechModelDeployment, model_opts).bind(settings)
    text_audio = _deployment(TextAudioDeployment, audio_opts).bind(model, settings)
    return _deployment(SpeechIngress, ingress_opts).bind(text_audio, model, settings, engine)


def _deployment(cls: type, options: dict[str, Any]) -> Deployment:
    deployment = serve.deployment(cls)
    assert isinstance(deployment, Deployment)
    return deployment.options(**options)


# A module-level application, for `serve build deployments.builder:app`.
app = build_app({})
