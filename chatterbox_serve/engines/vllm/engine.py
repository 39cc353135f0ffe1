"""`engine: vllm`: our T3 model on vLLM's async engine, then the batched S3Gen.

Everything but T3's decoding is the torch engine's (`TorchEngine`): the checkpoint,
the tokenizer (with its control-token guard), voice conditioning, S3Gen and the
per-item failure rules. What differs:

- **T3 runs in vLLM** (`ChatterboxT3ForCFG`, registered by our plugin), one
  `AsyncLLM` request per item (`t3_async.T3AsyncRunner`): items of all in-flight
  calls join and leave vLLM's running batch continuously, a cancelled call aborts
  its requests inside vLLM, and a failing item fails alone.
- **The prompt** is the reference T3's own prefill rows (conditioning, text,
  start of speech twice) for both CFG branches, packed side by side into one
  multimodal item, plus the item's CFG weight (see `t3_vllm.py` for why).
- **The stages overlap across calls.** T3 is awaited outside the engine thread, so
  while one Serve batch decodes in vLLM's engine-core process, S3Gen of an earlier
  batch runs on the engine thread.
- **Length is an error.** A request that reaches `max_tokens` without its stop
  token fails (its speech would be cut mid-word); `max_model_len` is checked before
  submitting, so a prompt never fills the context silently.

vLLM, torch and the model code load in `start`, so this module imports without them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import SynthesisOutcome, SynthesisRequest, SynthesisResult
from chatterbox_serve.engines.torch_engine import (
    SAMPLE_RATE,
    TorchEngine,
    _Loaded,
    _Prepared,
    end_of_speech,
    seed_of,
    to_audio,
)
from chatterbox_serve.engines.vllm.model_dir import MODALITY
from chatterbox_serve.engines.vllm.render_schedule import RenderSchedule, schedule_for
from chatterbox_serve.engines.vllm.s3gen_stage import S3GenStage
from chatterbox_serve.engines.vllm.stream_admission import StreamAdmission
from chatterbox_serve.engines.vllm.t3_async import T3AsyncRunner, T3Request, T3Tokens
from chatterbox_serve.errors import ChatterboxError, EngineError, InvalidRequestError
from chatterbox_serve.families import ModelFamily
from chatterbox_serve.model.s3gen.runner import s3gen_policy

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ForcedLength:
    """Benchmarks only: every item decodes exactly its budget, stop token ignored.

    The budget is `tokens`, or the item's own `max_new_tokens` where that is lower, so
    a benchmark can give items the varied lengths of real speech. Random weights almost
    never sample the stop token, and fixed lengths make runs comparable; production
    never sets this.
    """

    tokens: int


class VLLMEngine(TorchEngine):
    """Chatterbox with T3 on vLLM 0.26 (exact CFG per request) and batched S3Gen."""

    name = "vllm"
    needs_gpu = True
    streams_audio = True
    # Each item is its own vLLM request, so a Serve batch is only a collection point:
    # several calls in flight keep T3 decoding while earlier calls' items are in S3Gen,
    # and calls that finish at different times de-synchronise closed-loop clients.
    max_concurrent_calls = 4

    def __init__(
        self,
        settings: Settings,
        *,
        llm_factory: Any = None,
        forced_length: ForcedLength | None = None,
    ) -> None:
        super().__init__(settings)
        self._llm_factory = llm_factory or _build_async_llm
        self._forced = forced_length
        self._llm: Any = None
        self._runner: T3AsyncRunner | None = None
        self._stage: S3GenStage | None = None
        self._streamer: Any = None
        self._model_dir: Path | None = None
        # Items now decoding in T3: the S3Gen stage waits for them to fill its batch.
        self._in_t3 = 0
        # Preparation (conditioning, prefill rows) has a thread and a CUDA stream of its
        # own: on the engine thread it would wait for a whole S3Gen pass, leaving T3
        # without new items while S3Gen runs, which is the overlap this engine is for.
        self._prep = concurrent.futures.ThreadPoolExecutor(1, "chatterbox-prep")
        self._prep_stream: Any = None
        e = settings.engine
        self._admission = StreamAdmission(
            max_live=e.max_batch_size * self.max_concurrent_calls,
            max_starting=e.stream_max_starting,
            healthy_s=e.stream_margin_s,
            max_wait_s=e.stream_admit_wait_s,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> VLLMEngine:
        """The vLLM engine of `settings.family`: Turbo's (`turbo_engine`) or the original's."""
        if settings.family is ModelFamily.TURBO and cls is VLLMEngine:
            from chatterbox_serve.engines.vllm.turbo_engine import TurboVLLMEngine

            return TurboVLLMEngine.from_settings(settings)
        forced = settings.engine.bench_forced_tokens
        if forced is not None:
            logger.warning(
                "CHATTERBOX_BENCH_FORCED_TOKENS=%d: every chunk decodes exactly that many "
                "tokens and ignores the stop token. For benchmarks with random weights only.",
                forced,
            )
        return cls(settings, forced_length=None if forced is None else ForcedLength(forced))

    async def start(self) -> None:
        await super().start()
        loaded = self._live()
        from chatterbox_serve.engines.vllm.model_dir import build_model_dir

        self._model_dir = build_model_dir(_t3_weights(loaded), loaded.t3.config)
        try:
            # Building the engine spawns vLLM's engine core and compiles; minutes, so off
            # the event loop.
            self._llm = await self._on_thread(self._llm_factory, self.settings, self._model_dir)
        except BaseException:
            shutil.rmtree(self._model_dir, ignore_errors=True)
            raise
        self._runner = T3AsyncRunner(self._llm, accept_length=self._forced is not None)
        self._stage = S3GenStage(
            self._on_thread,
            self._vocode_pass,
            self._step_pass,
            self.settings.engine.s3gen_batch_size,
            upcoming=lambda: self._in_t3,
            max_wait_s=self.settings.engine.s3gen_max_wait_s,
        )

    async def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutcome]:
        loaded = self._live()
        runner, stage = self._runner, self._stage
        assert runner is not None and stage is not None
        began = time.monotonic()
        outcomes, prepared, t3_requests = await self._on_prep(self._prepare_jobs, loaded, requests)
        finished = await asyncio.gather(
            *(
                self._item(runner, stage, p, t3_request)
                for p, t3_request in zip(prepared, t3_requests, strict=True)
            )
        )
        if runner.dead is not None:
            raise EngineError(f"vLLM engine is dead: {runner.dead}")
        for p, outcome in zip(prepared, finished, strict=True):
            outcomes[p.index] = outcome
        took = time.monotonic() - began
        return [
            dataclasses.replace(o, batch_size=len(requests), engine_s=took)
            if isinstance(o, SynthesisResult)
            else o
            for o in (outcomes[i] for i in range(len(requests)))
        ]

    async def synthesize_stream(self, request: SynthesisRequest) -> AsyncIterator[SynthesisResult]:
        """First audio after `CHATTERBOX_STREAM_FIRST_TOKENS` tokens, the rest as T3 goes on.

        Each render re-runs S3Gen over every token so far (`StreamingS3Gen`); renders
        come when the audio sent runs less than `CHATTERBOX_STREAM_MARGIN_S` ahead of
        the listener (`render_schedule.RenderSchedule`), so playback has no gaps while
        T3 keeps ahead of real time, and renders stay few when it is far ahead.
        """
        self._live()
        began = time.monotonic()
        schedule = schedule_for(
            request.play_after,
            self.settings.engine.stream_first_tokens,
            self.settings.engine.stream_margin_s,
            self._admission.render_latency_s(),
        )
        # A stream starts when the replica can keep it (and the others) ahead of their
        # listeners (`stream_admission`); until then it waits, silent, before any work.
        # A later chunk belongs to a stream already started: its listener is playing
        # the chunks before it, so it never waits behind streams not yet started.
        if request.chunk_index:
            waited = self._admission.add(schedule)
        else:
            waited = await self._admission.enter(schedule)
        try:
            async for piece in self._stream_admitted(request, schedule, began, waited):
                yield piece
        finally:
            self._admission.leave(schedule)

    async def _stream_admitted(
        self, request: SynthesisRequest, schedule: RenderSchedule, began: float, waited: float
    ) -> AsyncIterator[SynthesisResult]:
        loaded = self._live()
        runner, stage = self._runner, self._stage
        assert runner is not None and stage is not None
        outcomes, prepared, t3_requests = await self._on_prep(self._prepare_jobs, loaded, [request])
        failed = outcomes.get(0)
        if isinstance(failed, ChatterboxError):
            raise failed
        p, t3_request = prepared[0], t3_requests[0]
        stream = self._streamer_for(loaded).open(p.s3gen_ref, seed_of(p))
        prepared_at = time.monotonic()
        timings: dict[str, float] | None = None
        sent, multilingual = 0, loaded.t3.config.is_multilingual
        # `aclosing`: a listener who leaves closes this generator at a `yield`; the T3
        # stream is then closed at once (aborting the request inside vLLM), not
        # whenever the garbage collector gets to it.
        async with contextlib.aclosing(runner.stream(t3_request)) as t3_stream:
            async for progress in t3_stream:
                final = isinstance(progress, T3Tokens)
                tokens = (
                    self._vocoded(progress.tokens) if isinstance(progress, T3Tokens) else progress
                )
                if not final and not schedule.due(len(tokens), time.monotonic()):
                    continue
                rendering = time.monotonic()
                audio = await stage.step((stream, tokens, final))
                if isinstance(audio, Exception):
                    raise self._item_error(audio, "S3Gen") from audio
                if timings is None:
                    # Where the first audio's time goes (tools/gpu/gpu_serving.py reports it).
                    timings = {
                        "admission_wait_s": waited,
                        "prepare_s": prepared_at - began - waited,
                        "t3_first_tokens_s": rendering - prepared_at,
                        "first_render_s": time.monotonic() - rendering,
                        "first_render_tokens": float(len(tokens)),
                    }
                if final:
                    # The item ends where a whole render of it would (`end_of_speech`).
                    keep = end_of_speech(sent + audio.size, len(tokens), multilingual) - sent
                    yield SynthesisResult(
                        audio=audio[: max(0, keep)],
                        sample_rate=SAMPLE_RATE,
                        input_tokens=p.input_tokens,
                        output_tokens=len(tokens),
                        engine_s=time.monotonic() - began,
                        extra=timings,
                    )
                elif audio.size:
                    yield SynthesisResult(
                        audio, SAMPLE_RATE, p.input_tokens, 0, partial=True, extra=timings
                    )
                    timings = {}
                sent += audio.size
                now = time.monotonic()
                schedule.sent(len(tokens), audio.size / SAMPLE_RATE, now, now - rendering)

    async def check_health(self) -> None:
        await super().check_health()
        if self._runner is not None and self._runner.dead is not None:
            raise EngineError(f"vLLM engine is dead: {self._runner.dead}")

    async def shutdown(self) -> None:
        self._prep.shutdown(wait=False)
        llm, self._llm, self._runner = self._llm, None, None
        if llm is not None and hasattr(llm, "shutdown"):
            llm.shutdown()
        if self._model_dir is not None:
            shutil.rmtree(self._model_dir, ignore_errors=True)
        await super().shutdown()

    def info(self) -> dict[str, Any]:
        e = self.settings.engine
        return {
            **super().info(),
            "t3": "vLLM (ChatterboxT3ForCFG, exact CFG per request)",
            "max_batch_size": e.max_batch_size,
            "max_model_len": e.max_model_len,
            "compile": e.compile,
            "gpu_memory_utilization": e.gpu_memory_utilization,
            "s3gen_stage": self._stage.stats() if self._stage is not None else None,
            "stream_first_tokens": e.stream_first_tokens,
            "stream_margin_s": e.stream_margin_s,
            "streams": self._admission.stats(),
        }

    async def _on_prep(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._prep, self._on_prep_stream, fn, *args
        )

    def _on_prep_stream(self, fn: Callable[..., T], *args: Any) -> T:
        loaded = self._live()
        if not loaded.device.startswith("cuda"):
            return fn(*args)
        import torch

        if self._prep_stream is None:
            self._prep_stream = torch.cuda.Stream(device=loaded.device)  # type: ignore[no-untyped-call]
        with torch.cuda.stream(self._prep_stream):
            out = fn(*args)
            # S3Gen reads the voice reference on its own stream: finish it here.
            self._prep_stream.synchronize()
        return out

    async def _item(
        self, runner: T3AsyncRunner, stage: S3GenStage, p: _Prepared, t3_request: T3Request
    ) -> SynthesisOutcome:
        """One item through T3, then into S3Gen's queue the moment its stop token comes."""
        self._in_t3 += 1
        try:
            t3 = await runner.run_one(t3_request)
        finally:
            self._in_t3 -= 1
        if isinstance(t3, ChatterboxError):
            return t3
        audio = await stage.vocode((p, self._vocoded(t3.tokens)))
        if isinstance(audio, Exception):
            return self._item_error(audio, "S3Gen")
        return SynthesisResult(
            audio=audio,
            sample_rate=SAMPLE_RATE,
            input_tokens=p.input_tokens,
            output_tokens=len(t3.tokens),
        )

    def _vocoded(self, tokens: list[int]) -> list[int]:
        """What S3Gen renders of T3's finished tokens, as the torch engine's `_s3gen_tokens`
        makes them (Turbo appends upstream's silence)."""
        from chatterbox_serve.model.t3.generation import GenerationResult

        return self._s3gen_tokens(GenerationResult(tuple(tokens), True, 0.0))

    # On the engine thread ------------------------------------------------------------

    def _vocode_pass(self, work: list[tuple[_Prepared, list[int]]]) -> list[Any]:
        """A batch of whole items, as float32 audio or the error each failed with."""
        wavs = self._vocode(self._live(), work)
        return [w if isinstance(w, ChatterboxError) else to_audio(w) for w in wavs]

    def _step_pass(self, work: list[tuple[Any, list[int], bool]]) -> list[Any]:
        """One render of several streamed items, as float32 audio of each one's new part."""
        import torch

        loaded = self._live()
        steps = [
            (stream, torch.tensor(tokens, dtype=torch.long, device=loaded.device), final)
            for stream, tokens, final in work
        ]
        try:
            with torch.inference_mode():
                pieces = self._streamer_for(loaded).step(steps, self._diffusion_steps())
        except Exception as exc:
            self._raise_if_fatal(exc)
            if len(work) == 1:
                return [self._item_error(exc, "S3Gen")]
            return [r for w in work for r in self._step_pass([w])]
        return [to_audio(piece) for piece in pieces]

    def _streamer_for(self, loaded: _Loaded) -> Any:
        if self._streamer is None:
            from chatterbox_serve.model.s3gen.streaming import StreamingS3Gen

            self._streamer = StreamingS3Gen(loaded.s3gen, s3gen_policy(self.settings))
        return self._streamer

    def _prepare_jobs(
        self, loaded: _Loaded, requests: Sequence[SynthesisRequest]
    ) -> tuple[dict[int, SynthesisOutcome], list[_Prepared], list[T3Request]]:
        # The name predates `T3Request`; tools/gpu's benchmarks call it by this name.
        outcomes, ready = self._prepare_all(loaded, requests)
        prepared, t3_requests = [], []
        for p in ready:
            try:
                t3_requests.append(self._t3_request(loaded, p))
                prepared.append(p)
            except Exception as exc:
                outcomes[p.index] = self._item_error(exc, "Preparation")
        return outcomes, prepared, t3_requests

    def _t3_request(self, loaded: _Loaded, p: _Prepared) -> T3Request:
        import torch

        item = p.item
        with torch.inference_mode():
            rows_c = loaded.t3.prefill_embeds(item.prefix, item.text_tokens, uncond=False)
            # A family without CFG (Turbo): its rows go alone, and the weight is 0.
            packed = rows_c
            if self.settings.family.spec.cfg:
                rows_u = loaded.t3.prefill_embeds(item.prefix, item.text_tokens, uncond=True)
                packed = torch.cat((rows_c, rows_u), dim=-1)
        packed = packed.cpu()
        rows = packed.shape[0]
        budget = item.max_new_tokens
        if self._forced is not None:
            budget = min(budget, self._forced.tokens)
        limit = self.settings.engine.max_model_len
        if rows + budget > limit:
            budget = limit - rows
            if budget < 1:
                raise InvalidRequestError(
                    f"Text chunk of {len(item.text_tokens)} tokens leaves no room for speech "
                    f"within VLLM_MAX_MODEL_LEN={limit}; send a shorter chunk",
                    param="input",
                )
        return T3Request(
            request_id=f"t3-{uuid.uuid4().hex}",
            prompt=prompt_for(packed, item.cfg_weight, loaded.t3.config.start_speech_token),
            params=sampling_params_for(
                item, budget, loaded.t3.config.stop_speech_token, forced=self._forced is not None
            ),
            max_tokens=budget,
            stop_token=loaded.t3.config.stop_speech_token,
        )


