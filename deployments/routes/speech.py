"""Speech routes: JSON speech, always-streamed speech, and speech from a multipart form.

A route parses the request, resolves the voice, turns both into a `SpeechOrder` and
hands it to the backend. Every check that can fail happens before the response
starts: a file is rendered whole, and a stream waits for its first piece, because
audio bytes cannot carry a JSON error.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from ray.serve.exceptions import BackPressureError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as StarletteUpload

from chatterbox_serve.audio.watermark import WATERMARK_NAME
from chatterbox_serve.engines.base import VoicePrompt
from chatterbox_serve.errors import EngineOverloadedError, InvalidRequestError, error_payload
from chatterbox_serve.protocol import ERROR_RESPONSES, SpeechRequest, sse_event
from chatterbox_serve.speech import AudioPiece, RenderedSpeech, SpeechBackend, SpeechOrder
from chatterbox_serve.voices import ResolvedVoice, resolve_voice
from chatterbox_serve.voices.validation import inspect_audio, read_bounded
from deployments.http import request_id_of
from deployments.routes import ApiState, State
from deployments.routes.access import caller_voices

logger = logging.getLogger("ray.serve")

SPEECH_PATHS = ("/v1/audio/speech", "/audio/speech", "/tts")
STREAM_PATHS = ("/v1/audio/speech/stream", "/audio/speech/stream", "/tts/stream")
UPLOAD_PATHS = ("/v1/audio/speech/upload", "/audio/speech/upload", "/tts/upload")
STREAM_UPLOAD_PATHS = (
    "/v1/audio/speech/stream/upload",
    "/audio/speech/stream/upload",
    "/tts/stream/upload",
)

# Generation parameters the request set that its model family does not use (Turbo:
# cfg_weight, exaggeration, min_p), comma-separated.
IGNORED_FIELDS_HEADER = "X-Chatterbox-Ignored-Fields"

router = APIRouter()
# Multipart speech with a one-off `voice_file`: included with the voice library routes.
upload_router = APIRouter()


async def create_speech(body: SpeechRequest, request: Request, state: State) -> Response:
    """Speak `input`: a whole file, or streamed when `stream_format` is set."""
    return await speak(state, body, request, force_stream=False)


async def stream_speech(body: SpeechRequest, request: Request, state: State) -> Response:
    """Speak `input`, always streamed as encoded audio."""
    return await speak(state, body, request, force_stream=True)


async def create_speech_upload(request: Request, state: State) -> Response:
    """Speech from form fields, with an optional one-off `voice_file` that is never stored."""
    return await _speak_form(state, request, force_stream=False)


async def stream_speech_upload(request: Request, state: State) -> Response:
    """As `create_speech_upload`, always streamed."""
    return await _speak_form(state, request, force_stream=True)


def _add(target: APIRouter, paths: tuple[str, ...], endpoint: Any) -> None:
    for path in paths:
        target.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            responses=ERROR_RESPONSES,
            response_class=Response,
            include_in_schema=path == paths[0],
        )


_add(router, SPEECH_PATHS, create_speech)
_add(router, STREAM_PATHS, stream_speech)
_add(upload_router, UPLOAD_PATHS, create_speech_upload)
_add(upload_router, STREAM_UPLOAD_PATHS, stream_speech_upload)


async def speak(
    state: ApiState,
    body: SpeechRequest,
    request: Request,
    force_stream: bool,
    voice: ResolvedVoice | None = None,
) -> Response:
    """Resolve the voice (unless given), build the order, and answer with a file or a stream."""
    rid = request_id_of(request)
    body.family(state.settings)  # an unknown model is a 404 before any work
    if voice is None:  # library reads block on storage
        voice = await run_in_threadpool(
            partial(resolve_voice, by_id=body.voice_by_id),
            body.voice_key,
            caller_voices(request, state),
        )
    stream_format = "audio" if force_stream else body.stream_format
    order = body.to_order(state.settings, voice, rid, streaming=stream_format is not None)
    request.state.response_format = order.format.value  # a metrics tag
    headers = _order_headers(order, state.settings.audio.watermarked)
    if stream_format is None:
        rendered = await _overload_mapped(state.backend.render(order))
        return _file_response(rendered, headers)
    pieces = await _start_stream(state.backend, order)
    if stream_format == "sse":
        return StreamingResponse(_sse(pieces, rid), media_type="text/event-stream", headers=headers)
    return StreamingResponse(_raw(pieces, rid), media_type=order.format.media_type, headers=headers)


async def _speak_form(state: ApiState, request: Request, force_stream: bool) -> Response:
    form = await request.form()
    body = _speech_fields(form)
    limit = state.settings.server.max_upload_bytes
    voice = await run_in_threadpool(_one_off_voice, form, limit)
    return await speak(state, body, request, force_stream, voice)


def _speech_fields(form: FormData) -> SpeechRequest:
    """The speech request in the form's text fields; errors become the usual 400."""
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str) and v != ""}
    try:
        return SpeechRequest.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from None


def _one_off_voice(form: FormData, limit: int) -> ResolvedVoice | None:
    upload = form.get("voice_file")
    if isinstance(upload, str) and upload:
        # `curl -F voice_file=sample.mp3` (no `@`) sends the file's name as text;
        # speaking with the default voice instead would hide the mistake.
        raise InvalidRequestError(
            "'voice_file' must be a file part (curl: -F voice_file=@sample.mp3), not a text field.",
            param="voice_file",
        )
    if not isinstance(upload, StarletteUpload):
        return None
    data = read_bounded(upload.file, limit, "voice_file")
    facts = inspect_audio(data, "voice_file")
    return ResolvedVoice(
        name="upload", prompt=VoicePrompt.from_bytes(data), duration_s=facts.duration_s
    )


def _order_headers(order: SpeechOrder, watermarked: bool) -> dict[str, str]:
    headers = {"X-Instructions-Applied": "false"} if order.instructions_ignored else {}
    if watermarked:
        headers["X-Watermark"] = WATERMARK_NAME
    if order.warnings:
        headers["X-Chatterbox-Warning"] = "; ".join(order.warnings)
    if order.ignored_fields:
        headers[IGNORED_FIELDS_HEADER] = ", ".join(order.ignored_fields)
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


async def _start_stream(backend: SpeechBackend, order: SpeechOrder) -> AsyncIterator[AudioPiece]:
    """Wait for the first piece, so every error that can happen first becomes a JSON error."""
    stream = backend.stream(order)
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
        # The status line and some audio are out, so no error can be sent; raising
        # makes the server abort the connection without the terminating chunk, so the
        # client sees a failed transfer, never a truncated file that looks complete.
        logger.exception("request %s: audio stream aborted after the first byte", rid)
        raise


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
        yield sse_event({"type": "error", **error_payload(exc, rid).body})
