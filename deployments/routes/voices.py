"""HTTP routes of the voice library, and speech with a one-off uploaded voice.

Every library route is served under `/voices` and its alias `/voice-library`, both
also under `/v1`. Static paths (`all-names`, `default`) are registered before
`{name}` so they are never shadowed. Library calls block on storage, so these
endpoints are plain functions that FastAPI runs in its thread pool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as StarletteUpload

from chatterbox_serve.engines.base import VoicePrompt
from chatterbox_serve.protocol import ERROR_RESPONSES, SpeechRequest
from chatterbox_serve.voices.library import VoiceLibrary
from chatterbox_serve.voices.validation import inspect_audio, read_bounded
from chatterbox_serve.voices.resolve import ResolvedVoice

Speak = Callable[[SpeechRequest, Request, bool, ResolvedVoice | None], Awaitable[Response]]

_ERRORS: dict[int | str, dict[str, Any]] = {**ERROR_RESPONSES, 409: ERROR_RESPONSES[400]}
_LIBRARY_PREFIXES = ("/voices", "/voice-library", "/v1/voices", "/v1/voice-library")


def build_voice_router(library: VoiceLibrary, speak: Speak) -> APIRouter:
    """Routes over `library`; `speak` is the ingress's speech path, for one-off voices."""
    router = APIRouter()
    limit = library.max_upload_bytes

    def add(method: str, path: str, endpoint: Callable[..., Any], status: int = 200) -> None:
        for i, prefix in enumerate(_LIBRARY_PREFIXES):
            router.add_api_route(
                prefix + path,
                endpoint,
                methods=[method],
                status_code=status,
                responses=_ERRORS,
                include_in_schema=i == 0,
            )

    def list_voices() -> dict[str, Any]:
        """Every stored voice, newest first."""
        items = [e.to_dict() for e in library.list_voices()]
        return {"voices": items, "count": len(items)}

    def create_voice(
        voice_name: Annotated[str, Form()],
        voice_file: Annotated[UploadFile, File()],
        language: Annotated[str, Form()] = "en",
    ) -> JSONResponse:
        """Store a new voice from an uploaded audio file."""
        data = read_bounded(voice_file.file, limit)
        entry = library.add_voice(
            voice_name, data, language=language, original_filename=voice_file.filename or ""
        )
        return JSONResponse(
            {"message": f"Voice {entry.name!r} uploaded.", "voice": entry.to_dict()},
            status_code=201,
        )

    def all_names() -> dict[str, Any]:
        """Every voice name and alias."""
        names = library.all_names()
        return {"names": names, "count": len(names)}

    def get_default() -> dict[str, Any]:
        entry = library.default_entry()
        return {
            "default_voice": entry.name if entry else None,
            "voice": entry.to_dict() if entry else None,
        }

    def set_default(voice_name: Annotated[str, Form()]) -> dict[str, Any]:
        entry = library.set_default(voice_name)
        return {"message": f"Default voice set to {entry.name!r}.", "default_voice": entry.name}

    def clear_default() -> dict[str, Any]:
        library.clear_default()
        return {"message": "Default voice reset to the built-in voice.", "default_voice": None}

    def get_voice(name: str) -> dict[str, Any]:
        return library.get_voice(name).to_dict()

    def download_voice(name: str) -> Response:
        """The original uploaded bytes."""
        entry, data = library.audio(name)
        disposition = f"attachment; filename*=UTF-8''{quote(entry.filename)}"
        return Response(
            data, media_type=entry.record.media_type, headers={"Content-Disposition": disposition}
        )

    def rename_voice(name: str, new_name: Annotated[str, Form()]) -> dict[str, Any]:
        entry = library.rename(name, new_name)
        return {"message": f"Voice {name!r} renamed to {entry.name!r}.", "voice": entry.to_dict()}

    def delete_voice(name: str) -> dict[str, Any]:
        entry = library.delete(name)
        return {"message": f"Voice {entry.name!r} deleted.", "voice": entry.to_dict()}

    def add_alias(name: str, alias: Annotated[str, Form()]) -> JSONResponse:
        entry = library.add_alias(name, alias)
        return JSONResponse(
            {"message": f"Alias {alias!r} added to {entry.name!r}.", "voice": entry.to_dict()},
            status_code=201,
        )

    def list_aliases(name: str) -> dict[str, Any]:
        entry = library.get_voice(name)
        return {"name": entry.name, "aliases": list(entry.aliases)}

    def remove_alias(name: str, alias: str) -> dict[str, Any]:
        entry = library.remove_alias(name, alias)
        return {"message": f"Alias {alias!r} removed.", "voice": entry.to_dict()}

    add("GET", "", list_voices)
    add("POST", "", create_voice, 201)
    add("GET", "/all-names", all_names)
    add("GET", "/default", get_default)
    add("POST", "/default", set_default)
    add("DELETE", "/default", clear_default)
    add("GET", "/{name}", get_voice)
    add("GET", "/{name}/download", download_voice)
    add("PUT", "/{name}", rename_voice)
    add("DELETE", "/{name}", delete_voice)
    add("POST", "/{name}/aliases", add_alias, 201)
    add("GET", "/{name}/aliases", list_aliases)
    add("DELETE", "/{name}/aliases/{alias}", remove_alias)
    _add_openai_routes(router, library)
    _add_speech_upload_routes(router, library, speak)
    return router


