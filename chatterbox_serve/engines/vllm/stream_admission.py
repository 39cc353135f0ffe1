"""Which streamed item starts next: only while the streams already playing keep ahead.

A streamed item is a promise of real-time audio. One GPU makes a bounded number of
audio-seconds per second (T3 and S3Gen together), and each stream re-renders its
prefix, so past some number of streams every listener falls behind at once: on an
H100 with 64 streams started together, each heard about 5 s of silence after its
first audio. A listener tolerates waiting for the start far better than gaps in the
middle, so a replica starts a new stream only when:

- fewer than `max_live` streams are live (vLLM's batch: `max_num_seqs`),
- fewer than `max_starting` live streams are still waiting for their first audio
  (their T3 prefill and first render are the load that is about to arrive), and
- every stream that is playing has at least `healthy_s` buffered, i.e. the renders
  keep ahead of the listeners with what is running now.

Waiting streams start in arrival order. A request's later chunks join its stream
without waiting (`add`): their listener is already playing the chunks before them.
A stream that has waited `max_wait_s` starts anyway, so a replica that stays
overloaded serves everyone late rather than some never; the autoscaler sees the waiting
requests as load and adds replicas.

The rule is tested against a model of one GPU's capacity in
tests/unit/test_stream_admission.py, and measured on the GPU by the served T3 proof's
64-stream part (`tools/gpu/t3_vllm_proof.py stream`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chatterbox_serve.engines.vllm.render_schedule import RenderSchedule

# How often a waiting stream looks again: buffers drain with the clock, not on events.
POLL_S = 0.02


@dataclass
class StreamAdmission:
    """The live streams of one replica, and the rule for starting another."""

    max_live: int
    max_starting: int
    healthy_s: float
    max_wait_s: float
    clock: Callable[[], float] = time.monotonic
    live: list[RenderSchedule] = field(default_factory=list)
    _queue: list[int] = field(default_factory=list)
    _tickets: itertools.count[int] = field(default_factory=itertools.count)

    def can_start(self, now: float) -> bool:
        """Whether a stream may start at `now` (ignoring the queue's order)."""
        if not self.live:
            return True
        if len(self.live) >= self.max_live:
            return False
        if sum(1 for s in self.live if not s.playing) >= self.max_starting:
            return False
        return all(s.buffered_s(now) >= self.healthy_s for s in self.live if s.playing)

    async def enter(self, schedule: RenderSchedule) -> float:
        """Wait for `schedule`'s turn, then count it live; returns the seconds waited.

        Cancelled while waiting (the listener left), the stream leaves the queue.
        """
        ticket = self.join()
        began = self.clock()
        try:
            while not self.may_start(ticket, began, self.clock()):
                await asyncio.sleep(POLL_S)
        except BaseException:
            self._queue.remove(ticket)
            raise
        self.start(ticket, schedule)
        return self.clock() - began

    def join(self) -> int:
        """Queue a stream; its ticket."""
        ticket = next(self._tickets)
        self._queue.append(ticket)
        return ticket

    def may_start(self, ticket: int, since: float, now: float) -> bool:
        """Whether the stream with `ticket`, queued at `since`, starts at `now`."""
        if self._queue[0] != ticket:
            return False
        return self.can_start(now) or now - since >= self.max_wait_s

    def start(self, ticket: int, schedule: RenderSchedule) -> None:
        self._queue.remove(ticket)
        self.live.append(schedule)

    def add(self, schedule: RenderSchedule) -> float:
        """Count a stream live without waiting (a later chunk of a started stream); 0 s."""
        self.live.append(schedule)
        return 0.0

    def leave(self, schedule: RenderSchedule) -> None:
        """`schedule`'s stream ended (finished, failed or cancelled)."""
        # By identity: two schedules may be equal field by field.
        self.live = [s for s in self.live if s is not schedule]

    def render_latency_s(self) -> float:
        """What a render takes on this replica now: the slowest live stream's estimate
        (a later chunk's first guess, before renders of its own are timed)."""
        return max((s.latency_s for s in self.live), default=0.0)

    def stats(self) -> dict[str, int]:
        return {
            "live": len(self.live),
            "starting": sum(1 for s in self.live if not s.playing),
            "waiting": len(self._queue),
        }
