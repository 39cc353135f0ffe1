"""Per-key limits on long-lived responses: job progress streams and downloads.

A progress stream on a paused job, or a download read slowly, holds an ingress slot
for as long as the client likes; without a cap one key can hold them all. Counts are
per ingress replica (each replica bounds what it holds), so the service-wide bound
is the setting times the number of ingress replicas.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from chatterbox_serve.errors import TooManyStreamsError

# Kinds of held response, with the setting that caps each.
SSE_STREAMS = "progress streams"
DOWNLOADS = "downloads"
SETTINGS = {
    SSE_STREAMS: "CHATTERBOX_MAX_SSE_STREAMS_PER_KEY",
    DOWNLOADS: "CHATTERBOX_MAX_DOWNLOADS_PER_KEY",
}


@dataclass
class Slot:
    """One held stream; `release` is idempotent, so every exit path may call it."""

    slots: StreamSlots
    key: tuple[str, str]
    released: bool = False

    def release(self) -> None:
        with self.slots.lock:
            if self.released:
                return
            self.released = True
            self.slots.held[self.key] -= 1
            if self.slots.held[self.key] <= 0:
                del self.slots.held[self.key]


@dataclass
class StreamSlots:
    """Counts held streams by (kind, owner); `acquire` refuses past the kind's limit.

    Thread-safe: sync routes run in FastAPI's threadpool.
    """

    limits: dict[str, int]
    held: Counter[tuple[str, str]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, kind: str, owner: str) -> Slot:
        """A slot of `kind` for `owner`; `TooManyStreamsError` (429) when all are held."""
        limit = self.limits[kind]
        key = (kind, owner)
        with self.lock:
            if self.held[key] >= limit:
                raise TooManyStreamsError(
                    f"This API key already has {limit} open {kind} on this ingress replica; the "
                    f"limit is {limit} ({SETTINGS[kind]}). Close one, or retry after one ends."
                )
            self.held[key] += 1
        return Slot(self, key)

    def count(self, kind: str, owner: str) -> int:
        with self.lock:
            return self.held[(kind, owner)]
