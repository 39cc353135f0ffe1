"""Builds the Serve application: `import_path: deployments.builder:build_app`."""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

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
    deployment_options: dict[Literal["model", "audio", "ingress"], dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-deployment Serve options merged over the defaults (tests, tuning); "
        "a serve_config.yaml `deployments:` entry still wins over both.",
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
    model_opts = SpeechModelDeployment.get_deployment_options(settings, needs_gpu)
    audio_opts = TextAudioDeployment.get_deployment_options(settings)
    ingress_opts = SpeechIngress.get_deployment_options(settings)
    overrides = app_args.deployment_options
    model_opts.update(overrides.get("model", {}))
    audio_opts.update(overrides.get("audio", {}))
    ingress_opts.update(overrides.get("ingress", {}))
    logger.info("Deployment defaults: model=%s audio=%s ingress=%s",
                model_opts, audio_opts, ingress_opts)
    model = serve.deployment(SpeechModelDeployment).options(**model_opts).bind(settings)
    text_audio = serve.deployment(TextAudioDeployment).options(**audio_opts).bind(model, settings)
    ingress = serve.deployment(SpeechIngress).options(**ingress_opts)
    return ingress.bind(text_audio, model, settings, engine)


# A module-level application, for `serve build deployments.builder:app`.
app = build_app({})
