"""Operational routes: models, health, ping, config, languages; cluster status and memory."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from chatterbox_serve.families import ModelFamily, model_families, resolve_model
from chatterbox_serve.protocol import (
    ERROR_RESPONSES,
    AudioModel,
    AudioModelList,
    ModelCard,
    ModelList,
)
from chatterbox_serve.text.languages import languages_of
from deployments.auth import bearer_token, require_operator
from deployments.routes import ApiState, State

logger = logging.getLogger("ray.serve")

router = APIRouter()
# Only on a Serve cluster: `build_api` includes it when it has a status source. Node
# addresses, process ids and every tenant's load: for operators only.
cluster_router = APIRouter(dependencies=[Depends(require_operator)])


def served_models(state: ApiState) -> list[str]:
    """The model names the speech routes accept, as every model listing gives them: the
    loaded families, then OpenAI's names for the default family."""
    return [name for name, _ in _families(state)]


def _families(state: ApiState) -> list[tuple[str, ModelFamily]]:
    settings = state.settings
    return model_families(settings.families, settings.engine.default_family)


@router.get("/v1/models", response_model=ModelList)
@router.get("/models", response_model=ModelList, include_in_schema=False)
async def list_models(state: State) -> ModelList:
    """The model names the speech routes accept, each with its family and tags."""
    return ModelList(
        data=[
            ModelCard(id=name, family=family.value, tags=list(family.spec.tags))
            for name, family in _families(state)
        ]
    )


@router.get("/v1/models/{model}", response_model=ModelCard, responses=ERROR_RESPONSES)
@router.get("/models/{model}", response_model=ModelCard, include_in_schema=False)
async def retrieve_model(state: State, model: str) -> ModelCard:
    """One model name the speech routes accept (OpenAI's `models.retrieve`); else 404."""
    settings = state.settings
    family = resolve_model(model, settings.families, settings.engine.default_family)
    return ModelCard(id=model, family=family.value, tags=list(family.spec.tags))


@router.get("/v1/audio/models", response_model=AudioModelList)
@router.get("/audio/models", response_model=AudioModelList, include_in_schema=False)
async def list_audio_models(state: State) -> AudioModelList:
    """The same names in Open WebUI's shape: it discovers speech models here."""
    return AudioModelList(models=[AudioModel(id=m) for m in served_models(state)])


# The model's health answer is reused this long: /health is public and polled, and
# every call would otherwise join the model's queue and count toward its autoscaling.
HEALTH_CACHE_S = 2.0
_health_cache: dict[int, tuple[float, dict[str, Any]]] = {}


async def _model_health(state: ApiState) -> dict[str, Any]:
    key = id(state.backend)
    now = time.monotonic()
    cached = _health_cache.get(key)
    if cached is not None and now - cached[0] < HEALTH_CACHE_S:
        return cached[1]
    try:
        model = await asyncio.wait_for(state.backend.health(), timeout=5.0)
    except Exception as exc:
        logger.warning("health: model not ready: %r", exc)
        model = {"model_ready": False}
    _health_cache[key] = (time.monotonic(), model)
    return model


# HEAD too: load balancers and uptime checkers often probe with it.
@router.api_route("/health", methods=["GET", "HEAD"])
@router.api_route("/v1/health", methods=["GET", "HEAD"], include_in_schema=False)
async def health(state: State, request: Request) -> JSONResponse:
    """200 `healthy` with the model's facts when it answers, else 503 `degraded`.

    Without a valid key (when keys are configured) only the status is given: batch
    and cache figures are for operators, not for anyone who can reach the port.
    """
    model = await _model_health(state)
    ok = bool(model.get("model_ready"))
    # "healthy" and `model_loaded` are the original API's: its web frontend loads voices
    # only on that word, and shows "Model Loading" for ever without that key.
    status = "healthy" if ok else "degraded"
    body: dict[str, Any] = {"status": status, "model_ready": ok, "model_loaded": ok}
    keys = getattr(request.app.state, "api_keys", None)
    authorization = request.headers.get("authorization")
    if keys is None or not keys.enabled or keys.accepts(bearer_token(authorization)):
        watermark = state.settings.audio.watermark
        body = {**body, "engine": state.engine_name, "watermark": watermark, **model}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.api_route("/ping", methods=["GET", "HEAD"])
async def ping() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/config")
@router.get("/v1/config", include_in_schema=False)
async def config(state: State) -> dict[str, Any]:
    """The engine and every setting by its environment variable name (secrets redacted)."""
    return {"engine": state.engine_name, "settings": state.settings.env_view()}


@router.get("/languages")
@router.get("/v1/languages", include_in_schema=False)
async def languages(state: State) -> dict[str, Any]:
    langs = languages_of(state.settings.families)
    return {
        "languages": [{"code": c, "name": n} for c, n in langs.items()],
        "count": len(langs),
    }


@cluster_router.get("/status")
@cluster_router.get("/v1/status", include_in_schema=False)
async def cluster_status(state: State) -> dict[str, Any]:
    """Per deployment: replica states and health, requests in flight and queued."""
    assert state.status is not None  # the router is included only with a status source
    return await state.status.status()


@cluster_router.get("/memory")
@cluster_router.get("/v1/memory", include_in_schema=False)
async def cluster_memory(state: State) -> dict[str, Any]:
    """Per replica: host memory, and GPU memory used and free."""
    assert state.status is not None
    return await state.status.memory()
