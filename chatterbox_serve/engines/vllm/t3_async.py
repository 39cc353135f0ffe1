"""T3 items on vLLM's `AsyncLLM`: independent requests, each with its own outcome.

The Serve batch is only a collection point: each item becomes its own `generate`
request, so vLLM's scheduler adds and retires items continuously (continuous batching)
and a slow item never holds back the others. What vLLM 0.26 does on each failure,
read in `vllm/v1/engine/async_llm.py` and `output_processor.py`, and what we do:

- **A request vLLM rejects** (`ValueError` from input processing, before it enters the
  engine core): only that request fails; that item gets an `EngineError`.
- **`EngineGenerateError`** (an unexpected error in one `generate` task): vLLM aborts
  that request itself; only that item fails.
- **The engine core dies** (a CUDA error, an exception in the model's forward pass):
  its output handler calls `propagate_error`, which puts `EngineDeadError` into the
  queue of *every* request it knows, queued or running, so none is left stranded;
  later `add_request` calls raise `EngineDeadError` at once. We mark the runner dead
  (the replica's health check then fails and Serve replaces it) and fail every item.
- **A cancelled item** (the client went away): `generate` catches the cancellation and
  aborts the request inside vLLM, freeing its KV blocks, but only once `add_request`
  has returned (`if q is not None`). Cancelled while `add_request` still awaits the
  engine core, the request is registered and on its way, and nothing aborts it: it
  would decode to `max_tokens` for no one. So the runner aborts it too, by its id
  (a no-op where vLLM already did).
- **`finish_reason == "length"`**: T3 hit `max_tokens` before its stop token, so the
  speech would be cut mid-word. The item fails instead of returning truncated audio.
- **`finish_reason == "stop"` for anything but the stop-of-speech token**: vLLM also
  stops at the model's eos and at every id in `stop_token_ids`, and says which in
  `stop_reason`. Any other stop cuts the speech where it happened, so the item fails.

vLLM is never imported here: the runner takes an object with `AsyncLLM`'s `generate`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chatterbox_serve.errors import ChatterboxError, EngineError

logger = logging.getLogger(__name__)

SPEECH_VOCAB_SIZE = 6561  # S3 tokens 0..6560; 6561/6562 are start/stop of speech


class AsyncLLMLike(Protocol):
    """The part of `vllm.v1.engine.async_llm.AsyncLLM` (0.26) the runner uses."""

    def generate(
        self, prompt: Any, sampling_params: Any, request_id: str
    ) -> AsyncGenerator[Any, None]: ...

    async def abort(self, request_id: str | Sequence[str], internal: bool = False) -> None: ...


@dataclass(frozen=True)
class T3Request:
    """One T3 request: its vLLM prompt, sampling parameters and id."""

    request_id: str
    prompt: Mapping[str, Any]
    params: Any
    max_tokens: int
    # The one token whose "stop" finish means T3 said all the text.
    stop_token: int


@dataclass(frozen=True)
class T3Tokens:
    """Speech tokens of one finished request, with when its first token arrived."""

    tokens: list[int]
    first_token_s: float
    total_s: float


T3Outcome = T3Tokens | ChatterboxError


class T3AsyncRunner:
    """Runs each `T3Request` as an independent `AsyncLLM` request; see the module docstring."""

    def __init__(self, llm: AsyncLLMLike, *, accept_length: bool = False) -> None:
        self.llm = llm
        # Benchmarks force a fixed length (stop token ignored); then "length" is success.
        self.accept_length = accept_length
        self.dead: str | None = None

    async def run_all(self, t3_requests: Sequence[T3Request]) -> list[T3Outcome]:
        """One outcome per request, in order; raises `EngineError` if the engine died."""
        outcomes = await asyncio.gather(*(self.run_one(request) for request in t3_requests))
        if self.dead is not None:
            raise EngineError(f"vLLM engine is dead: {self.dead}")
        return list(outcomes)

    async def run_one(self, request: T3Request) -> T3Outcome:
        """The finished request's speech tokens, or the error it failed with."""
        try:
            async for progress in self.stream(request):
                if isinstance(progress, T3Tokens):
                    return progress
        except ChatterboxError as exc:
            return exc
        raise AssertionError("stream ended without its T3Tokens")

    async def stream(self, request: T3Request) -> AsyncGenerator[list[int] | T3Tokens, None]:
        """The speech tokens so far each time vLLM reports more, then the `T3Tokens`.

        Raises `ChatterboxError` on failure (after the tokens so far were yielded, so
        a listener may already have heard some). Breaking off early, or cancelling,
        aborts the request inside vLLM, as `AsyncLLM.generate` does on `GeneratorExit`.
        """
        if self.dead is not None:
            raise EngineError(f"vLLM engine is dead: {self.dead}")
        loop = asyncio.get_running_loop()
        began = loop.time()
        first: float | None = None
        final: Any = None
        generator = self.llm.generate(request.prompt, request.params, request.request_id)
        try:
            async for output in generator:
                final = output
                if not output.outputs or output.finished:
                    continue
                tokens = _speech(output.outputs[0].token_ids)
                if tokens:
                    first = first if first is not None else loop.time() - began
                    yield tokens
        except asyncio.CancelledError:
            await self._abort(request.request_id)
            raise
        except Exception as exc:
            if type(exc).__name__ == "EngineDeadError":
                self._mark_dead(f"{type(exc).__name__}: {exc}")
                raise EngineError(f"vLLM engine is dead: {self.dead}") from exc
            logger.error("T3 request %s failed: %r", request.request_id, exc, exc_info=exc)
            cause = exc.__cause__ or exc
            raise EngineError(f"T3 generation failed: {type(cause).__name__}: {cause}") from exc
        finally:
            await generator.aclose()
        outcome = _tokens(request, final, first, loop.time() - began, self.accept_length)
        if isinstance(outcome, ChatterboxError):
            raise outcome
        yield outcome

    async def _abort(self, request_id: str) -> None:
        try:
            await self.llm.abort(request_id)
        except Exception as exc:  # a dead engine has nothing left to abort
            logger.warning("aborting T3 request %s failed: %r", request_id, exc)

    def _mark_dead(self, reason: str) -> None:
        if self.dead is None:
            self.dead = reason
            logger.error("vLLM engine marked dead: %s", reason)


def _tokens(
    request: T3Request, final: Any, first: float | None, total: float, accept_length: bool
) -> T3Outcome:
    if final is None or not final.outputs:
        return EngineError(f"T3 request {request.request_id} ended without output")
    completion = final.outputs[0]
    reason = completion.finish_reason
    if reason == "length" and not accept_length:
        return EngineError(
            f"T3 reached max_tokens={request.max_tokens} without a stop token; the speech "
            "would be cut off. Send shorter text chunks (MAX_CHUNK_LENGTH)."
        )
    if reason not in ("stop", "length"):
        return EngineError(f"T3 request {request.request_id} finished with {reason!r}")
    if reason == "stop" and completion.stop_reason != request.stop_token:
        return EngineError(
            f"T3 request {request.request_id} stopped at {completion.stop_reason!r}, not at the "
            f"stop-of-speech token {request.stop_token}; the speech would be cut off"
        )
    tokens = _speech(completion.token_ids)
    if not tokens:
        return EngineError("T3 produced no speech tokens")
    return T3Tokens(tokens=tokens, first_token_s=first or total, total_s=total)


def _speech(token_ids: Sequence[int]) -> list[int]:
    """The S3 speech tokens among `token_ids` (the stop token and any past it dropped)."""
    return [t for t in token_ids if 0 <= t < SPEECH_VOCAB_SIZE]