def _add_openai_routes(router: APIRouter, library: VoiceLibrary) -> None:
    """OpenAI's custom-voice shapes, as Open WebUI and the OpenAI SDK read them."""

    def create(
        name: Annotated[str, Form()],
        audio_sample: Annotated[UploadFile, File()],
        consent: Annotated[str | None, Form()] = None,
        language: Annotated[str, Form()] = "en",
    ) -> JSONResponse:
        data = read_bounded(audio_sample.file, library.max_upload_bytes, "audio_sample")
        entry = library.add_voice(
            name,
            data,
            language=language,
            name_param="name",
            file_param="audio_sample",
            original_filename=audio_sample.filename or "",
        )
        return JSONResponse(
            {
                "object": "audio.voice",
                "id": entry.record.id,
                "name": entry.name,
                "created_at": entry.record.created_at,
            },
            status_code=201,
        )

    def list_() -> dict[str, Any]:
        return {"voices": [{"id": e.record.id, "name": e.name} for e in library.list_voices()]}

    for i, path in enumerate(("/v1/audio/voices", "/audio/voices")):
        router.add_api_route(
            path,
            create,
            methods=["POST"],
            status_code=201,
            responses=_ERRORS,
            include_in_schema=i == 0,
        )
        router.add_api_route(path, list_, methods=["GET"], include_in_schema=i == 0)


def _add_speech_upload_routes(router: APIRouter, library: VoiceLibrary, speak: Speak) -> None:
    """Speech from multipart fields, with an optional one-off `voice_file` never stored."""

    def endpoint(force_stream: bool) -> Callable[[Request], Awaitable[Response]]:
        async def speech_upload(request: Request) -> Response:
            form = await request.form()
            body = _speech_fields(form)
            voice = await run_in_threadpool(_one_off_voice, form, library.max_upload_bytes)
            return await speak(body, request, force_stream, voice)

        return speech_upload

    for stream, suffix in ((False, "/upload"), (True, "/stream/upload")):
        for i, base in enumerate(("/v1/audio/speech", "/audio/speech")):
            router.add_api_route(
                base + suffix,
                endpoint(stream),
                methods=["POST"],
                responses=_ERRORS,
                response_class=Response,
                include_in_schema=i == 0,
            )


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
    if not isinstance(upload, StarletteUpload):
        return None
    data = read_bounded(upload.file, limit)
    inspect_audio(data)
    return ResolvedVoice(name="upload", prompt=VoicePrompt.from_bytes(data))
