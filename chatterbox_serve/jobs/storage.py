"""Blob storage for jobs: the voice library's stores, plus streamed writes and ranged reads.

Job audio is too large to hold in memory whole (a 100,000-character job is hours of
audio), so on top of the voice store's atomic primitives a job store can:

- `open_writer(key)`: write a key piece by piece; it appears, complete, only when the
  block exits cleanly (a temp file and `os.replace` locally; a multipart upload that
  is completed on close, or aborted on error, on S3);
- `size(key)` and `read_range(key, start, end)`: serve HTTP `Range` requests without
  reading the whole object.
"""

from __future__ import annotations

import abc
import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

from chatterbox_serve.config import Settings
from chatterbox_serve.voices.store import LocalVoiceStore, S3VoiceStore, VoiceStore

READ_BLOCK = 1 << 20


class BlobWriter(Protocol):
    def write(self, data: bytes) -> int: ...


class JobBlobStore(VoiceStore):
    """A `VoiceStore` that can also stream writes and ranged reads."""

    @abc.abstractmethod
    def open_writer(self, key: str) -> contextlib.AbstractContextManager[BlobWriter]:
        """Write `key` in pieces; published atomically when the block exits without error."""

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """Bytes in `key`; raises `FileNotFoundError`."""

    @abc.abstractmethod
    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes `start` to `end` (exclusive) of `key`, in blocks of at most 1 MiB."""


class LocalJobBlobStore(LocalVoiceStore, JobBlobStore):
    """Job blobs in a local (or node-shared POSIX) directory."""

    @contextlib.contextmanager
    def open_writer(self, key: str) -> Iterator[BlobWriter]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        with open(self._path(key), "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                block = f.read(min(READ_BLOCK, left))
                if not block:
                    return
                left -= len(block)
                yield block


class S3JobBlobStore(S3VoiceStore, JobBlobStore):
    """Job blobs in an S3-compatible bucket."""

    @contextlib.contextmanager
    def open_writer(self, key: str) -> Iterator[BlobWriter]:
        f: Any = self.fs.open(self._path(key), "wb", block_size=8 * READ_BLOCK)
        try:
            yield f
        except BaseException:
            # Closing would complete the multipart upload and publish a partial object.
            f.discard()
            f.closed = True  # discarded: nothing to flush when it is garbage-collected
            raise
        f.close()

    def size(self, key: str) -> int:
        return int(self.fs.info(self._path(key))["size"])

    def read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        pos = start
        while pos < end:
            stop = min(end, pos + READ_BLOCK)
            block: bytes = self.fs.cat_file(self._path(key), start=pos, end=stop)
            if not block:
                return
            pos += len(block)
            yield block


def build_job_blob_store(settings: Settings) -> JobBlobStore:
    """Where jobs live: `JOBS_URL` if set, else the voice library's storage.

    `JOBS_URL` is an `s3://bucket/prefix` or a local directory. Without it, jobs share
    the voice library's bucket (`VOICE_LIBRARY_URL`) or directory (`VOICE_LIBRARY_DIR`),
    under keys of their own (`jobs/...`).
    """
    voices = settings.voices
    url = settings.jobs.jobs_url or voices.voice_library_url
    if url and url.startswith("s3://"):
        return S3JobBlobStore(url, voices.s3_endpoint_url)
    return LocalJobBlobStore(url or voices.voice_library_dir)