def sampling_params_for(item: Any, budget: int, stop_token: int, *, forced: bool) -> Any:
    """vLLM's `SamplingParams` of one item (a `GenerationItem`): its own sampling values.

    `stop_token_ids` names the stop-of-speech token; the model's `config.json` names it
    as eos too (`model_dir.hf_config`), so vLLM's request stops at it and nothing else.
    A forced length (benchmarks) decodes exactly `budget` tokens, stop ignored.

    vLLM applies the repetition penalty first, then temperature, min_p, top_k and top_p;
    upstream's original model does the same, upstream's Turbo applies the penalty last
    and counts the start token only at the first step. docs/TURBO.md quantifies the
    difference (it only moves which already-spoken tokens sit at the top_k/top_p edge).
    """
    from vllm import SamplingParams

    return SamplingParams(
        temperature=item.temperature,
        top_k=item.top_k,
        top_p=item.top_p,
        min_p=item.min_p,
        repetition_penalty=item.repetition_penalty,
        seed=item.seed,
        max_tokens=budget,
        min_tokens=budget if forced else 0,
        ignore_eos=forced,
        stop_token_ids=[] if forced else [stop_token],
        detokenize=False,
    )


def prompt_for(packed: Any, cfg_weight: float, start_speech_token: int) -> dict[str, Any]:
    """The vLLM prompt of one item: a start-of-speech id per prefix row, and the rows.

    The request id doubles as the multimodal uuid: a prefix never repeats, so vLLM
    must not spend time hashing it (see `t3_vllm.T3PrefixProcessor`).
    """
    import torch

    return {
        "prompt_token_ids": [start_speech_token] * int(packed.shape[0]),
        "multi_modal_data": {
            MODALITY: {
                "t3_prefix": packed,
                "t3_cfg_weight": torch.tensor([float(cfg_weight)], dtype=torch.float64),
            }
        },
    }


