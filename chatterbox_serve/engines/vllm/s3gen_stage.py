"""S3Gen as a stage of its own: work from every in-flight item, batched as it arrives.

T3 runs in vLLM's engine-core process and hands items over one by one as they hit
their stop token. Were S3Gen to wait for a whole Serve batch to leave T3, the GPU
would idle in one stage while the other runs (issue 15: 117 audio-s/s for the
engine against 168 for S3Gen alone). `S3GenStage` instead takes each item the
moment T3 finishes it. While one S3Gen batch runs on the engine thread, later items
queue; when it ends, everything queued goes as the next batch. So S3Gen of finished
items runs while vLLM decodes the rest, and the batch grows with the load by itself.

Two kinds of work share the stage: whole items (`vocode`) and steps of streamed
items (`step`, issue 15's first audio). Steps go first, since a listener waits on
each, and both kinds are capped at `max_batch` per pass so neither starves.

Work whose caller went away (a cancelled future) is dropped before it runs.

A pass over few items costs nearly what a pass over many does (S3Gen at small batch is
bound by kernel launches, not arithmetic), so with `max_wait_s` set the stage holds
whole items back until it has `max_batch` of them, or nothing more is decoding in T3
(`upcoming`), or the oldest has waited `max_wait_s`. Streamed steps never wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

W = TypeVar("W")
R = TypeVar("R")

# Runs a function on the engine thread and awaits it (`TorchEngine._on_thread`).
OnThread = Callable[..., Awaitable[Any]]


@dataclass
class _Queue(Generic[W, R]):
    run: Callable[[list[W]], list[R]]
    # (work, its future, when it arrived)
    pending: list[tuple[W, asyncio.Future[R], float]]


class S3GenStage:
    """Batches S3Gen work from concurrent callers onto one engine thread.

    `vocode_batch` and `step_batch` run on that thread and return one result per
    work item, in order; a result may be an exception instance (that item failed),
    and a raise fails every item of that pass.
    """

    def __init__(
        self,
        on_thread: OnThread,
        vocode_batch: Callable[[list[Any]], list[Any]],
        step_batch: Callable[[list[Any]], list[Any]],
        max_batch: int,
        *,
        upcoming: Callable[[], int] = lambda: 0,
        max_wait_s: float = 0.0,
    ) -> None:
        self._on_thread = on_thread
        self.max_batch = max(1, max_batch)
        self._upcoming = upcoming
        self.max_wait_s = max_wait_s
        self._steps: _Queue[Any, Any] = _Queue(step_batch, [])
        self._whole: _Queue[Any, Any] = _Queue(vocode_batch, [])
        self._task: asyncio.Task[None] | None = None
        # Facts for /health and the benchmarks: how full the passes were.
        self.passes = 0
        self.items = 0
        self.busy_s = 0.0

    async def vocode(self, work: Any) -> Any:
        """The waveform of one finished item (or the exception it failed with)."""
        return await self._submit(self._whole, work)

    async def step(self, work: Any) -> Any:
        """New audio of one streamed item (or the exception it failed with)."""
        return await self._submit(self._steps, work)

    def stats(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "items": self.items,
            "mean_batch": round(self.items / self.passes, 2) if self.passes else 0.0,
            "busy_s": round(self.busy_s, 3),
            "queued": len(self._steps.pending) + len(self._whole.pending),
        }

    async def _submit(self, queue: _Queue[Any, Any], work: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        queue.pending.append((work, future, loop.time()))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _hold_whole(self, now: float) -> bool:
        """Whether to wait for more whole items before the next pass."""
        live = [t for _, f, t in self._whole.pending if not f.done()]
        return (
            0 < len(live) < self.max_batch
            and self._upcoming() > 0
            and now - min(live) < self.max_wait_s
        )

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._steps.pending or self._whole.pending:
            if not self._steps.pending and self._hold_whole(loop.time()):
                await asyncio.sleep(0.005)
                continue
            for queue in (self._steps, self._whole):
                taken = _take(queue, self.max_batch)
                if not taken:
                    continue
                began = loop.time()
                try:
                    results = await self._on_thread(queue.run, [w for w, _, _ in taken])
                    if len(results) != len(taken):
                        raise RuntimeError(f"{len(results)} results for {len(taken)} items")
                except Exception as exc:
                    logger.error("S3Gen pass over %d items failed: %r", len(taken), exc)
                    results = [exc] * len(taken)
                self.passes += 1
                self.items += len(taken)
                self.busy_s += loop.time() - began
                for (_, future, _), result in zip(taken, results, strict=True):
                    if not future.done():
                        future.set_result(result)


def _take(queue: _Queue[Any, Any], limit: int) -> list[tuple[Any, asyncio.Future[Any], float]]:
    live = [(w, f, t) for w, f, t in queue.pending if not f.done()]
    taken, queue.pending = live[:limit], live[limit:]
    return taken
