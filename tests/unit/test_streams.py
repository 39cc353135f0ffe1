"""Per-key stream slots (the limit holds per key and kind, a release is idempotent), and
flow control: a body waits a window ahead of what the proxy reports delivered."""

from __future__ import annotations

import asyncio

import pytest
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from chatterbox_serve.errors import TooManyStreamsError
from deployments.streams import (
    DELIVERED,
    DELIVERY_HEADER,
    DOWNLOADS,
    REPORT_EVERY_HEADER,
    SSE_STREAMS,
    DeliveryReports,
    FlowControl,
    FlowLedger,
    StreamSlots,
)


def test_slots_cap_each_key_and_kind_and_come_back_once() -> None:
    slots = StreamSlots({SSE_STREAMS: 2, DOWNLOADS: 1})
    first, second = slots.acquire(SSE_STREAMS, "a"), slots.acquire(SSE_STREAMS, "a")
    with pytest.raises(TooManyStreamsError, match="CHATTERBOX_MAX_SSE_STREAMS_PER_KEY"):
        slots.acquire(SSE_STREAMS, "a")
    slots.acquire(SSE_STREAMS, "b")  # another key is not affected
    download = slots.acquire(DOWNLOADS, "a")  # nor another kind
    with pytest.raises(TooManyStreamsError, match="CHATTERBOX_MAX_DOWNLOADS_PER_KEY"):
        slots.acquire(DOWNLOADS, "a")
    first.release()
    first.release()  # a second release must not free someone else's slot
    assert slots.count(SSE_STREAMS, "a") == 1
    slots.acquire(SSE_STREAMS, "a")
    with pytest.raises(TooManyStreamsError):
        slots.acquire(SSE_STREAMS, "a")
    second.release()
    download.release()
    assert slots.count(DOWNLOADS, "a") == 0


BLOCK = 256 * 1024


async def _blocks(scope: Scope, receive: Receive, send: Send) -> None:
    await StreamingResponse(iter([b"x" * BLOCK] * 8))(scope, receive, send)


async def test_a_body_waits_a_window_ahead_of_what_was_delivered() -> None:
    ledger = FlowLedger()
    app = FlowControl(_blocks, window=2 * BLOCK, ledger=ledger)
    channel: asyncio.Queue[Message] = asyncio.Queue()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    def body_bytes() -> int:
        return sum(len(m.get("body", b"")) for m in sent)

    scope = {"type": "http", "headers": [(DELIVERY_HEADER, b"1")]}
    task = asyncio.create_task(app(scope, channel.get, send))
    await asyncio.sleep(0.05)
    assert body_bytes() == 3 * BLOCK  # more than the window out: the next block waits
    assert (REPORT_EVERY_HEADER, str(BLOCK // 2).encode()) in sent[0]["headers"]
    assert ledger.figures() == {
        "paced_responses": 1,
        "waiting_for_client": 1,
        "sent_bytes": 3 * BLOCK,
        "unacknowledged_bytes": 3 * BLOCK,
    }
    await channel.put({"type": DELIVERED, "bytes": 2 * BLOCK})
    await asyncio.sleep(0.05)
    assert body_bytes() == 5 * BLOCK
    await channel.put({"type": DELIVERED, "bytes": 8 * BLOCK})
    await asyncio.wait_for(task, 5)
    assert body_bytes() == 8 * BLOCK and ledger.figures()["paced_responses"] == 0


async def test_an_unmarked_request_is_not_paced() -> None:
    ledger = FlowLedger()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    never: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    app = FlowControl(_blocks, window=BLOCK, ledger=ledger)
    await asyncio.wait_for(app({"type": "http", "headers": []}, lambda: never, send), 5)
    assert sum(len(m.get("body", b"")) for m in sent) == 8 * BLOCK


async def test_the_proxy_reports_delivery_where_the_ingress_asked() -> None:
    seen: dict[str, object] = {}

    async def ingress(scope: Scope, receive: Receive, send: Send) -> None:
        seen["headers"] = scope["headers"]
        start = {"type": "http.response.start", "status": 200, "headers": []}
        start["headers"] = [(b"content-type", b"audio/wav"), (REPORT_EVERY_HEADER, b"100")]
        await send(start)
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"x" * 60, "more_body": True})
        seen["report"] = await receive()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    client: list[Message] = []

    async def send(message: Message) -> None:
        client.append(message)

    never: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    forged = {"type": "http", "headers": [(DELIVERY_HEADER, b"0"), (b"host", b"x")]}
    await asyncio.wait_for(DeliveryReports(ingress)(forged, lambda: never, send), 5)
    assert seen["report"] == {"type": DELIVERED, "bytes": 180}
    assert seen["headers"] == [(b"host", b"x"), (DELIVERY_HEADER, b"1")]
    assert client[0]["headers"] == [(b"content-type", b"audio/wav")]  # ours, removed
