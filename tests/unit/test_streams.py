"""Per-key stream slots: the limit holds per key and kind, and a release is idempotent."""

from __future__ import annotations

import pytest

from chatterbox_serve.errors import TooManyStreamsError
from deployments.streams import DOWNLOADS, SSE_STREAMS, StreamSlots


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
