"""Where the voice library keeps its bytes: a local directory or S3-compatible storage.

A store is a flat map from keys (`names/ab12.json`, `voices/<id>/audio.mp3`) to
immutable-once-written blobs, with the three primitives the library builds its
consistency on:

- `put` replaces a key atomically: readers see the old bytes or the new, never a
  mix (a temp file and `os.replace` locally; S3 objects appear whole).
- `create` writes a key only if it does not exist, atomically, raising
  `FileExistsError` otherwise (a hard link of a temp file locally; a conditional
  PUT with `If-None-Match: *` on S3). Of many racing creators, exactly one wins.
- `take` deletes a key only if it still holds the bytes the caller read
  (compare-and-delete under an `flock` locally; a DELETE with `If-Match: <etag>` on
  S3). Of many racing takers, exactly one wins.

Keys are built by the library from hashes and random ids, never from user input.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import itertools
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from chatterbox_serve.config import VoiceConfig

_TMP_PREFIX = ".tmp-"
# The folders the voice library writes under (beside its top-level files).
_LIBRARY_FOLDERS = ("voices", "names")


class VoiceStore(abc.ABC):
    """Blob storage with atomic replace, exclusive create and compare-and-delete."""

    url: str

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes at `key`; raises `FileNotFoundError`."""

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The bytes of every key that exists; missing keys are left out."""
        found: dict[str, bytes] = {}
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                found[key] = self.get(key)
        return found

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write `key`, replacing it atomically if it exists."""

    @abc.abstractmethod
    def create(self, key: str, data: bytes) -> None:
        """Write `key` only if absent; raises `FileExistsError` if it exists."""

    @abc.abstractmethod
    def take(self, key: str, expected: bytes) -> bool:
        """Delete `key` if it still holds `expected`; False if it does not or is gone."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete `key` if it exists."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key under `prefix` (a folder, ending in '/')."""

    @abc.abstractmethod
    def modified(self, key: str) -> float:
        """When `key` was last written, as a Unix time; raises `FileNotFoundError`."""

    def remove_stale_temporaries(self, min_age_s: float) -> int:
        """Remove half-written files a crashed writer left, if older than `min_age_s`.

        Returns how many were removed. Stores whose writes are atomic leave none.
        """
        return 0


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or p.startswith(_TMP_PREFIX) for p in parts):
        raise ValueError(f"invalid store key {key!r}")
    return key


class LocalVoiceStore(VoiceStore):
    """A directory on a local (or node-shared POSIX) filesystem."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _write_temp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.replace(self._write_temp(path, data), path)

    def create(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            # link() fails if the target exists and publishes a complete file, which
            # O_EXCL on the target itself would not (readers could see it empty).
            os.link(tmp, path)
        finally:
            tmp.unlink()

    def take(self, key: str, expected: bytes) -> bool:
        path = self._path(key)
        with self._lock():
            try:
                if path.read_bytes() != expected:
                    return False
                path.unlink()
            except FileNotFoundError:
                return False
        return True

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def modified(self, key: str) -> float:
        return self._path(key).stat().st_mtime

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        keys: list[str] = []
        for dirpath, _, files in os.walk(base):
            for name in files:
                if not name.startswith(_TMP_PREFIX):
                    keys.append(str((Path(dirpath) / name).relative_to(self.root)))
        return sorted(keys)

    def remove_stale_temporaries(self, min_age_s: float) -> int:
        # Only the library's own folders and top-level files: the root may also hold
        # jobs (JOBS_URL unset), whose temporaries are outputs being written.
        cutoff = time.time() - min_age_s
        removed = 0
        top_files = [p.name for p in self.root.glob(f"{_TMP_PREFIX}*")]
        tops: list[tuple[str, list[str], list[str]]] = [(str(self.root), [], top_files)]
        walks = (os.walk(self.root / folder) for folder in _LIBRARY_FOLDERS)
        for dirpath, _, files in itertools.chain(tops, *walks):
            for name in files:
                path = Path(dirpath) / name
                if not name.startswith(_TMP_PREFIX):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
        return removed

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # flock serialises compare-and-delete across every process on this node.
        with open(self.root / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class S3VoiceStore(VoiceStore):
    """An S3-compatible bucket and prefix, through fsspec's s3fs.

    Exclusive create and compare-and-delete use S3's conditional requests
    (`If-None-Match: *` on PUT, `If-Match` on DELETE), which AWS S3 and most
    S3-compatible servers honour atomically.
    """

    def __init__(self, url: str, endpoint_url: str | None = None, **storage: Any) -> None:
        import fsspec

        if not url.startswith("s3://"):
            raise ValueError(f"VOICE_LIBRARY_URL must start with s3://; got {url!r}")
        client_kwargs = dict(storage.pop("client_kwargs", {}))
        if endpoint_url:
            client_kwargs["endpoint_url"] = endpoint_url
        # No listings cache and no shared instance: another replica may change any key.
        self.fs = fsspec.filesystem(
            "s3",
            client_kwargs=client_kwargs,
            use_listings_cache=False,
            skip_instance_cache=True,
            **storage,
        )
        self.root = url[len("s3://") :].rstrip("/")
        self.url = url

    def _path(self, key: str) -> str:
        return f"{self.root}/{_check_key(key)}"

    def get(self, key: str) -> bytes:
        data: bytes = self.fs.cat_file(self._path(key))
        return data

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        paths = {self._path(k): k for k in keys}
        if not paths:
            return {}
        found = self.fs.cat(list(paths), on_error="omit")
        return {paths[p]: data for p, data in found.items() if isinstance(data, bytes)}

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)

    def create(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data, mode="create")

    def take(self, key: str, expected: bytes) -> bool:
        path = self._path(key)
        try:
            etag = self.fs.info(path)["ETag"]
            if self.fs.cat_file(path) != expected:
                return False
            bucket, obj, _ = self.fs.split_path(path)
            self.fs.call_s3("delete_object", Bucket=bucket, Key=obj, IfMatch=etag)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # 412 Precondition Failed: someone changed it
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def modified(self, key: str) -> float:
        return float(self.fs.modified(self._path(key)).timestamp())

    def list(self, prefix: str) -> list[str]:
        base = f"{self.root}/{prefix}"
        try:
            paths = self.fs.find(base)
        except FileNotFoundError:
            return []
        return sorted(p[len(self.root) + 1 :] for p in paths)


def build_voice_store(config: VoiceConfig) -> VoiceStore:
    """The store the settings name: S3 when `VOICE_LIBRARY_URL` is set, else the dir."""
    if config.voice_library_url:
        return S3VoiceStore(config.voice_library_url, config.s3_endpoint_url)
    return LocalVoiceStore(config.voice_library_dir)
