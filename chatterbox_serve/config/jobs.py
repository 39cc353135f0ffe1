"""The jobs section: long-text job storage, limits, workers and retention."""

from __future__ import annotations

from pydantic import Field

from chatterbox_serve.config.base import _env, _Section


class JobsConfig(_Section):
    """Long-text jobs (`/v1/audio/speech/long`): storage, limits, workers, retention."""

    jobs_url: str | None = Field(
        None,
        description="Where jobs are kept: s3://bucket/prefix or a directory; unset means "
        "beside the voice library (VOICE_LIBRARY_URL or VOICE_LIBRARY_DIR).",
        json_schema_extra=_env("JOBS_URL"),
    )
    max_length: int = Field(
        100_000,
        ge=1,
        le=1_000_000,
        description="Longest long-text job input, in characters.",
        json_schema_extra=_env("LONG_TEXT_MAX_LENGTH"),
    )
    retention_days: float = Field(
        7.0,
        gt=0.0,
        le=3650.0,
        description="Days a finished job and its audio are kept.",
        json_schema_extra=_env("LONG_TEXT_JOB_RETENTION_DAYS"),
    )
    max_jobs_per_key: int = Field(
        5,
        ge=1,
        le=10_000,
        description="Unfinished jobs one API key may have at once (create, retry and bulk "
        "retry all count, atomically); more get 429.",
        json_schema_extra=_env("CHATTERBOX_MAX_JOBS_PER_KEY"),
    )
    jobs_per_worker: int = Field(
        3,
        ge=1,
        le=100,
        description="Jobs one job-worker replica runs at once.",
        json_schema_extra=_env("LONG_TEXT_MAX_CONCURRENT_JOBS"),
    )
    chunks_in_flight_per_job: int = Field(
        4,
        ge=1,
        le=256,
        description="Chunks of one job at the model at once.",
        json_schema_extra=_env("CHATTERBOX_JOB_CHUNKS_IN_FLIGHT"),
    )
    chunks_in_flight_total: int = Field(
        8,
        ge=1,
        le=1024,
        description="Chunks of all jobs of one worker replica at the model at once.",
        json_schema_extra=_env("CHATTERBOX_JOB_TOTAL_CHUNKS_IN_FLIGHT"),
    )
    lease_s: float = Field(
        30.0,
        ge=1.0,
        le=3600.0,
        description="Lease of a worker on a job; a dead worker's job is taken over after it.",
        json_schema_extra=_env("CHATTERBOX_JOB_LEASE_S"),
    )
    poll_s: float = Field(
        2.0,
        ge=0.05,
        le=600.0,
        description="How often an idle job worker looks for work.",
        json_schema_extra=_env("CHATTERBOX_JOB_POLL_S"),
    )
    chunk_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="Tries per chunk on server-side failures before the chunk fails.",
        json_schema_extra=_env("CHATTERBOX_JOB_CHUNK_ATTEMPTS"),
    )
    max_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="Runs of one job (takeovers and failed final assemblies included) before "
        "it fails with the last run's reason; a retry or a resume starts the count again.",
        json_schema_extra=_env("CHATTERBOX_JOB_MAX_ATTEMPTS"),
    )
