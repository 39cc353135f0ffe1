"""The vLLM engine's S3Gen stage: work batched as it arrives, streams first, waits bounded."""

from __future__ import annotations

import asyncio
from typing import Any

from chatterbox_serve.engines.vllm.s3gen_stage import S3GenStage


class Recorder:
    """Plays the engine thread: runs each pass after `pass_s`, records its items."""

    def __init__(self, pass_s: float = 0.05) -> None:
        self.pass_s = pass_s
        self.passes: list[tuple[str, list[Any]]] = []

    async def on_thread(self, fn: Any, work: list[Any]) -> list[Any]:
        await asyncio.sleep(self.pass_s)
        return list(fn(work))

    def stage(self, **kw: Any) -> S3GenStage:
        return S3GenStage(self.on_thread, self._whole, self._step, max_batch=4, **kw)

    def _whole(self, work: list[Any]) -> list[Any]:
        self.passes.append(("whole", work))
        return [w * 10 for w in work]

    def _step(self, work: list[Any]) -> list[Any]:
        self.passes.append(("step", work))
        return [ValueError("bad") if w == "bad" else w.upper() for w in work]


async def test_items_that_arrive_during_a_pass_go_together_in_the_next() -> None:
    rec = Recorder()
    stage = rec.stage()
    first = asyncio.ensure_future(stage.vocode(1))
    await asyncio.sleep(0.01)  # the first pass is running
    rest = [asyncio.ensure_future(stage.vocode(i)) for i in (2, 3, 4, 5, 6)]
    assert await first == 10 and [await r for r in rest] == [20, 30, 40, 50, 60]
    # One alone, then the four that queued meanwhile (max_batch), then the last.
    assert [w for _, w in rec.passes] == [[1], [2, 3, 4, 5], [6]]


async def test_streamed_steps_go_before_whole_items_and_fail_alone() -> None:
    rec = Recorder()
    stage = rec.stage()
    blocker = asyncio.ensure_future(stage.vocode(1))
    await asyncio.sleep(0.01)
    whole = asyncio.ensure_future(stage.vocode(2))
    good, bad = asyncio.ensure_future(stage.step("a")), asyncio.ensure_future(stage.step("bad"))
    assert await good == "A" and isinstance(await bad, ValueError)
    assert await whole == 20 and await blocker == 10
    assert [kind for kind, _ in rec.passes] == ["whole", "step", "whole"]


async def test_a_cancelled_callers_work_is_dropped_before_it_runs() -> None:
    rec = Recorder()
    stage = rec.stage()
    blocker = asyncio.ensure_future(stage.vocode(1))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(stage.vocode(2))
    kept = asyncio.ensure_future(stage.vocode(3))
    await asyncio.sleep(0)
    gone.cancel()
    assert await kept == 30 and await blocker == 10
    assert [w for _, w in rec.passes] == [[1], [3]]


async def test_with_a_wait_items_gather_while_t3_still_has_more_coming() -> None:
    rec = Recorder(pass_s=0.0)
    in_t3 = [4]
    stage = rec.stage(upcoming=lambda: in_t3[0], max_wait_s=5.0)

    async def leave_t3(i: int) -> Any:
        # As the engine does: the item leaves T3 and enters the stage in one step.
        in_t3[0] -= 1
        return await stage.vocode(i)

    calls = []
    for i in (1, 2, 3, 4):
        calls.append(asyncio.ensure_future(leave_t3(i)))
        await asyncio.sleep(0.02)
    assert [await c for c in calls] == [10, 20, 30, 40]
    # Held until max_batch (4) had gathered, not sent one by one.
    assert [w for _, w in rec.passes] == [[1, 2, 3, 4]]


async def test_the_wait_ends_when_nothing_more_is_decoding_or_time_is_up() -> None:
    rec = Recorder(pass_s=0.0)
    in_t3 = [0]
    stage = rec.stage(upcoming=lambda: in_t3[0], max_wait_s=5.0)
    assert await stage.vocode(1) == 10  # nothing in T3: no wait at all
    in_t3[0] = 5
    short = rec.stage(upcoming=lambda: in_t3[0], max_wait_s=0.05)
    assert await asyncio.wait_for(short.vocode(2), timeout=2.0) == 20
