"""Admission to the model's batch queue: items enter only while the engine has room.

`serve.batch` forms the next batch from whatever has arrived within its wait, even
while the engine is still busy with the previous one. Under load that queued many one-
or two-item batches behind the running call (2.0 items per call at 64 clients,
0.21 of engine capacity: docs/PERFORMANCE.md). `BatchGate` holds items back while the engine runs
and then lets in at most one batch's worth, so the items that piled up during a call
form the next full batch and the overflow waits for the one after.

An engine whose stages overlap across calls (the vLLM engine: T3 of one call decodes
while S3Gen finishes another's items) declares `max_concurrent_calls` above 1, and
the gate then lets that many calls run at once; for every other engine a
second call would only queue behind the first on the device.

Background items (chunks of long-text jobs) take only the room interactive items
leave: one waits while any interactive item waits, and a batch takes at most
`background_per_batch` of them, so a running job adds little to the latency of
interactive requests however long it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Ticket:
    """One admitted item; `started` once its batch reached the engine (or it gave up)."""

    __slots__ = ("background", "started")

    def __init__(self, background: bool = False) -> None:
        self.started = False
        self.background = background


class BatchGate:
    """Admit up to `limit` items per engine call, while fewer than `concurrency` calls run."""

    def __init__(
        self, limit: int, background_per_batch: int | None = None, concurrency: int = 1
    ) -> None:
        self.limit = limit
        self.concurrency = max(1, concurrency)
        self.background_per_batch = background_per_batch or max(1, limit // 8)
        self._running = 0
        self._admitted = 0
        self._background = 0
        self._interactive_waiting = 0
        self._wake = asyncio.Event()

    async def enter(self, background: bool = False) -> Ticket:
        if background:
            while (
                self._full
                or self._interactive_waiting
                or self._admitted >= self.limit
                or self._background >= self.background_per_batch
            ):
                await self._wake.wait()
            self._background += 1
        else:
            self._interactive_waiting += 1
            try:
                while self._full or self._admitted >= self.limit:
                    await self._wake.wait()
            finally:
                self._interactive_waiting -= 1
                if not self._interactive_waiting:
                    self._notify()  # background items may take what room is left
        self._admitted += 1
        return Ticket(background)

    def started(self, tickets: Iterable[Ticket]) -> None:
        """The engine call over these items begins."""
        self._running += 1
        for ticket in tickets:
            self._release(ticket)

    def finished(self) -> None:
        """The engine call ended; waiting items may form the next batch."""
        self._running -= 1
        self._notify()

    def abandon(self, ticket: Ticket) -> None:
        """The caller was cancelled; free its place if its batch never started."""
        self._release(ticket)
        self._notify()

    @property
    def _full(self) -> bool:
        return self._running >= self.concurrency

    def _release(self, ticket: Ticket) -> None:
        if not ticket.started:
            ticket.started = True
            self._admitted -= 1
            self._background -= ticket.background

    def _notify(self) -> None:
        # Wake every current waiter; each re-checks, and those still held wait on a new event.
        self._wake.set()
        self._wake = asyncio.Event()
