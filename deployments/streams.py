"""Long-lived responses: per-key limits on them, and flow control for their bodies.

A progress stream on a paused job, or a download read slowly, holds an ingress slot
for as long as the client likes; without a cap one key can hold them all. Counts are
per ingress replica (each replica bounds what it holds), so the service-wide bound
is the setting times the number of ingress replicas. A response's body is sent at
most a window (CHATTERBOX_STREAM_WINDOW_BYTES) ahead of what its client has taken
(see "Flow control across Ray's proxy" below).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import ContentStream, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class HeldResponse(StreamingResponse):
    """A streaming response that holds a slot until it ends, however it ends.

    The release is here, not in the body's generator: a client that leaves cancels
    the response mid-`send`, and a generator left suspended is only closed when it is
    garbage-collected, which kept the slot taken long after the client was gone.
    """

    def __init__(self, content: ContentStream, slot: Slot, **kw: Any) -> None:
        super().__init__(content, **kw)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


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


# -- Flow control across Ray's proxy ---------------------------------------------------
#
# Ray Serve's replica hands every ASGI message of a response to the proxy through an
# unbounded queue and Ray's object store, whatever the client reads: a download whose
# client never reads would be pushed through whole. Only the proxy sees the client's
# pace (uvicorn's `send` waits while the socket is full). So the proxy middleware
# `DeliveryReports` tells the ingress how many body bytes it has delivered, as a
# message of its own on the request's `receive` channel (the one Ray already carries
# from proxy to replica), and the ingress middleware `FlowControl` holds a response's
# next body message while more than the window is sent but not yet delivered.

# Request header the proxy sets (dropping any a client sent): it reports delivery.
DELIVERY_HEADER = b"x-chatterbox-delivery"
# Response header from the ingress: report every this many delivered bytes.
REPORT_EVERY_HEADER = b"x-chatterbox-report-every"
# The `receive` message that carries the report.
DELIVERED = "chatterbox.delivered"


class DeliveryReports:
    """Proxy middleware: reports the body bytes each response has delivered to its client.

    Reports are sent only for responses whose ingress asked for them (a response
    header, removed here), at most once per `every` bytes.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != DELIVERY_HEADER]
        scope["headers"] = [*headers, (DELIVERY_HEADER, b"1")]
        report = _Report()
        try:
            await self.app(scope, report.receive(receive), report.send(send))
        finally:
            if report.pending is not None:
                report.pending.cancel()


class _Report:
    """One response's delivery, on the proxy side."""

    def __init__(self) -> None:
        self.every = 0
        self.delivered = 0
        self.reported = 0
        self.due = asyncio.Event()
        self.pending: asyncio.Future[Message] | None = None

    def send(self, send: Send) -> Send:
        async def reporting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": self._strip(message.get("headers", []))}
            await send(message)
            if message["type"] == "http.response.body" and self.every:
                self.delivered += len(message.get("body", b""))
                if self.delivered - self.reported >= self.every:
                    self.due.set()

        return reporting_send

    def _strip(self, headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        kept = []
        for name, value in headers:
            if name.lower() == REPORT_EVERY_HEADER:
                with contextlib.suppress(ValueError):
                    self.every = max(0, int(value))
            else:
                kept.append((name, value))
        return kept

    def receive(self, receive: Receive) -> Receive:
        async def reporting_receive() -> Message:
            while True:
                if self.due.is_set():
                    self.due.clear()
                    self.reported = self.delivered
                    return {"type": DELIVERED, "bytes": self.delivered}
                if self.pending is None:
                    self.pending = asyncio.ensure_future(receive())
                due: asyncio.Future[Any] = asyncio.ensure_future(self.due.wait())
                waits: set[asyncio.Future[Any]] = {self.pending, due}
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    due.cancel()
                if self.pending.done():
                    done, self.pending = self.pending, None
                    return done.result()

        return reporting_receive


@dataclass(eq=False)
class Flow:
    """One paced response on the ingress: body bytes sent, and delivered as last reported."""

    window: int
    sent: int = 0
    delivered: int = 0
    waiting: bool = False
    gone: bool = False
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    def report(self, delivered: int) -> None:
        self.delivered = max(self.delivered, delivered)
        self.progress.set()

    def leave(self) -> None:
        self.gone = True
        self.progress.set()

    async def room(self) -> None:
        """Wait while more than the window is sent and not delivered (or the client left)."""
        while self.sent - self.delivered > self.window and not self.gone:
            self.waiting = True
            self.progress.clear()
            await self.progress.wait()
        self.waiting = False


@dataclass
class FlowLedger:
    """The open paced responses of one ingress replica, for `/status` (read from a thread)."""

    flows: set[Flow] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, flow: Flow) -> None:
        with self.lock:
            self.flows.add(flow)

    def discard(self, flow: Flow) -> None:
        with self.lock:
            self.flows.discard(flow)

    def figures(self) -> dict[str, int]:
        with self.lock:
            flows = list(self.flows)
        return {
            "paced_responses": len(flows),
            "waiting_for_client": sum(1 for f in flows if f.waiting),
            "sent_bytes": sum(f.sent for f in flows),
            "unacknowledged_bytes": sum(f.sent - f.delivered for f in flows),
        }


