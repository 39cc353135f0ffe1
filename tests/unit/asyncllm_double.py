"""A double of vLLM 0.26's `AsyncLLM` for the T3 runner, failure modes included.

What it reproduces, each read in vllm 0.26.0's `v1/engine/async_llm.py` and
`v1/engine/output_processor.py` (`test_vllm026_contract.py` checks that source):

- `generate(prompt, sampling_params, request_id)` is an async generator of
  `RequestOutput`s with cumulative `token_ids`, ending with `finished=True`;
- many requests decode together, one token each per engine step, and join or leave
  between steps (continuous batching);
- `add_request` raises `EngineDeadError` once the engine has errored, and a prompt
  the input processor rejects raises `ValueError` before the request enters;
- when the engine core dies, `propagate_error` puts `EngineDeadError` into the queue
  of every request it knows, running or still waiting;
- cancelling the task iterating `generate` aborts the request (`abort(..., internal=True)`),
  except while `add_request` is still awaiting the engine core: the request is then
  registered (and on its way to the engine core) but `generate` holds no queue for it,
  so it aborts nothing (`q is None`); `abort(request_id)` by the caller's id still finds it;
- a stop token ends a request with `finish_reason="stop"` and that token as
  `stop_reason` (`v1/core/sched/utils.py` `check_stop`), `max_tokens` with "length".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any


class EngineDeadError(Exception):
    """Same name as vLLM's: the runner recognises it by name, as vLLM is not imported."""


class EngineGenerateError(Exception):
    pass


@dataclass
class CompletionOutput:
    token_ids: list[int]
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    outputs: list[CompletionOutput]
    finished: bool


@dataclass
class SamplingParams:
    max_tokens: int
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False


@dataclass
class _Request:
    request_id: str
    script: list[int]
    params: SamplingParams
    queue: asyncio.Queue[RequestOutput | Exception] = field(default_factory=asyncio.Queue)
    produced: list[int] = field(default_factory=list)
    # `generate` holds the request's output queue (`add_request` has returned).
    queued: bool = False


class FakeAsyncLLM:
    """Decodes scripted token sequences; `prompt["script"]` holds a request's tokens.

    `die_at_step` kills the engine core at that engine step; `reject` holds request ids
    the input processor refuses.
    """

    def __init__(
        self,
        *,
        max_num_seqs: int = 64,
        die_at_step: int | None = None,
        script_for: Any = None,
        step_s: float = 0.0,
        add_s: float = 0.0,
    ) -> None:
        # A real engine step takes milliseconds; tests that act mid-decode set it.
        self.step_s = step_s
        # How long `add_request` awaits the engine core after registering the request.
        self.add_s = add_s
        # `script_for(prompt, params)` scripts a request given in our engine's real
        # prompt format; it may raise ValueError, as vLLM's input processor does.
        self.script_for = script_for
        self.prompts: list[tuple[Any, Any]] = []
        self.max_num_seqs = max_num_seqs
        self.die_at_step = die_at_step
        self.reject: set[str] = set()
        self.errored = False
        self.running: dict[str, _Request] = {}
        self.waiting: list[_Request] = []
        self.aborted: list[str] = []
        self.step_batches: list[list[str]] = []
        self._loop: asyncio.Task[None] | None = None

    async def generate(
        self, prompt: Any, sampling_params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        request: _Request | None = None
        try:
            request = self._add_request(prompt, sampling_params, request_id)
            await asyncio.sleep(self.add_s)  # engine_core.add_request_async
            request.queued = True
            while True:
                out = await request.queue.get()
                if isinstance(out, Exception):
                    raise out
                yield out
                if out.finished:
                    return
        except (asyncio.CancelledError, GeneratorExit):
            if request is not None and request.queued:
                await self.abort(request_id, internal=True)
            raise
        except EngineDeadError:
            raise
        except ValueError:
            raise
        except Exception as exc:
            if request is not None and request.queued:
                await self.abort(request_id, internal=True)
            raise EngineGenerateError() from exc

    async def abort(self, request_id: str | Sequence[str], internal: bool = False) -> None:
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        for rid in ids:
            if self.running.pop(rid, None) is not None or any(
                r.request_id == rid for r in self.waiting
            ):
                self.aborted.append(rid)
            self.waiting = [r for r in self.waiting if r.request_id != rid]

    @property
    def unfinished(self) -> int:
        return len(self.running) + len(self.waiting)

    def _add_request(self, prompt: Any, params: SamplingParams, request_id: str) -> _Request:
        if self.errored:
            raise EngineDeadError()
        if request_id in self.reject:
            raise ValueError(f"request {request_id}: invalid prompt")
        if "script" in prompt:
            script = list(prompt["script"])
        elif self.script_for is not None:
            script = list(self.script_for(prompt, params))
        else:
            raise ValueError(f"request {request_id}: invalid prompt")
        self.prompts.append((prompt, params))
        request = _Request(request_id, script, params)
        self.waiting.append(request)
        if self._loop is None or self._loop.done():
            self._loop = asyncio.get_running_loop().create_task(self._engine_loop())
        return request

    async def _engine_loop(self) -> None:
        step = 0
        while self.running or self.waiting:
            await asyncio.sleep(self.step_s)
            while self.waiting and len(self.running) < self.max_num_seqs:
                request = self.waiting.pop(0)
                self.running[request.request_id] = request
            step += 1
            if self.die_at_step is not None and step >= self.die_at_step:
                self._propagate_error(EngineDeadError())
                return
            self.step_batches.append(list(self.running))
            for rid, request in list(self.running.items()):
                self._step(rid, request)

    def _step(self, rid: str, request: _Request) -> None:
        token = request.script[len(request.produced)]
        request.produced.append(token)
        reason, stop_reason = None, None
        if token in request.params.stop_token_ids and not request.params.ignore_eos:
            reason, stop_reason = "stop", token
        elif len(request.produced) >= request.params.max_tokens:
            reason = "length"
        done = reason is not None
        out = CompletionOutput(list(request.produced), reason, stop_reason)
        request.queue.put_nowait(RequestOutput(rid, [out], done))
        if done:
            del self.running[rid]

    def _propagate_error(self, exc: Exception) -> None:
        self.errored = True
        for request in [*self.running.values(), *self.waiting]:
            request.queue.put_nowait(exc)
        self.running.clear()
        self.waiting.clear()

    def shutdown(self) -> None:
        """Like `AsyncLLM.shutdown`: the engine core goes; later requests fail as dead."""
        self.shut_down = True
        self._propagate_error(EngineDeadError())
