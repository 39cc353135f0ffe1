"""What the job store keeps about a long-text job, as frozen dataclasses with JSON forms.

A job is split by who writes it, so no two writers ever race on the same bytes
without a compare-and-swap:

- `JobPlan` (the chunk texts) and the input text are written once, at creation.
- `JobRecord` (state, progress, user metadata) is a versioned cell: every change
  is a read-modify-write that fails and retries if someone else wrote first.
- `ChunkCommit` marks one finished chunk; it is created once, never replaced, so a
  chunk can never be counted twice.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from chatterbox_serve.audio.formats import SAMPLE_RATE
from chatterbox_serve.families import ModelFamily
from chatterbox_serve.generation import GenerationParameters


class JobState(str, enum.Enum):
    """The original API's job states."""

    PENDING = "pending"
    CHUNKING = "chunking"
    PROCESSING = "processing"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED

    @property
    def runnable(self) -> bool:
        """A worker should be running (or about to run) the job."""
        return self in (JobState.PENDING, JobState.CHUNKING, JobState.PROCESSING)


_FINISHED = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})

# How much of a job's input lists show, and how much search looks at.
PREVIEW_CHARS = 100
SEARCH_PREFIX_CHARS = 2000

# Owner of jobs created while the API has no keys: everyone shares one namespace.
OPEN_OWNER = "open"


def owner_of(api_key: str | None) -> str:
    """The owner id stored with a job: a hash of the API key, never the key itself."""
    if not api_key:
        return OPEN_OWNER
    return "k" + hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()[:40]


@dataclass(frozen=True)
class JobParameters:
    """What a job is spoken with, fixed at creation (a retry may change some)."""

    voice: str | None
    language: str
    response_format: str
    generation: GenerationParameters = GenerationParameters()
    speed: float = 1.0
    # The voice was given as {"id": ...}, which matches voice ids only.
    voice_by_id: bool = False
    # The stored voice's id at creation (None: the built-in voice): what the job runs
    # with, so a voice renamed or replaced under the same name later changes nothing.
    voice_id: str | None = None
    # The model family that speaks it; None (records from before families): the default.
    model: ModelFamily | None = None

    def to_dict(self) -> dict[str, Any]:
        """The original API's flat `parameters` object, and the model family."""
        return {
            "voice": self.voice,
            "language": self.language,
            "response_format": self.response_format,
            **self.generation.to_dict(),
            "speed": self.speed,
            "voice_id": self.voice_id,
            "model": self.model.value if self.model else None,
        }

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobParameters:
        """From `to_json_dict`, or from the flat form that records written before
        `generation` was nested keep."""
        nested = data.get("generation")
        flat = nested if isinstance(nested, dict) else GenerationParameters.pick(data)
        return cls(
            voice=data.get("voice"),
            language=data["language"],
            response_format=data["response_format"],
            generation=GenerationParameters(**GenerationParameters.pick(flat)),
            speed=data.get("speed", 1.0),
            voice_by_id=bool(data.get("voice_by_id", False)),
            voice_id=data.get("voice_id"),
            model=ModelFamily(data["model"]) if data.get("model") else None,
        )

    def with_changes(self, changes: dict[str, Any]) -> JobParameters:
        """These parameters with a retry's `new_parameters` applied."""
        out = replace(
            self, generation=replace(self.generation, **GenerationParameters.pick(changes))
        )
        if "speed" in changes:
            out = replace(out, speed=changes["speed"])
        if "voice" in changes:
            voice_id = changes.get("voice_id")
            out = replace(out, voice=changes["voice"], voice_by_id=False, voice_id=voice_id)
        return out