def is_turbo(t3: Any) -> bool:
    """Whether a loaded reference T3 is Turbo's (GPT-2, no CFG) rather than the original's."""
    from chatterbox_serve.model.turbo.config import TurboConfig

    return isinstance(t3.config, TurboConfig)


def _t3_weights(loaded: _Loaded) -> Path:
    from chatterbox_serve.model import checkpoint

    if is_turbo(loaded.t3):
        from chatterbox_serve.model.turbo.checkpoint import T3_FILE

        return loaded.checkpoint_dir / T3_FILE
    variant = checkpoint.variant(loaded.t3.config.is_multilingual)
    return loaded.checkpoint_dir / variant.t3_file


def engine_kwargs(settings: Settings, model_dir: Path) -> dict[str, Any]:
    """vLLM's engine arguments for our T3, sized from the one engine batch setting.

    The served configuration: the GPU proof (`tools/gpu/t3_vllm_proof.py`) builds its
    bf16 engine from these too.
    """
    e = settings.engine
    return {
        "model": str(model_dir),
        "skip_tokenizer_init": True,
        "dtype": "bfloat16",
        "max_model_len": e.max_model_len,
        # Every call the model deployment lets run at once decodes together.
        "max_num_seqs": e.max_batch_size * VLLMEngine.max_concurrent_calls,
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "enforce_eager": not e.compile,
        # A prefix never repeats across requests: caching it or its processing would
        # only hold memory (issue 14: ~4 GiB per replica in the old engine).
        "enable_prefix_caching": False,
        "mm_processor_cache_gb": 0,
        "limit_mm_per_prompt": {MODALITY: 1},
    }


def _build_async_llm(settings: Settings, model_dir: Path) -> Any:
    """vLLM's `AsyncLLM` for our T3 (`engine_kwargs`)."""
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs(settings, model_dir)))
