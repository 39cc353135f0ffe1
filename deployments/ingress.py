"""The HTTP ingress: the FastAPI app over a `SpeechBackend`, and its Serve deployment.

`build_api` makes the app from its collaborators and the routers in
`deployments/routes/`, so tests run it in-process over a local backend;
`SpeechIngress` builds it inside a Serve replica over deployment handles.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from chatterbox_serve.config import Settings
from chatterbox_serve.pipeline import AudioPiece, RenderedSpeech, SpeechBackend, SpeechJob
from chatterbox_serve.voices import EmptyVoiceLibrary, VoiceLookup
from chatterbox_serve.voices.library import VoiceLibrary, build_voice_library
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
from deployments.routes import ApiState, ops, speech
from deployments.routes import voices as voices_routes

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


def build_api(
    settings: Settings,
    backend: SpeechBackend,
    engine_name: str,
    voices: VoiceLookup | None = None,
    status: StatusSource | None = None,
) -> FastAPI:
    """The FastAPI app: the routers of `deployments/routes/`, error handlers, middleware.

    The routes find their collaborators in `app.state.api`. The voice library routes
    and multipart speech exist only with a `VoiceLibrary`; `/status` and `/memory`
    only with a `status` source (a Serve cluster).
    """
    app = FastAPI(title="chatterbox-serve", version="0.1.0")
    library = voices or EmptyVoiceLibrary()
    app.state.api = ApiState(settings, backend, engine_name, library, status)
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
    app.middleware("http")(tag_responses)
    app.include_router(speech.router)
    if isinstance(library, VoiceLibrary):
        app.include_router(voices_routes.router)
        app.include_router(speech.upload_router)
    app.include_router(ops.router)
    if status is not None:
        app.include_router(ops.cluster_router)
    return app


async def tag_responses(request: Request, call_next: Any) -> Response:
    """Name the engine on every response, and echo a request id when Serve's proxy did not."""
    response: Response = await call_next(request)
    response.headers["X-Chatterbox-Engine"] = request.app.state.api.engine_name
    if REQUEST_ID_HEADER not in request.headers:  # Serve's proxy echoes its own id
        response.headers[REQUEST_ID_HEADER] = request_id_of(request)
    return response


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
    """FastAPI ingress; routes live in `deployments/routes/`, collaborators come in as handles."""

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
