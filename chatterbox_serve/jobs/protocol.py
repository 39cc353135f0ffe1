"""Wire shapes of the long-text job API, as the original Chatterbox API defines them.

Requests are pydantic models (the HTTP edge); responses are built as plain dicts
from our records, field for field in the original's names and order, with times
as ISO 8601 in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chatterbox_serve.config import Settings
from chatterbox_serve.generation import GenerationOptions, Speed
from chatterbox_serve.jobs.records import (
    ChunkCommit,
    JobParameters,
    JobPlan,
    JobRecord,
    JobState,
    JobSummary,
)
from chatterbox_serve.protocol import SpeechRequest
from chatterbox_serve.voices import ResolvedVoice

API = "/v1/audio/speech/long"


class LongSpeechRequest(SpeechRequest):
    """Body of `POST /v1/audio/speech/long`: the speech request's fields, plus a session."""

    session_id: str | None = Field(None, max_length=256, description="Frontend session id.")

    def to_parameters(self, settings: Settings, voice: ResolvedVoice) -> JobParameters:
        """The job's settings, each as a speech request of the same body gets it.

        Raises:
            ModelNotFoundError: a model this service does not load.
            InvalidRequestError: a language the model does not speak, or a voice too
                short for it.
        """
        family = self.family(settings)
        self._voice_prompt(family, voice)
        return JobParameters(
            voice=self.voice_key,
            voice_by_id=self.voice_by_id,
            language=self._language(family, voice),
            response_format=self.audio_format(settings).value,
            generation=self.resolve(settings.generation.parameters(family)),
            speed=self.speed,
            model=family,
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobUpdateRequest(_Strict):
    """Body of `PATCH /v1/audio/speech/long/{id}`."""

    display_name: str | None = Field(None, max_length=200)
    is_archived: bool | None = None
    tags: list[str] | None = Field(None, max_length=20)

    @field_validator("tags")
    @classmethod
    def _short_tags(cls, tags: list[str] | None) -> list[str] | None:
        if tags is None:
            return None
        if any(len(tag) > 50 for tag in tags):
            raise ValueError("Tag length cannot exceed 50 characters")
        return [tag.strip() for tag in tags]


class RetryParameters(GenerationOptions, _Strict):
    """What `new_parameters` of a retry may change: the voice, the speed, and any
    generation parameter."""

    model_config = ConfigDict(extra="forbid")

    voice: str | None = Field(None, min_length=1, max_length=256)
    speed: Speed | None = None


class JobRetryRequest(_Strict):
    """Body of `POST /v1/audio/speech/long/{id}/retry`."""

    preserve_chunks: bool = True
    new_parameters: RetryParameters | None = None

    def changes(self) -> dict[str, Any]:
        if self.new_parameters is None:
            return {}
        return self.new_parameters.model_dump(exclude_none=True)


class BulkJobRequest(_Strict):
    """Body of `POST /v1/audio/speech/long/bulk`."""

    job_ids: list[str] = Field(min_length=1, max_length=100)
    action: Literal["delete", "archive", "unarchive", "retry"]
    confirm: bool


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _can(record: JobRecord) -> dict[str, bool]:
    return {
        "can_pause": record.state.runnable,
        "can_resume": record.state is JobState.PAUSED,
        "can_cancel": not record.state.finished,
    }


def download_url(record: JobRecord) -> str | None:
    if record.state is JobState.COMPLETED:
        return f"{API}/{record.job_id}/download"
    return None


def create_response(record: JobRecord, estimate_s: int | None, message: str) -> dict[str, Any]:
    return {
        "job_id": record.job_id,
        "status": record.state.value,
        "message": message,
        "estimated_processing_time_seconds": estimate_s,
        "total_chunks": record.total_chunks,
        "status_url": f"{API}/{record.job_id}",
        "sse_url": f"{API}/{record.job_id}/sse",
    }


def metadata(record: JobRecord) -> dict[str, Any]:
    """The original's `LongTextJobMetadata` (paths become our API's URLs)."""
    p = record.parameters
    done = iso(record.processing_completed_at) if record.state is JobState.COMPLETED else None
    return {
        "job_id": record.job_id,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "status": record.state.value,
        "text_length": record.text_length,
        "text_hash": record.text_hash,
        "total_chunks": record.total_chunks,
        "completed_chunks": record.completed_chunks,
        "failed_chunks": list(record.failed_chunks),
        "current_chunk": record.current_chunk,
        "voice": p.voice,
        "parameters": p.to_dict(),
        "processing_started_at": iso(record.processing_started_at),
        "processing_paused_at": iso(record.processing_paused_at),
        "processing_completed_at": iso(record.processing_completed_at),
        "total_processing_time_ms": int(record.active_s * 1000),
        "output_format": p.response_format,
        "output_path": download_url(record),
        "output_size_bytes": record.output_size_bytes,
        "output_duration_seconds": record.output_duration_s,
        "error": record.error,
        "user_session_id": record.session_id,
        "completion_timestamp": done,
        "audio_file_path": download_url(record),
        "audio_file_size": record.output_size_bytes,
        "total_duration_seconds": record.output_duration_s,
        "retry_count": record.retry_count,
        "original_job_id": record.job_id if record.retry_count else None,
        "is_archived": record.is_archived,
        "last_accessed": iso(record.last_accessed),
        "display_name": record.display_name,
        "tags": list(record.tags),
    }


def chunk_view(index: int, text: str, commit: ChunkCommit | None, job_id: str) -> dict[str, Any]:
    """The original's `LongTextChunk`."""
    return {
        "index": index,
        "text": text,
        "text_preview": text[:50],
        "character_count": len(text),
        "audio_file": f"{API}/{job_id}/chunks/{index}" if commit else None,
        "duration_ms": int(commit.duration_s * 1000) if commit else None,
        "processing_started_at": iso(commit.started_at) if commit else None,
        "processing_completed_at": iso(commit.completed_at) if commit else None,
        "error": None,
    }


def job_response(
    record: JobRecord, plan: JobPlan, commits: Mapping[int, ChunkCommit]
) -> dict[str, Any]:
    """The original's `LongTextJobResponse`."""
    done = [chunk_view(i, plan.chunks[i], commits[i], record.job_id) for i in sorted(commits)]
    current = None
    if record.current_chunk is not None and record.state.runnable:
        nxt = record.current_chunk + 1
        if nxt < len(plan.chunks) and nxt not in commits:
            current = chunk_view(nxt, plan.chunks[nxt], None, record.job_id)
    return {
        "job_id": record.job_id,
        "status": record.state.value,
        "progress": {
            "job_id": record.job_id,
            "overall_progress": record.progress_percent,
            "current_chunk": current,
            "completed_chunks": done,
            "estimated_remaining_seconds": record.estimated_remaining_s,
            "status": record.state.value,
            "error": record.error,
        },
        "metadata": metadata(record),
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "download_url": download_url(record),
        **_can(record),
    }


def list_item(record: JobRecord, preview: str) -> dict[str, Any]:
    """The original's `LongTextJobListItem`."""
    return {
        "job_id": record.job_id,
        "status": record.state.value,
        "text_preview": preview[:100],
        "text_length": record.text_length,
        "progress_percentage": record.progress_percent,
        "created_at": iso(record.created_at),
        "completed_at": iso(record.processing_completed_at)
        if record.state is JobState.COMPLETED
        else None,
        "download_url": download_url(record),
        "can_resume": record.state is JobState.PAUSED,
        "voice": record.parameters.voice,
        "estimated_remaining_seconds": record.estimated_remaining_s,
        "total_duration_seconds": record.output_duration_s,
        "audio_file_size": record.output_size_bytes,
        "retry_count": record.retry_count,
        "is_archived": record.is_archived,
        "display_name": record.display_name,
        "tags": list(record.tags),
        "last_accessed": iso(record.last_accessed),
        "parameters": record.parameters.to_dict(),
    }


def job_list(
    items: list[dict[str, Any]], records: Sequence[JobRecord] | Sequence[JobSummary]
) -> dict[str, Any]:
    """The original's `LongTextJobList`; counts are over `records`."""
    return {
        "jobs": items,
        "total_jobs": len(records),
        "active_jobs": sum(1 for r in records if r.state.runnable),
        "completed_jobs": sum(1 for r in records if r.state is JobState.COMPLETED),
    }


def paging(limit: int, offset: int, has_more: bool) -> dict[str, Any]:
    """Our extension of a job list: where this page is, and whether another follows
    (ask again with `offset` + `limit`)."""
    return {"limit": limit, "offset": offset, "has_more": has_more}


def action(record: JobRecord, message: str) -> dict[str, Any]:
    """The original's `LongTextJobAction`."""
    return {"success": True, "message": message, "status": record.state.value}


def details(
    record: JobRecord, text: str, plan: JobPlan, commits: Mapping[int, ChunkCommit]
) -> dict[str, Any]:
    """The original's `LongTextJobDetails`."""
    chunks = [
        chunk_view(i, chunk, commits.get(i), record.job_id) for i, chunk in enumerate(plan.chunks)
    ]
    for i in record.failed_chunks:
        chunks[i]["error"] = record.error
    done = len(commits)
    return {
        "metadata": metadata(record),
        "chunks": chunks,
        "input_text": text,
        "error_log": [record.error] if record.error else [],
        "performance_metrics": {
            "total_processing_time_ms": int(record.active_s * 1000),
            "avg_chunk_time_ms": int(record.active_s * 1000 / done) if done else 0,
            "success_rate": done / len(plan.chunks) if plan.chunks else 0,
            "characters_per_second": round(record.completed_chars / record.active_s, 2)
            if record.active_s
            else None,
        },
    }


def sse_message(event: str, data: Mapping[str, Any]) -> bytes:
    """One server-sent event with a named type, as the original's EventSourceResponse sends."""
    import json

    body = json.dumps(dict(data), separators=(",", ":"))
    return f"event: {event}\ndata: {body}\n\n".encode()