class FlowControl:
    """Ingress middleware: a response's body waits while its client is a window behind.

    Applies only to requests the proxy marked (its `DeliveryReports` middleware is
    installed); the proxy's reports are taken off the `receive` channel here, so the
    app never sees them.
    """

    def __init__(self, app: ASGIApp, window: int, ledger: FlowLedger) -> None:
        self.app = app
        self.window = window
        self.ledger = ledger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        marked = (DELIVERY_HEADER, b"1") in [(k.lower(), v) for k, v in scope.get("headers", ())]
        if scope["type"] != "http" or not marked:
            await self.app(scope, receive, send)
            return
        paced = _PacedResponse(Flow(self.window), receive)
        self.ledger.add(paced.flow)
        try:
            await self.app(scope, paced.receive, paced.send(send))
        finally:
            self.ledger.discard(paced.flow)
            if paced.pump is not None:
                paced.pump.cancel()


class _PacedResponse:
    """The ingress side of one marked request.

    Before the body streams, the app's `receive` reads the channel itself, dropping
    reports. From the first streamed body message on, a pump reads it (the app may
    not be reading while its `send` waits for room) and keeps the app's messages for
    it; the app's `receive` then reads those.
    """

    def __init__(self, flow: Flow, receive: Receive) -> None:
        self.flow = flow
        self._receive = receive
        self.pump: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._disconnect: Message | None = None

    def _take(self, message: Message) -> bool:
        """Note a report or a disconnect; True if the message is a report."""
        if message["type"] == DELIVERED:
            self.flow.report(int(message["bytes"]))
            return True
        if message["type"] == "http.disconnect":
            self._disconnect = message
            self.flow.leave()
        return False

    async def _pump(self) -> None:
        while self._disconnect is None:
            message = await self._receive()
            if not self._take(message):
                self._inbox.put_nowait(message)

    async def receive(self) -> Message:
        while self.pump is None:
            message = await self._receive()
            if not self._take(message):
                return message
        if self._inbox.empty() and self._disconnect is not None:
            return self._disconnect
        return await self._inbox.get()

    def send(self, send: Send) -> Send:
        async def paced_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                every = str(max(1, self.flow.window // 4)).encode()
                headers = [*message.get("headers", []), (REPORT_EVERY_HEADER, every)]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and message.get("more_body", False):
                if self.pump is None:
                    self.pump = asyncio.ensure_future(self._pump())
                await self.flow.room()
                self.flow.sent += len(message.get("body", b""))
            await send(message)

        return paced_send
