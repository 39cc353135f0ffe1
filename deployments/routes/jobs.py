"""Long-text job routes: the original API's `/audio/speech/long` family, durable.

Every route works from any ingress replica: all job state is in the job store. A
job belongs to the API key that created it (its hash); other keys get 404. Routes
are sync where they only touch the store, so FastAPI runs them in its threadpool.

Two of the original's routing bugs are fixed here, not copied: `DELETE
/audio/speech/long/history` clears the history (the original matched it as "cancel
job `history`"), and `GET /status` is the status route, not `/health` (in ops).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from chatterbox_serve.audio import AudioFormat
from chatterbox_serve.errors import (
    InvalidRequestError,
    PermissionDeniedError,
    RangeNotSatisfiableError,
)
from chatterbox_serve.jobs import OPEN_OWNER, HistoryQuery, JobRecord, JobState
from chatterbox_serve.jobs import protocol as wire
from chatterbox_serve.jobs.events import job_events
from chatterbox_serve.jobs.service import HistorySort, JobService
from chatterbox_serve.protocol import OPERATOR_RESPONSES
from chatterbox_serve.voices import resolve_voice
from deployments.auth import Owner, presented_admin_key
from deployments.routes import State
from deployments.routes.access import caller_voices
from deployments.streams import DOWNLOADS, SSE_STREAMS, HeldResponse

router = APIRouter(tags=["Long Text TTS"], responses={**OPERATOR_RESPONSES, 429: {}})
F = TypeVar("F", bound=Callable[..., Any])


def _route(method: str, path: str, **kw: Any) -> Callable[[F], F]:
    """Register a route at `/v1<path>` (in the schema) and at `<path>` (alias)."""

    def register(endpoint: F) -> F:
        for i, prefix in enumerate(("/v1", "")):
            router.add_api_route(
                prefix + path, endpoint, methods=[method], include_in_schema=i == 0, **kw
            )
        return endpoint

    return register


@_route("POST", "/audio/speech/long")
def create_job(
    body: wire.LongSpeechRequest, request: Request, state: State, owner: Owner
) -> dict[str, Any]:
    """Queue a long text (more than MAX_TOTAL_LENGTH characters) for background synthesis."""
    jobs = state.jobs
    assert jobs is not None
    voice = resolve_voice(body.voice_key, caller_voices(request, state), by_id=body.voice_by_id)
    # Pinned by id: a stored voice's content never changes under its id, so renaming,
    # replacing or re-uploading a name later cannot change what this job speaks with.
    params = replace(body.to_parameters(state.settings, voice), voice_id=voice.id)
    record = jobs.service.create(owner, body.input, params, session_id=body.session_id)
    estimate = jobs.service.estimate_s(record)
    jobs.notify(record.job_id)
    return wire.create_response(record, estimate, "Job submitted for processing")


@_route("GET", "/audio/speech/long")
def list_jobs(
    state: State,
    owner: Owner,
    status: JobState | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    session_id: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The caller's jobs, newest first, a page at a time (`limit`, `offset`); `status`
    filters, `session_id` is accepted and unused. Counts are over every match."""
    found = _service(state).listing(owner, status, limit, offset)
    listing = wire.job_list([_item(r) for r in found.page], found.matched)
    return {**listing, **wire.paging(limit, offset, found.has_more)}


@_route("GET", "/audio/speech/long-history")
def list_history(
    state: State,
    owner: Owner,
    status: JobState | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    is_archived: bool | None = None,
    sort: HistorySort = HistorySort.COMPLETED_DESC,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    session_id: str | None = None,
) -> dict[str, Any]:
    """Filtered, sorted, paged history of the caller's jobs."""
    query = HistoryQuery(
        status=status,
        start=_date(start_date, "start_date"),
        end=_date(end_date, "end_date"),
        search=search,
        is_archived=is_archived,
        sort=sort,
        limit=limit,
        offset=offset,
    )
    found = _service(state).history_listing(owner, query)
    listing = wire.job_list([_item(r) for r in found.page], found.page)
    return {**listing, "total_jobs": found.total, **wire.paging(limit, offset, found.has_more)}


@_route("GET", "/audio/speech/long-history/stats")
def history_stats(state: State, owner: Owner) -> dict[str, Any]:
    return _service(state).stats(owner)


