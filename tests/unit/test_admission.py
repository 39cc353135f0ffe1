"""BatchGate: items reach the batch queue only while the engine is idle, one batch at a time."""

from __future__ import annotations

import asyncio

from deployments.admission import BatchGate


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_idle_gate_admits_up_to_one_batch_and_holds_the_rest():
    gate = BatchGate(limit=3)
    entered = [asyncio.ensure_future(gate.enter()) for _ in range(5)]
    await _settle()
    assert [t.done() for t in entered] == [True, True, True, False, False]

    first = [t.result() for t in entered[:3]]
    gate.started(first)
    gate.finished()
    await _settle()
    assert all(t.done() for t in entered)


async def test_items_arriving_during_an_engine_call_wait_for_it_to_end():
    gate = BatchGate(limit=4)
    ticket = await gate.enter()
    gate.started([ticket])
    late = asyncio.ensure_future(gate.enter())
    await _settle()
    assert not late.done()
    gate.finished()
    await _settle()
    assert late.done()


async def test_cancelled_item_frees_its_place_so_the_queue_cannot_stall():
    gate = BatchGate(limit=1)
    ticket = await gate.enter()
    waiting = asyncio.ensure_future(gate.enter())
    await _settle()
    assert not waiting.done()
    gate.abandon(ticket)  # its caller went away before any batch started
    await _settle()
    assert waiting.done()
    gate.abandon(ticket)  # a second release of the same ticket changes nothing
    held = asyncio.ensure_future(gate.enter())
    await _settle()
    assert not held.done()
    held.cancel()


async def test_background_items_take_only_the_room_interactive_items_leave():
    gate = BatchGate(limit=4, background_per_batch=2)
    running = await gate.enter()
    gate.started([running])  # the engine is busy; everything below queues
    jobs = [asyncio.ensure_future(gate.enter(background=True)) for _ in range(3)]
    users = [asyncio.ensure_future(gate.enter()) for _ in range(3)]
    await _settle()
    gate.finished()
    await _settle()
    # All three interactive items get in; of the background ones, only what fits
    # in the one place left, within the per-batch share.
    assert all(t.done() for t in users)
    assert [t.done() for t in jobs] == [True, False, False]
    gate.started([t.result() for t in users + jobs[:1]])
    gate.finished()
    await _settle()
    assert all(t.done() for t in jobs)
    for t in jobs:
        t.cancel()


async def test_background_share_per_batch_is_bounded_on_an_idle_engine():
    gate = BatchGate(limit=8, background_per_batch=1)
    jobs = [asyncio.ensure_future(gate.enter(background=True)) for _ in range(3)]
    await _settle()
    assert sum(t.done() for t in jobs) == 1
    user = asyncio.ensure_future(gate.enter())
    await _settle()
    assert user.done()  # interactive items still get the rest of the batch
    for t in jobs:
        t.cancel()


async def test_an_engine_with_overlapping_stages_gets_a_second_call_and_no_third():
    # An engine that declares two concurrent calls: while one call's last items are in
    # S3Gen, the next batch decodes in T3; a third must wait.
    gate = BatchGate(limit=2, concurrency=2)
    first = [await gate.enter(), await gate.enter()]
    gate.started(first)
    second = [await gate.enter(), await gate.enter()]
    gate.started(second)
    third = asyncio.ensure_future(gate.enter())
    await _settle()
    assert not third.done()
    gate.finished()
    await _settle()
    assert third.done()
