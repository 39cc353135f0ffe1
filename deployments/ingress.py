"""The HTTP ingress: the FastAPI app over a `SpeechBackend`, and its Serve deployment.

`build_api` makes the app from its collaborators and the routers in
`deployments/routes/`, so tests run it in-process over a local backend;
`SpeechIngress` builds it inside a Serve replica over deployment handles.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatterbox_serve.auth import load_api_keys
from chatterbox_serve.config import Settings
from chatterbox_serve.jobs import JobsAccess, JobService, JobStore, build_job_blob_store
from chatterbox_serve.speech import AudioPiece, RenderedSpeech, SpeechBackend, SpeechOrder
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
from deployments.proxy_errors import check_proxy_hardening
from deployments.routes import ApiState, compat, docs, ops, speech, watermark, web
from deployments.routes import jobs as jobs_routes
from deployments.routes import voices as voices_routes
from deployments.streams import DOWNLOADS, SSE_STREAMS, FlowControl, FlowLedger, StreamSlots

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
    jobs: JobsAccess | None = None,
) -> FastAPI:
    """The FastAPI app: the routers of `deployments/routes/`, error handlers, middleware.

    The routes find their collaborators in `app.state.api`. The voice library routes
    and multipart speech exist only with a `VoiceLibrary`; `/status` and `/memory`
    only with a `status` source (a Serve cluster); the long-text job routes only
    with `jobs`.
    """
    # FastAPI's own docs pages load scripts from a CDN: `routes/docs.py` serves a page
    # without any script instead.
    app = FastAPI(title="chatterbox-serve", version="0.1.0", docs_url=None, redoc_url=None)
    library = voices or EmptyVoiceLibrary()
    tenancy = settings.tenancy
    streams = StreamSlots(
        {
            SSE_STREAMS: tenancy.max_sse_streams_per_key,
            DOWNLOADS: tenancy.max_downloads_per_key,
        }
    )
    app.state.api = ApiState(settings, backend, engine_name, library, status, jobs, streams)
    install_error_handlers(app)
    # The last middleware added runs first: CORS, then the API key, then the body limit,
    # so no body is read for an unauthenticated caller and every error has CORS headers.
    app.add_middleware(
        BodyLimitMiddleware,
        json_limit=settings.server.max_json_body_bytes,
        upload_limit=settings.server.max_upload_bytes,
    )
    app.state.api_keys = install_auth(app, settings)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[o.strip() for o in settings.server.cors_origins.split(",")],
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["*"],
    )
    app.add_middleware(TagResponses)
    app.state.flows = FlowLedger()
    app.add_middleware(FlowControl, window=tenancy.stream_window_bytes, ledger=app.state.flows)
    app.include_router(speech.router)
    if isinstance(library, VoiceLibrary):
        app.include_router(voices_routes.router)
        app.include_router(speech.upload_router)
    if jobs is not None:
        app.include_router(jobs_routes.router)
    app.include_router(watermark.router)
    app.include_router(ops.router)
    app.include_router(compat.router)
    app.state.request_log = compat.RequestLog()
    app.add_middleware(compat.RequestLogMiddleware, log=app.state.request_log)
    if status is not None:
        app.include_router(ops.cluster_router)
    app.include_router(web.router)
    app.include_router(docs.router)
    return app


class TagResponses:
    """Names the engine on every response, and echoes a request id when Serve's proxy did not.

    Plain ASGI, not `BaseHTTPMiddleware`: that one re-streams the body and ends it
    cleanly even when the app fails mid-stream, which would turn an aborted audio
    stream into a truncated file that looks complete.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Chatterbox-Engine"] = request.app.state.api.engine_name
                # Serve's proxy echoes a well-formed id the client sent; a missing or
                # malformed one is replaced by the id this request was logged under.
                rid = request_id_of(request)
                if request.headers.get(REQUEST_ID_HEADER) != rid:
                    headers[REQUEST_ID_HEADER] = rid
            await send(message)

        await self.app(scope, receive, tagged)


class ServeSpeechBackend:
    """`SpeechBackend` over the audio and model deployment handles."""

    def __init__(self, text_audio: DeploymentHandle[Any], model: DeploymentHandle[Any]) -> None:
        self._audio = text_audio
        self._streaming = text_audio.options(stream=True)
        self._model = model

    async def render(self, order: SpeechOrder) -> RenderedSpeech:
        result: RenderedSpeech = await self._audio.render.remote(order)
        return result

    def stream(self, order: SpeechOrder) -> AsyncIterator[AudioPiece]:
        response = self._streaming.stream.remote(order)
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
        job_worker: DeploymentHandle[Any] | None = None,
    ) -> None:
        runtime_env = ray.get_runtime_context().runtime_env
        check_proxy_hardening(
            os.environ,
            dict(runtime_env.get("env_vars") or {}),
            settings.tenancy.allow_unhardened_proxy,
        )
        self._backend = ServeSpeechBackend(text_audio, model)
        self._jobs = _jobs_access(settings, job_worker)
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
            self._settings,
            self._backend,
            self._engine_name,
            self._voices,
            status=status,
            jobs=self._jobs,
        )
        self._load.flows = app.state.flows
        app.add_middleware(LoadTrackingMiddleware, load=self._load)
        IngressMetrics().install(app)  # last, so outermost: it sees every status code
        return app


def _jobs_access(settings: Settings, worker: DeploymentHandle[Any] | None) -> JobsAccess:
    """The job routes' collaborators; `notify` starts a job on a worker replica at once.

    The call lasts as long as the job runs and nobody awaits it: it is how the worker
    deployment's autoscaler sees running jobs. The workers' queue polling would find
    the job anyway, a poll interval later.
    """
    service = JobService(JobStore(build_job_blob_store(settings)), settings)

    def notify(job_id: str) -> None:
        if worker is None:
            return
        try:
            worker.run_job.remote(job_id)
        except Exception:  # the workers' polling picks the job up instead
            logger.warning("Could not hand job %s to a worker; polling will", job_id)

    return JobsAccess(service, load_api_keys(settings).enabled, notify)
