"""Long-text jobs: durable records, leases, resumable chunked synthesis and assembly."""

from chatterbox_serve.jobs.records import (
    OPEN_OWNER,
    ChunkCommit,
    JobParameters,
    JobPlan,
    JobRecord,
    JobState,
    Lease,
    owner_of,
)
from chatterbox_serve.jobs.runner import JobRunner, RunReport
from chatterbox_serve.jobs.service import HistoryQuery, JobsAccess, JobService
from chatterbox_serve.jobs.storage import JobBlobStore, build_job_blob_store
from chatterbox_serve.jobs.store import JobStore
from chatterbox_serve.jobs.worker import JobWorker

__all__ = [
    "OPEN_OWNER",
    "ChunkCommit",
    "HistoryQuery",
    "JobBlobStore",
    "JobParameters",
    "JobPlan",
    "JobRecord",
    "JobRunner",
    "JobService",
    "JobsAccess",
    "JobState",
    "JobStore",
    "JobWorker",
    "Lease",
    "RunReport",
    "build_job_blob_store",
    "owner_of",
]
