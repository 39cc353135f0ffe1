"""The T3 runner against a double of vLLM 0.26's AsyncLLM, failure modes included."""

from __future__ import annotations

import asyncio

import pytest

from chatterbox_serve.engines.vllm.t3_async import T3AsyncRunner, T3Request, T3Tokens
from chatterbox_serve.errors import EngineError
from tests.unit.asyncllm_double import FakeAsyncLLM, SamplingParams

STOP = 6562


def job(
    rid: str, script: list[int], max_tokens: int = 50, stop_ids: tuple[int, ...] = (STOP,)
) -> T3Request:
    return T3Request(
        request_id=rid,
        prompt={"script": script},
        params=SamplingParams(max_tokens=max_tokens, stop_token_ids=list(stop_ids)),
        max_tokens=max_tokens,
        stop_token=STOP,
    )


async def test_items_of_different_lengths_join_and_leave_the_running_batch() -> None:
    llm = FakeAsyncLLM()
    runner = T3AsyncRunner(llm)
    outcomes = await runner.run_all(
        [job("a", [1, 2, STOP]), job("b", [5, 6, 7, 8, 9, STOP]), job("c", [3, STOP])]
    )
    assert [o.tokens for o in outcomes if isinstance(o, T3Tokens)] == [
        [1, 2],
        [5, 6, 7, 8, 9],
        [3],
    ]
    # Short items left the batch while the long one kept decoding.
    assert llm.step_batches[0] == ["a", "b", "c"]
    assert llm.step_batches[-1] == ["b"]
    assert llm.unfinished == 0


async def test_length_finish_fails_that_item_instead_of_cutting_its_speech() -> None:
    runner = T3AsyncRunner(FakeAsyncLLM())
    cut, whole = await runner.run_all([job("long", [4] * 10, max_tokens=5), job("ok", [4, STOP])])
    assert isinstance(cut, EngineError)
    assert "max_tokens=5" in cut.message
    assert isinstance(whole, T3Tokens) and whole.tokens == [4]


async def test_a_stop_at_any_other_token_fails_the_item_instead_of_cutting_its_speech() -> None:
    # vLLM stops at every id in stop_token_ids (a model eos included) and names it in
    # stop_reason; speech token 2 stopping an item would cut its speech there.
    runner = T3AsyncRunner(FakeAsyncLLM())
    cut, whole = await runner.run_all(
        [job("cut", [5, 2, 7, STOP], stop_ids=(STOP, 2)), job("ok", [5, 2, 7, STOP])]
    )
    assert isinstance(cut, EngineError)
    assert "stopped at 2" in cut.message
    assert isinstance(whole, T3Tokens) and whole.tokens == [5, 2, 7]


async def test_rejected_request_fails_alone() -> None:
    llm = FakeAsyncLLM()
    llm.reject.add("bad")
    runner = T3AsyncRunner(llm)
    bad, good = await runner.run_all([job("bad", [1, STOP]), job("good", [2, STOP])])
    assert isinstance(bad, EngineError)
    assert isinstance(good, T3Tokens) and good.tokens == [2]
    assert runner.dead is None


async def test_engine_death_fails_every_queued_and_running_item_and_strands_none() -> None:
    llm = FakeAsyncLLM(max_num_seqs=2, die_at_step=2)
    runner = T3AsyncRunner(llm)
    jobs = [job(str(i), [1, 1, 1, STOP]) for i in range(5)]  # 3 of 5 still waiting
    with pytest.raises(EngineError, match="dead"):
        await runner.run_all(jobs)
    assert llm.unfinished == 0
    assert runner.dead is not None
    # The next call fails at once: AsyncLLM.add_request raises EngineDeadError.
    with pytest.raises(EngineError, match="dead"):
        await runner.run_all([job("later", [1, STOP])])


async def test_cancelled_call_aborts_its_requests_inside_vllm() -> None:
    llm = FakeAsyncLLM()
    runner = T3AsyncRunner(llm)
    task = asyncio.create_task(
        runner.run_all([job("x", [1] * 1000, 2000), job("y", [1] * 1000, 2000)])
    )
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(llm.aborted) == ["x", "y"]
    assert llm.unfinished == 0


async def test_a_request_cancelled_while_vllm_adds_it_is_aborted() -> None:
    # AsyncLLM.generate aborts only once add_request has returned its queue; cancelled
    # while the request is on its way to the engine core, it would decode to its end.
    llm = FakeAsyncLLM(add_s=0.05, step_s=0.001)
    runner = T3AsyncRunner(llm)
    task = asyncio.create_task(runner.run_one(job("x", [1] * 1000, 2000)))
    await asyncio.sleep(0.01)
    assert llm.unfinished == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert llm.aborted == ["x"]
    assert llm.unfinished == 0


async def test_first_token_time_is_reported() -> None:
    runner = T3AsyncRunner(FakeAsyncLLM())
    (out,) = await runner.run_all([job("a", [1, 2, STOP])])
    assert isinstance(out, T3Tokens)
    assert 0 <= out.first_token_s <= out.total_s
