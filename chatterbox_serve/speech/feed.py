"""`ChunkFeed`: a request's chunks from the model, in order, the later ones sent ahead.

A listener hears chunk k+1 right after chunk k, so chunk k+1 must be ready, or be
streaming, before chunk k has finished playing. The feed keeps chunks in flight ahead
of the one being heard:

- **A whole file** sends every chunk at once, so a long text's chunks are batched with
  each other and with other requests' chunks.
- **A stream** sends chunk 0 alone (the first engine call carries the short first chunk
  on its own: time to first audio). When chunk k starts (its first result is back),
  chunks up to k + `ahead` go out: a bounded window, so a text of thousands of
  characters does not flood the batch queue with chunks nobody will hear for minutes.
- **With a model that streams**, every chunk of a stream goes out in pieces, each
  chunk's pieces taken in by a task of its own and handed on only once the chunk before
  has ended. A chunk sent whole would go out only once completely done: a chunk that
  takes longer to make than the one before takes to play left the listener in silence
  at the boundary.

A later chunk of a stream goes out with `play_after`: the wall-clock time before which
its listener cannot need it, the stream's first audio plus all the audio sent so far
(the listener plays in real time at the fastest). The model's renders of it then keep
to the listener's real buffer instead of acting as if it were heard the moment it
starts (`render_schedule.RenderSchedule.behind`).

Only chunk 0 carries the voice audio; later chunks name it by sha256, and one whose
model replica lacks it is sent again whole (`transfer`). Closing the feed cancels every
chunk in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

from chatterbox_serve.engines.base import SynthesisRequest, SynthesisResult
from chatterbox_serve.errors import ChatterboxError, EngineError
from chatterbox_serve.speech.transfer import (
    Cancellable,
    Submit,
    SubmitStream,
    send_detached,
    stream_detached,
)

logger = logging.getLogger(__name__)


class ChunkFeed:
    """Each chunk's results in order; chunks are sent ahead as described in the module."""

    def __init__(
        self,
        items: Sequence[SynthesisRequest],
        request_id: str,
        submit: Submit,
        submit_stream: SubmitStream | None = None,
        *,
        ahead: int | None = None,
    ) -> None:
        """`ahead`: chunks in flight past the one heard (a stream); None sends all at once.

        `submit_stream`, when given, sends every chunk in pieces.
        """
        self._items = items
        self._request_id = request_id
        self._submit = submit
        self._submit_stream = submit_stream
        self._ahead = ahead
        self._flights: dict[int, _Whole | _Pieces] = {}
        self._sent = 0
        # The stream's first audio (wall clock) and the audio seconds handed on since.
        self._first_audio_at: float | None = None
        self._heard_s = 0.0
        self._open(1 if ahead is not None else len(items))

    async def results(self, index: int) -> AsyncGenerator[SynthesisResult, None]:
        """Chunk `index`'s results: pieces (`partial`), then its last; the chunk before ended."""
        flight = self._flights[index]
        async for result in flight.results():
            if self._ahead is not None:
                self._count(result)
                self._open(index + 1 + self._ahead)
            yield result
        # Ended: forget it. A chunk left part-way stays for `aclose` to cancel.
        self._flights.pop(index, None)

    async def aclose(self) -> None:
        """Cancel every chunk still in flight."""
        flights = list(self._flights.values())
        self._flights.clear()
        self._sent = len(self._items)  # nothing more goes out
        for flight in flights:
            flight.cancel()
        for flight in flights:
            await flight.ended()

    def _count(self, result: SynthesisResult) -> None:
        if result.audio.size and self._first_audio_at is None:
            self._first_audio_at = time.time()
        self._heard_s += result.audio.size / result.sample_rate

    def _play_after(self) -> float | None:
        """When a chunk sent now can be needed at the earliest; None before any audio."""
        if self._ahead is None or self._first_audio_at is None:
            return None
        return self._first_audio_at + self._heard_s

    def _open(self, upto: int) -> None:
        for index in range(self._sent, min(upto, len(self._items))):
            item = self._items[index]
            first = index == 0  # the one call that carries the voice audio
            if not first:
                item = dataclasses.replace(item, play_after=self._play_after())
            if self._submit_stream is not None:
                pieces = (
                    self._submit_stream(item)
                    if first
                    else stream_detached(self._submit_stream, item)
                )
                self._flights[index] = _Pieces(pieces, self._request_id, index)
            else:
                call = self._submit(item) if first else send_detached(self._submit, item)
                self._flights[index] = _Whole(call, self._request_id, index)
        self._sent = max(self._sent, upto)


class _Whole:
    """A chunk sent as one call."""

    def __init__(self, call: Cancellable, request_id: str, index: int) -> None:
        self._call: Cancellable | None = call
        self._request_id = request_id
        self._index = index

    async def results(self) -> AsyncGenerator[SynthesisResult, None]:
        assert self._call is not None
        result = await _settle(self._call, self._request_id, self._index)
        self._call = None  # a settled future holds the chunk's audio
        yield result

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()

    async def ended(self) -> None:
        return None


# What a chunk's taker puts in its queue after the last piece, or the failure.
_END = None


class _Pieces:
    """A chunk sent in pieces: a task takes them in as they come, ahead of the listener."""

    def __init__(self, pieces: AsyncIterator[SynthesisResult], request_id: str, index: int) -> None:
        self._queue: asyncio.Queue[SynthesisResult | Exception | None] = asyncio.Queue()
        self._request_id = request_id
        self._index = index
        self._task = asyncio.ensure_future(self._take(pieces))

    async def _take(self, pieces: AsyncIterator[SynthesisResult]) -> None:
        # `aclosing`: a cancelled chunk closes the model's stream at once (aborting the
        # work there), not whenever the garbage collector gets to it.
        try:
            async with contextlib.aclosing(_checked(pieces, self._request_id, self._index)) as it:
                async for piece in it:
                    self._queue.put_nowait(piece)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the listener's side, raised there
            self._queue.put_nowait(exc)
            return
        self._queue.put_nowait(_END)

    async def results(self) -> AsyncGenerator[SynthesisResult, None]:
        while True:
            got = await self._queue.get()
            if got is _END:
                return
            if isinstance(got, Exception):
                raise got
            yield got

    def cancel(self) -> None:
        self._task.cancel()

    async def ended(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _checked(
    pieces: AsyncIterator[SynthesisResult], request_id: str, index: int
) -> AsyncGenerator[SynthesisResult, None]:
    """A chunk's pieces, with failures reported as `_settle` reports them."""
    try:
        async for piece in pieces:
            if not isinstance(piece, SynthesisResult):
                raise EngineError(f"chunk {index}: engine returned {type(piece).__name__}")
            yield piece
    except (ChatterboxError, asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as exc:
        logger.exception("request %s: chunk %d failed", request_id, index)
        raise EngineError(f"chunk {index} failed: {type(exc).__name__}") from exc
    finally:
        close = getattr(pieces, "aclose", None)
        if close is not None:
            await close()


async def _settle(call: Cancellable, request_id: str, index: int) -> SynthesisResult:
    try:
        result = await call
    except ChatterboxError:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.exception("request %s: chunk %d failed", request_id, index)
        raise EngineError(f"chunk {index} failed: {type(exc).__name__}") from exc
    if not isinstance(result, SynthesisResult):
        raise EngineError(f"chunk {index}: engine returned {type(result).__name__}")
    return result
