"""The HTTP ingress: OpenAI-compatible routes over a `SpeechBackend`.

`build_api` makes the FastAPI app from its collaborators, so tests run it in-process
over a `LocalBackend`; `SpeechIngress` builds it inside a Serve replica over handles.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.concurrency import run_in_threadpool

from chatterbox_serve.config import Settings
from chatterbox_serve.errors import EngineOverloadedError
from chatterbox_serve.languages import languages_for
from chatterbox_serve.pipeline import AudioPiece, RenderedSpeech, SpeechBackend, SpeechJob
from chatterbox_serve.protocol import (
    ERROR_RESPONSES,
    ModelCard,
    ModelList,
    SpeechRequest,
    sse_event,
)
from chatterbox_serve.voice_library import VoiceLibrary, build_voice_library
from chatterbox_serve.voices import EmptyVoiceLibrary, ResolvedVoice, VoiceLookup, resolve_voice
from deployments.auth import install_auth
from deployments.cluster_status import (
    ClusterStatus,
    LoadTrackingMiddleware,
    ReplicaLoad,
    StatusReporter,
    StatusSource,
)
from deployments.http import (
    REQUEST_ID_HEADER,
    BodyLimitMiddleware,
    install_error_handlers,
    request_id_of,
)
from deployments.metrics import IngressMetrics
from deployments.voice_routes import build_voice_router
from deployments.web import build_web_router

logger = logging.getLogger("ray.serve")

# Crash debris younger than this may be an upload another replica is finishing.
VOICE_DEBRIS_MIN_AGE_S = 3600.0


def sweep_voice_debris(library: VoiceLibrary, min_age_s: float = VOICE_DEBRIS_MIN_AGE_S) -> None:
    """Remove voices crashes left unreachable; log, never raise: serving comes first."""
    try:
        removed = library.sweep_orphans(min_age_s)
    except Exception:
        logger.exception("Voice library sweep failed; the next replica start retries it.")
        return
    if removed:
        logger.info("Voice library sweep removed %d unreachable voices: %s", len(removed), removed)


SPEECH_PATHS = ("/v1/audio/speech", "/audio/speech", "/tts")
STREAM_PATHS = ("/v1/audio/speech/stream", "/audio/speech/stream", "/tts/stream")


def build_api(
    settings: Settings,
    backend: SpeechBackend,
    engine_name: str,
    voices: VoiceLookup | None = None,
    status: StatusSource | None = None,
) -> FastAPI:
    """The FastAPI app with every route, error handler and middleware installed.

    `/status` and `/memory` exist only with a `status` source (a Serve cluster).
    """
    app = FastAPI(title="chatterbox-serve", version="0.1.0")
    library = voices or EmptyVoiceLibrary()
    install_error_handlers(app)
    # The last middleware added runs first: CORS, then the API key, then the body limit,
    # so no body is read for an unauthenticated caller and every error has CORS headers.
    app.add_middleware(
        BodyLimitMiddleware,
        json_limit=settings.server.max_json_body_bytes,
        upload_limit=settings.server.max_upload_bytes,
    )
    install_auth(app, settings)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[o.strip() for o in settings.server.cors_origins.split(",")],
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["*"],
    )

    @app.middleware("http")
    async def tag_responses(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["X-Chatterbox-Engine"] = engine_name
        if REQUEST_ID_HEADER not in request.headers:  # Serve's proxy echoes its own id
            response.headers[REQUEST_ID_HEADER] = request_id_of(request)
        return response

    async def speech(
        body: SpeechRequest,
        request: Request,
        force_stream: bool,
        voice: ResolvedVoice | None = None,
    ) -> Response:
        rid = request_id_of(request)
        if voice is None:  # library reads block on storage
            voice = await run_in_threadpool(resolve_voice, body.voice_key, library)
        stream_format = "audio" if force_stream else body.stream_format
        job = body.to_job(settings, voice, rid, streaming=stream_format is not None)
        request.state.response_format = job.format.value  # a metrics tag
        headers = _job_headers(job)
        if stream_format is None:
            rendered = await _overload_mapped(backend.render(job))
            return _file_response(rendered, headers)
        pieces = await _start_stream(backend, job)
        if stream_format == "sse":
            return StreamingResponse(
                _sse(pieces, rid), media_type="text/event-stream", headers=headers
            )
        return StreamingResponse(
            _raw(pieces, rid), media_type=job.format.media_type, headers=headers
        )

    async def create_speech(body: SpeechRequest, request: Request) -> Response:
        """Speak `input`: a whole file, or streamed when `stream_format` is set."""
        return await speech(body, request, force_stream=False)

    async def stream_speech(body: SpeechRequest, request: Request) -> Response:
        """Speak `input`, always streamed as encoded audio."""
        return await speech(body, request, force_stream=True)

    for paths, endpoint in ((SPEECH_PATHS, create_speech), (STREAM_PATHS, stream_speech)):
        for path in paths:
            app.add_api_route(
                path,
                endpoint,
                methods=["POST"],
                responses=ERROR_RESPONSES,
                response_class=Response,
                include_in_schema=path == paths[0],
            )

    if isinstance(library, VoiceLibrary):
        app.include_router(build_voice_router(library, speech))
    app.include_router(build_web_router())

    served = [
        "chatterbox-multilingual" if settings.engine.use_multilingual_model else "chatterbox",
        "tts-1",
        "tts-1-hd",
        "gpt-4o-mini-tts",
    ]

    @app.get("/v1/models", response_model=ModelList)
    @app.get("/models", response_model=ModelList, include_in_schema=False)
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=m) for m in served])

    @app.get("/health")
    @app.get("/v1/health", include_in_schema=False)
    async def health() -> JSONResponse:
        try:
            model = await asyncio.wait_for(backend.health(), timeout=5.0)
        except Exception as exc:
            logger.warning("health: model not ready: %r", exc)
            model = {"model_ready": False}
        ok = bool(model.get("model_ready"))
        body = {"status": "ok" if ok else "degraded", "engine": engine_name, **model}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/config")
    async def config() -> dict[str, Any]:
        return {"engine": engine_name, "settings": settings.env_view()}

    @app.get("/languages")
    @app.get("/v1/languages", include_in_schema=False)
    async def languages() -> dict[str, Any]:
        langs = languages_for(settings.engine.use_multilingual_model)
        return {
            "languages": [{"code": c, "name": n} for c, n in langs.items()],
            "count": len(langs),
        }

    if status is not None:
        cluster = status

        @app.get("/status")
        async def cluster_status() -> dict[str, Any]:
            """Per deployment: replica states and health, requests in flight and queued."""
            return await cluster.status()

        @app.get("/memory")
        async def cluster_memory() -> dict[str, Any]:
            """Per replica: host memory, and GPU memory used and free."""
            return await cluster.memory()

    return app


def _job_headers(job: SpeechJob) -> dict[str, str]:
    headers = {"X-Instructions-Applied": "false"} if job.instructions_ignored else {}
    if job.warnings:
        headers["X-Chatterbox-Warning"] = "; ".join(job.warnings)
    return headers


def _file_response(rendered: RenderedSpeech, headers: dict[str, str]) -> Response:
    headers = {
        **headers,
        "X-Audio-Duration-Seconds": f"{rendered.audio_s:.3f}",
        "X-Usage-Input-Tokens": str(rendered.usage.input_tokens),
        "X-Usage-Output-Tokens": str(rendered.usage.output_tokens),
        "Server-Timing": rendered.timings.as_server_timing(),
    }
    return Response(rendered.data, media_type=rendered.format.media_type, headers=headers)


async def _overload_mapped(call: Any) -> Any:
    try:
        return await call
    except BackPressureError as exc:
        raise EngineOverloadedError("audio deployment queue full") from exc


async def _start_stream(backend: SpeechBackend, job: SpeechJob) -> AsyncIterator[AudioPiece]:
    """Wait for the first piece, so every error that can happen first becomes a JSON error."""
    stream = backend.stream(job)
    first = await _overload_mapped(stream.__anext__())

    async def rest() -> AsyncIterator[AudioPiece]:
        yield first
        async for piece in stream:
            yield piece

    return rest()


async def _raw(pieces: AsyncIterator[AudioPiece], rid: str) -> AsyncIterator[bytes]:
    try:
        async for piece in pieces:
            if piece.data:
                yield piece.data
    except Exception:
        logger.exception("request %s: audio stream aborted after the first byte", rid)


async def _sse(pieces: AsyncIterator[AudioPiece], rid: str) -> AsyncIterator[bytes]:
    try:
        async for piece in pieces:
            if piece.data:
                audio = base64.b64encode(piece.data).decode()
                yield sse_event({"type": "speech.audio.delta", "audio": audio})
            if piece.final and piece.usage is not None:
                u = piece.usage
                yield sse_event(
                    {
                        "type": "speech.audio.done",
                        "usage": {
                            "input_tokens": u.input_tokens,
                            "output_tokens": u.output_tokens,
                            "total_tokens": u.total_tokens,
                        },
                    }
                )
    except Exception as exc:
        logger.exception("request %s: SSE stream aborted", rid)
        from chatterbox_serve.errors import error_payload

        yield sse_event({"type": "error", **error_payload(exc, rid).body})


class ServeSpeechBackend:
    """`SpeechBackend` over the audio and model deployment handles."""

    def __init__(self, text_audio: DeploymentHandle[Any], model: DeploymentHandle[Any]) -> None:
        self._audio = text_audio
        self._streaming = text_audio.options(stream=True)
        self._model = model

    async def render(self, job: SpeechJob) -> RenderedSpeech:
        result: RenderedSpeech = await self._audio.render.remote(job)
        return result

    def stream(self, job: SpeechJob) -> AsyncIterator[AudioPiece]:
        response = self._streaming.stream.remote(job)
        assert isinstance(response, DeploymentResponseGenerator)
        pieces: AsyncIterator[AudioPiece] = response.__aiter__()
        return pieces

    async def health(self) -> dict[str, Any]:
        info: dict[str, Any] = await self._model.info.remote()
        return {"model_ready": True, **info}


@serve.ingress()
class SpeechIngress:
    """FastAPI ingress; routes live in `build_api`, collaborators come in as handles."""

    @classmethod
    def get_deployment_options(cls, settings: Settings) -> dict[str, Any]:
        return {
            "ray_actor_options": {"num_cpus": 0.25},
            "max_ongoing_requests": 256,
            "max_queued_requests": 1024,
            "autoscaling_config": {
                "min_replicas": 1,
                "initial_replicas": 1,
                "max_replicas": 4,
                "target_ongoing_requests": 64,
            },
            "health_check_period_s": 10,
            "health_check_timeout_s": 30,
            "graceful_shutdown_timeout_s": 30,
            "graceful_shutdown_wait_loop_s": 2,
        }

    def __init__(
        self,
        text_audio: DeploymentHandle[Any],
        model: DeploymentHandle[Any],
        settings: Settings,
        engine_name: str,
    ) -> None:
        self._backend = ServeSpeechBackend(text_audio, model)
        self._settings = settings
        self._engine_name = engine_name
        self._voices = build_voice_library(settings)
        threading.Thread(
            target=sweep_voice_debris, args=(self._voices,), name="voice-sweep", daemon=True
        ).start()
        self._load = ReplicaLoad()
        self._reporter = StatusReporter(self._load)

    def __serve_build_asgi_app__(self) -> FastAPI:
        status = ClusterStatus(self._reporter.app_name)
        app = build_api(
            self._settings, self._backend, self._engine_name, self._voices, status=status
        )
        app.add_middleware(LoadTrackingMiddleware, load=self._load)
        IngressMetrics().install(app)  # last, so outermost: it sees every status code
        return app
