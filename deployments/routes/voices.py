"""HTTP routes of the voice library, and OpenAI's custom-voice shapes.

Every library route is served under `/voices` and its alias `/voice-library`, both
also under `/v1`. Static paths (`all-names`, `default`) are registered before
`{name}` so they are never shadowed. Library calls block on storage, so these
endpoints are plain functions that FastAPI runs in its thread pool. The JSON shape
of a voice (`voice_json`) and the form-field names are the wire format; the library
itself knows neither.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from chatterbox_serve.protocol import ERROR_RESPONSES
from chatterbox_serve.voices.access import CallerVoices
from chatterbox_serve.voices.library import VoiceEntry, VoiceLibrary
from chatterbox_serve.voices.validation import read_bounded
from deployments.auth import require_operator
from deployments.routes import State
from deployments.routes.access import caller_of

_ERRORS: dict[int | str, dict[str, Any]] = {**ERROR_RESPONSES, 409: ERROR_RESPONSES[400]}
_LIBRARY_PREFIXES = (
    "/voices",
    "/voice-library",
    "/v1/voices",
    "/v1/voice-library",
    "/voice_library",
)

# Form fields of the library's upload route (the original Chatterbox API's names).
NAME_FIELD = "voice_name"
FILE_FIELD = "voice_file"

router = APIRouter()


def voice_library(request: Request, state: State) -> CallerVoices:
    """The caller's view of the app's voice library (included only when it has one)."""
    assert isinstance(state.voices, VoiceLibrary)
    return CallerVoices(state.voices, caller_of(request))


Library = Annotated[CallerVoices, Depends(voice_library)]


def voice_json(entry: VoiceEntry) -> dict[str, Any]:
    """A voice as the library routes return it."""
    r = entry.record
    return {
        "id": r.id,
        "name": entry.name,
        "filename": entry.filename,
        "file_extension": "." + entry.filename.rsplit(".", 1)[-1],
        "original_filename": r.original_filename,
        "file_size": r.file_size,
        "upload_date": r.upload_date,
        "language": r.language,
        "aliases": list(entry.aliases),
        "duration_s": r.duration_s,
        "sha256": r.sha256,
    }


def list_voices(library: Library) -> dict[str, Any]:
    """Every stored voice, newest first."""
    items = [voice_json(e) for e in library.list_voices()]
    return {"voices": items, "count": len(items)}


def create_voice(
    library: Library,
    voice_name: Annotated[str, Form()],
    voice_file: Annotated[UploadFile, File()],
    language: Annotated[str, Form()] = "en",
) -> JSONResponse:
    """Store a new voice from an uploaded audio file."""
    data = read_bounded(voice_file.file, library.max_upload_bytes, FILE_FIELD)
    entry = library.add_voice(
        voice_name,
        data,
        language=language,
        name_param=NAME_FIELD,
        file_param=FILE_FIELD,
        original_filename=voice_file.filename or "",
    )
    return JSONResponse(
        {"message": f"Voice {entry.name!r} uploaded.", "voice": voice_json(entry)},
        status_code=201,
    )


def all_names(library: Library) -> dict[str, Any]:
    """Every voice name and alias (also as the original API's `voice_names`)."""
    names = library.all_names()
    return {"names": names, "voice_names": names, "count": len(names)}


def cleanup_voices(library: Library) -> dict[str, Any]:
    """Remove voice-library debris crashes left, older than an hour; operators only.

    Younger debris may be an upload another replica is finishing; job files, which
    may share the storage root, are never touched.
    """
    removed = library.sweep_orphans()
    return {"message": "Cleanup completed", "removed_voices": removed, "count": len(removed)}


def get_default(library: Library) -> dict[str, Any]:
    entry = library.default_entry()
    return {
        "default_voice": entry.name if entry else None,
        "voice": voice_json(entry) if entry else None,
    }


def set_default(library: Library, voice_name: Annotated[str, Form()]) -> dict[str, Any]:
    entry = library.set_default(voice_name)
    return {"message": f"Default voice set to {entry.name!r}.", "default_voice": entry.name}


def clear_default(library: Library) -> dict[str, Any]:
    library.clear_default()
    return {"message": "Default voice reset to the built-in voice.", "default_voice": None}


def get_voice(library: Library, name: str) -> dict[str, Any]:
    return voice_json(library.get_voice(name))


def download_voice(library: Library, name: str) -> Response:
    """The original uploaded bytes."""
    entry, data = library.audio(name)
    disposition = f"attachment; filename*=UTF-8''{quote(entry.filename)}"
    return Response(
        data,
        media_type=entry.record.media_type,
        # The bytes are a user's upload: browsers must not sniff them into HTML.
        headers={"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"},
    )


def rename_voice(library: Library, name: str, new_name: Annotated[str, Form()]) -> dict[str, Any]:
    entry = library.rename(name, new_name)
    return {"message": f"Voice {name!r} renamed to {entry.name!r}.", "voice": voice_json(entry)}


def delete_voice(library: Library, name: str) -> dict[str, Any]:
    entry = library.delete(name)
    return {"message": f"Voice {entry.name!r} deleted.", "voice": voice_json(entry)}


def add_alias(library: Library, name: str, alias: Annotated[str, Form()]) -> JSONResponse:
    entry = library.add_alias(name, alias)
    return JSONResponse(
        {"message": f"Alias {alias!r} added to {entry.name!r}.", "voice": voice_json(entry)},
        status_code=201,
    )


def list_aliases(library: Library, name: str) -> dict[str, Any]:
    entry = library.get_voice(name)
    aliases = list(entry.aliases)
    # `voice_name` and `count` are the original API's keys; its web frontend reads them.
    return {"name": entry.name, "voice_name": entry.name, "aliases": aliases, "count": len(aliases)}


def remove_alias(library: Library, name: str, alias: str) -> dict[str, Any]:
    entry = library.remove_alias(name, alias)
    return {"message": f"Alias {alias!r} removed.", "voice": voice_json(entry)}


def create_openai_voice(
    library: Library,
    name: Annotated[str, Form()],
    audio_sample: Annotated[UploadFile, File()],
    consent: Annotated[str | None, Form()] = None,
    language: Annotated[str, Form()] = "en",
) -> JSONResponse:
    """OpenAI's custom-voice upload, as Open WebUI and the OpenAI SDK send it."""
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


def list_openai_voices(library: Library) -> dict[str, Any]:
    return {"voices": [{"id": e.record.id, "name": e.name} for e in library.list_voices()]}


_LIBRARY_ROUTES: tuple[tuple[str, str, Any, int], ...] = (
    ("GET", "", list_voices, 200),
    ("POST", "", create_voice, 201),
    ("GET", "/all-names", all_names, 200),
    ("POST", "/cleanup", cleanup_voices, 200),
    ("GET", "/default", get_default, 200),
    ("POST", "/default", set_default, 200),
    ("DELETE", "/default", clear_default, 200),
    ("GET", "/{name}", get_voice, 200),
    ("GET", "/{name}/download", download_voice, 200),
    ("PUT", "/{name}", rename_voice, 200),
    ("DELETE", "/{name}", delete_voice, 200),
    ("POST", "/{name}/aliases", add_alias, 201),
    ("GET", "/{name}/aliases", list_aliases, 200),
    ("DELETE", "/{name}/aliases/{alias}", remove_alias, 200),
)

# Routes that act on the whole library, not on the caller's own voices.
_OPERATOR_ONLY = frozenset({cleanup_voices})

for _method, _path, _endpoint, _status in _LIBRARY_ROUTES:
    for _i, _prefix in enumerate(_LIBRARY_PREFIXES):
        router.add_api_route(
            _prefix + _path,
            _endpoint,
            methods=[_method],
            status_code=_status,
            responses=_ERRORS,
            include_in_schema=_i == 0,
            dependencies=[Depends(require_operator)] if _endpoint in _OPERATOR_ONLY else [],
        )

# The original API's `/default-voice` alias of `/voices/default`.
for _method, _path, _endpoint, _status in _LIBRARY_ROUTES:
    if _path != "/default":
        continue
    router.add_api_route(
        "/default-voice", _endpoint, methods=[_method], responses=_ERRORS, include_in_schema=False
    )

for _i, _path in enumerate(("/v1/audio/voices", "/audio/voices")):
    router.add_api_route(
        _path,
        create_openai_voice,
        methods=["POST"],
        status_code=201,
        responses=_ERRORS,
        include_in_schema=_i == 0,
    )
    router.add_api_route(_path, list_openai_voices, methods=["GET"], include_in_schema=_i == 0)