@dataclass(frozen=True)
class JobRecord:
    """The mutable state of one job; replaced whole through the store's CAS."""

    job_id: str
    owner: str
    created_at: float
    updated_at: float
    state: JobState
    text_length: int
    text_hash: str
    total_chunks: int
    total_chars: int
    parameters: JobParameters
    generation: int = 0
    completed_chunks: int = 0
    completed_chars: int = 0
    failed_chunks: tuple[int, ...] = ()
    current_chunk: int | None = None
    error: str | None = None
    session_id: str | None = None
    processing_started_at: float | None = None
    processing_paused_at: float | None = None
    processing_completed_at: float | None = None
    active_s: float = 0.0
    audio_s: float = 0.0
    output_key: str | None = None
    output_size_bytes: int | None = None
    output_duration_s: float | None = None
    # The watermark every chunk of the output carries ("perth"), None when any lacks it.
    output_watermark: str | None = None
    retry_count: int = 0
    attempts: int = 0
    is_archived: bool = False
    display_name: str | None = None
    tags: tuple[str, ...] = ()
    last_accessed: float | None = None
    # The start of the input, kept in the record so that listings and search read no
    # input files: `preview` as lists show it, `search_prefix` case-folded for search.
    preview: str = ""
    search_prefix: str = ""

    @property
    def stored_bytes(self) -> int:
        """What the job keeps in storage: its input, its chunks' audio (16-bit PCM at
        the output rate, as the chunk WAVs hold it) and its final file."""
        return (
            self.text_length + int(self.audio_s * SAMPLE_RATE) * 2 + (self.output_size_bytes or 0)
        )

    @property
    def progress_percent(self) -> float:
        if self.state is JobState.COMPLETED:
            return 100.0
        if self.total_chunks <= 0:
            return 0.0
        return round(100.0 * self.completed_chunks / self.total_chunks, 2)

    @property
    def estimated_remaining_s(self) -> int | None:
        """Seconds left at the throughput measured so far (characters per active second)."""
        if self.state.finished or self.completed_chars <= 0 or self.active_s <= 0:
            return None
        rate = self.completed_chars / self.active_s
        return int(round(max(0, self.total_chars - self.completed_chars) / rate))

    def touched(self, now: float, **changes: Any) -> JobRecord:
        return replace(self, updated_at=now, **changes)

    def to_json(self) -> bytes:
        data = asdict(self)
        data["state"] = self.state.value
        data["parameters"] = self.parameters.to_json_dict()
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> JobRecord:
        data = json.loads(raw)
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
        data["state"] = JobState(data["state"])
        data["parameters"] = JobParameters.from_dict(data["parameters"])
        data["failed_chunks"] = tuple(data.get("failed_chunks", ()))
        data["tags"] = tuple(data.get("tags", ()))
        return cls(**data)


@dataclass(frozen=True)
class JobSummary:
    """What listings filter, sort, count and search by, and what stats and the stored-bytes
    quota add up: a few hundred bytes per job.

    Kept in the job's index entry (`jobs-index/<owner>/<id>`), rewritten by the store
    whenever a record change alters it, so a listing reads these and then only its
    page's records, a search reads no input text, and stats and the quota read no record.
    The fields without a default are what an entry written by an earlier version may
    lack: such an entry does not parse, and the store summarises its record again.
    """

    job_id: str
    created_at: float
    state: JobState
    # `JobRecord.stored_bytes`: the quota counts it, so it follows every chunk.
    stored_bytes: int
    # Seconds spent processing (`JobRecord.active_s`): stats average it.
    active_s: float
    completed_at: float | None = None
    duration_s: float | None = None
    size_bytes: int | None = None
    display_name: str | None = None
    is_archived: bool = False
    tags: tuple[str, ...] = ()
    voice: str | None = None
    session_id: str | None = None
    preview: str = ""
    search_prefix: str = ""

    @classmethod
    def of(cls, r: JobRecord, preview: str = "", search_prefix: str = "") -> JobSummary:
        """The record's summary; `preview` and `search_prefix` stand in for a record
        written before it kept them (read once from its input)."""
        return cls(
            job_id=r.job_id,
            created_at=r.created_at,
            state=r.state,
            stored_bytes=r.stored_bytes,
            active_s=r.active_s,
            completed_at=r.processing_completed_at,
            duration_s=r.output_duration_s,
            size_bytes=r.output_size_bytes,
            display_name=r.display_name,
            is_archived=r.is_archived,
            tags=r.tags,
            voice=r.parameters.voice,
            session_id=r.session_id,
            preview=r.preview or preview,
            search_prefix=r.search_prefix or search_prefix,
        )

    @property
    def searchable(self) -> str:
        """What `search=` looks in: name, tags, voice and the start of the input."""
        parts = [self.display_name or "", " ".join(self.tags), self.voice or ""]
        return " ".join([*parts, self.search_prefix]).casefold()

    def to_json(self) -> bytes:
        data = asdict(self)
        data["state"] = self.state.value
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> JobSummary:
        """Raises TypeError for an entry lacking a field without a default."""
        data = json.loads(raw)
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
        data["state"] = JobState(data["state"])
        data["tags"] = tuple(data.get("tags", ()))
        return cls(**data)


@dataclass(frozen=True)
class JobPlan:
    """The chunk texts, in order; written once when the job is created."""

    chunks: tuple[str, ...]

    def to_json(self) -> bytes:
        return json.dumps({"chunks": list(self.chunks)}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> JobPlan:
        return cls(tuple(json.loads(raw)["chunks"]))


@dataclass(frozen=True)
class ChunkCommit:
    """One finished chunk: which audio object holds it, and how it was made."""

    index: int
    audio_key: str
    samples: int
    sample_rate: int
    chars: int
    started_at: float
    completed_at: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ChunkCommit:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class Lease:
    """Who runs a job until when; `expires_at` 0 means released."""

    holder: str
    expires_at: float
    epoch: int = 0

    def live(self, now: float) -> bool:
        return self.expires_at > now

    def to_json(self) -> bytes:
        return json.dumps({"holder": self.holder, "expires_at": self.expires_at}).encode()

    @classmethod
    def from_json(cls, raw: bytes, epoch: int) -> Lease:
        data = json.loads(raw)
        return cls(str(data["holder"]), float(data["expires_at"]), epoch)