# Before `/audio/speech/long/{job_id}`: the original registered it after, so
# `DELETE .../long/history` cancelled a job called "history" instead.
@_route("DELETE", "/audio/speech/long/history")
def clear_history(
    request: Request,
    state: State,
    owner: Owner,
    confirm: bool = False,
    session_id: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Delete the caller's finished jobs (of one session, with `session_id`); needs `confirm=true`.

    Without API keys every client shares one history, so the whole of it goes only
    with an operator key (ADMIN_API_KEYS); anyone may clear one session's jobs.
    """
    if not confirm:
        raise InvalidRequestError(
            "History clearing requires confirmation (confirm=true).", param="confirm"
        )
    if owner is None and session_id is None and not presented_admin_key(request):
        raise PermissionDeniedError(
            "Without API keys the job history is shared by every client: pass session_id "
            "to clear one session's jobs, or use an operator key (ADMIN_API_KEYS)."
        )
    cleared, failed = _service(state).clear_history(owner, session_id)
    return {
        "message": f"Cleared {cleared} jobs from history",
        "cleared_count": cleared,
        "failed_count": failed,
    }


@_route("POST", "/audio/speech/long/bulk")
def bulk_action(body: wire.BulkJobRequest, state: State, owner: Owner) -> dict[str, Any]:
    """Delete, archive, unarchive or retry many jobs; needs `confirm: true`."""
    if not body.confirm:
        raise InvalidRequestError("Bulk operations require confirmation.", param="confirm")
    result = _service(state).bulk(owner, body.job_ids, body.action)
    for job_id in result.succeeded if body.action == "retry" else ():
        _notify(state, job_id)
    total = len(body.job_ids)
    return {
        "success_count": len(result.succeeded),
        "failed_count": len(result.failed),
        "total_count": total,
        "failed_jobs": list(result.failed),
        "message": f"Bulk {body.action}: {len(result.succeeded)}/{total} successful",
    }


@_route("GET", "/audio/speech/long/{job_id}")
def get_job(job_id: str, state: State, owner: Owner) -> dict[str, Any]:
    """Status, progress (with an estimate from measured throughput) and metadata."""
    service = _service(state)
    record = service.get(owner, job_id)
    plan = service.store.plan(job_id)
    return wire.job_response(record, plan, service.commits(record))


@_route("GET", "/audio/speech/long/{job_id}/details")
def job_details(job_id: str, state: State, owner: Owner) -> dict[str, Any]:
    service = _service(state)
    record, text, plan = service.details(owner, job_id)
    return wire.details(record, text, plan, service.commits(record))


@_route("PATCH", "/audio/speech/long/{job_id}")
def edit_job(
    job_id: str, body: wire.JobUpdateRequest, state: State, owner: Owner
) -> dict[str, Any]:
    record = _service(state).edit(
        owner,
        job_id,
        display_name=body.display_name,
        is_archived=body.is_archived,
        tags=body.tags,
    )
    return wire.action(record, "Job metadata updated successfully")


@_route("PUT", "/audio/speech/long/{job_id}/pause")
def pause_job(job_id: str, state: State, owner: Owner) -> dict[str, Any]:
    record = _service(state).pause(owner, job_id)
    return {**wire.action(record, f"Job {job_id} paused successfully")}


@_route("PUT", "/audio/speech/long/{job_id}/resume")
def resume_job(job_id: str, state: State, owner: Owner) -> dict[str, Any]:
    record = _service(state).resume(owner, job_id)
    _notify(state, job_id)
    return {**wire.action(record, f"Job {job_id} resumed successfully")}


@_route("DELETE", "/audio/speech/long/{job_id}")
def cancel_or_delete_job(
    job_id: str,
    state: State,
    owner: Owner,
    action: Literal["cancel", "delete"] = "cancel",
) -> dict[str, Any]:
    service = _service(state)
    if action == "delete":
        service.delete(owner, job_id)
        return {"message": f"Job {job_id} deleted successfully"}
    record = service.cancel(owner, job_id)
    return {**wire.action(record, f"Job {job_id} cancelled successfully")}


@_route("POST", "/audio/speech/long/{job_id}/retry")
def retry_job(
    job_id: str,
    request: Request,
    state: State,
    owner: Owner,
    body: wire.JobRetryRequest | None = None,
) -> dict[str, Any]:
    """Run a failed or cancelled job again, in place (the job id stays the same)."""
    body = body or wire.JobRetryRequest()
    changes = body.changes()
    if "voice" in changes:  # 404 now, not a failed job later; pinned as at creation
        changes["voice_id"] = resolve_voice(changes["voice"], caller_voices(request, state)).id
    record = _service(state).retry(
        owner,
        job_id,
        preserve_chunks=body.preserve_chunks,
        new_parameters=changes,
    )
    _notify(state, job_id)
    message = f"Retry job created successfully (retry #{record.retry_count})"
    return wire.create_response(record, _service(state).estimate_s(record), message)


@_route("GET", "/audio/speech/long/{job_id}/sse", response_class=StreamingResponse)
async def job_progress(job_id: str, state: State, owner: Owner) -> StreamingResponse:
    """Server-sent progress events until the job ends (see `chatterbox_serve/jobs/events.py`)."""
    service = _service(state)
    await asyncio.to_thread(service.get, owner, job_id)  # 404 before the stream starts
    assert state.jobs is not None
    slot = state.streams.acquire(SSE_STREAMS, owner or OPEN_OWNER)
    idle_s = state.settings.tenancy.sse_idle_timeout_s
    events = job_events(service, owner, job_id, state.jobs.sse_poll_s, idle_s)

    async def body() -> AsyncIterator[bytes]:
        async for kind, data in events:
            yield wire.sse_message(kind, {"job_id": job_id, **data})

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return HeldResponse(body(), slot, media_type="text/event-stream", headers=headers)


@_route("GET", "/audio/speech/long/{job_id}/chunks/{chunk_index}", response_class=Response)
def chunk_audio(job_id: str, chunk_index: int, state: State, owner: Owner) -> Response:
    """One finished chunk as WAV, for playing a job while it is still running."""
    service = _service(state)
    commit = service.chunk(owner, job_id, chunk_index)
    mark = commit.extra.get("watermark")
    headers = {"X-Watermark": mark} if isinstance(mark, str) else None
    return Response(
        service.store.chunk_audio(commit), media_type=AudioFormat.WAV.media_type, headers=headers
    )


@_route("GET", "/audio/speech/long/{job_id}/download", response_class=StreamingResponse)
def download(
    job_id: str,
    state: State,
    owner: Owner,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> StreamingResponse:
    """The finished file, streamed from storage; honours one HTTP `Range`."""
    service = _service(state)
    record, key, size = service.output(owner, job_id)
    start, end = parse_range(range_header, size)
    fmt = AudioFormat(record.parameters.response_format)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start),
        "Content-Disposition": f'attachment; filename="long_text_{job_id}.{fmt.value}"',
    }
    if record.output_watermark is not None:
        headers["X-Watermark"] = record.output_watermark
    status = 200
    if range_header is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    slot = state.streams.acquire(DOWNLOADS, owner or OPEN_OWNER)
    blocks = service.store.blobs.read_range(key, start, end)
    return HeldResponse(
        blocks, slot, status_code=status, media_type=fmt.media_type, headers=headers
    )


def parse_range(header: str | None, size: int) -> tuple[int, int]:
    """(start, end exclusive) of a single `bytes=` range; the whole file without one.

    Raises:
        RangeNotSatisfiableError: a range that is malformed, multiple, or outside the file.
    """
    if header is None:
        return 0, size
    unit, _, spec = header.strip().partition("=")
    first, dash, last = spec.strip().partition("-")
    try:
        if unit.strip().lower() != "bytes" or not dash or "," in spec:
            raise ValueError
        if first == "":
            start, end = max(0, size - int(last)), size
        else:
            start = int(first)
            end = min(size, int(last) + 1) if last else size
    except ValueError:
        start, end = -1, -1
    if not 0 <= start < end:
        raise RangeNotSatisfiableError(
            f"Range {header!r} is not satisfiable for {size} bytes.", param="Range"
        )
    return start, end


def _service(state: State) -> JobService:
    assert state.jobs is not None
    return state.jobs.service


def _notify(state: State, job_id: str) -> None:
    assert state.jobs is not None
    state.jobs.notify(job_id)


def _item(record: JobRecord) -> dict[str, Any]:
    return wire.list_item(record, record.preview)


def _date(value: str | None, param: str) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidRequestError(f"Invalid {param} format.", param=param) from None
