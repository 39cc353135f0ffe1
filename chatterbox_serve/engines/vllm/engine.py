"""The real engine: Chatterbox's T3 on vLLM, then S3Gen, over heterogeneous batches.

chatterbox-vllm's `ChatterboxTTS.generate` takes one voice, one set of sampling
values and one language for a whole call (issue 4). vLLM underneath does not need
that: `LLM.generate` takes one prompt dict and one `SamplingParams` per prompt. So
one call here sends every item of a Serve batch as its own prompt, with its own
conditioning rows (voice and exaggeration), its own sampling values and seed, and
its language tag in its token ids, then runs S3Gen with each item's voice.

Failures stay with their item: a bad language, undecodable voice audio, a text too
long for `VLLM_MAX_MODEL_LEN`, or a vLLM or S3Gen error that recurs when the item
runs alone fails that item's slot only. An error that leaves vLLM unusable (its
engine died, CUDA failed, requests stranded inside it) marks the engine dead:
`check_health` raises from then on, so Ray Serve replaces the replica.

vLLM, torch and chatterbox-vllm's model code are imported only when `start` runs
(`loading.load_model`), so this module imports on a machine without them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import (
    SynthesisOutcome,
    SynthesisRequest,
    SynthesisResult,
    TTSEngine,
)
from chatterbox_serve.engines.vllm.conditionals import (
    ConditionalsCache,
    cache_key,
    compute_conditionals,
)
from chatterbox_serve.engines.vllm.loading import LoadedModel, load_model, variant_for
from chatterbox_serve.errors import ChatterboxError, EngineError, InvalidRequestError
from chatterbox_serve.model.s3gen.runner import RunnerFactory, S3GenRunner, runner_factory
from chatterbox_serve.model.tokenizer import T3TextTokenizer

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
# S3 speech tokens are 0..6560; 6561 and 6562 are T3's start and stop of speech.
SPEECH_VOCAB_SIZE = 6561
# chatterbox-vllm puts 34 conditioning rows before the text and one start-of-speech
# slot after it.
PROMPT_OVERHEAD = 35


@dataclass(frozen=True)
class _Prompt:
    """One item ready for T3: its vLLM prompt dict, sampling values and S3Gen reference."""

    index: int
    prompt: dict[str, Any]
    params: Any
    text_tokens: int
    s3gen_ref: dict[str, Any]


ModelLoader = Callable[[Settings], LoadedModel]
T = TypeVar("T")


class VLLMEngine(TTSEngine):
    """Chatterbox through chatterbox-vllm 0.2.1, batching items that differ in every setting."""

    name = "vllm"
    sample_rate = SAMPLE_RATE
    needs_gpu = True

    def __init__(
        self,
        settings: Settings,
        *,
        loader: ModelLoader = load_model,
        s3gen_runner: RunnerFactory | None = None,
    ) -> None:
        self.settings = settings
        self.multilingual = settings.engine.use_multilingual_model
        self._loader = loader
        self._runner_factory = s3gen_runner or runner_factory(settings)
        self._model: LoadedModel | None = None
        self._tokenizer: T3TextTokenizer | None = None
        self._runner: S3GenRunner | None = None
        self._conditionals = ConditionalsCache(settings.engine.conditionals_cache_size)
        # One device: calls run one at a time, each as one vLLM batch, all on one
        # thread, so torch's and CUDA's thread-local state is the one set at load.
        self._device = asyncio.Lock()
        self._gpu_thread = concurrent.futures.ThreadPoolExecutor(1, "chatterbox-gpu")
        self._dead: str | None = None
        self._closed = False

    async def start(self) -> None:
        model = await self._on_gpu_thread(self._loader, self.settings)
        try:
            self._tokenizer = T3TextTokenizer.load(
                multilingual=self.multilingual, checkpoint_dir=model.checkpoint_dir
            )
            self._runner = self._runner_factory(model.tts.s3gen)
        except BaseException:
            model.close()
            raise
        self._model = model

    async def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutcome]:
        async with self._device:
            model = self._live_model()
            began = time.monotonic()
            outcomes = await self._on_gpu_thread(self._run_batch, model, requests)
            took = time.monotonic() - began
        return [
            dataclasses.replace(o, batch_size=len(requests), engine_s=took)
            if isinstance(o, SynthesisResult)
            else o
            for o in outcomes
        ]

    async def check_health(self) -> None:
        self._live_model()

    async def shutdown(self) -> None:
        async with self._device:
            model, self._model, self._closed = self._model, None, True
            if model is not None:
                await self._on_gpu_thread(model.close)
        self._gpu_thread.shutdown(wait=False)

    def info(self) -> dict[str, Any]:
        e = self.settings.engine
        return {
            **super().info(),
            "model": variant_for(self.settings).name,
            "started": self._model is not None,
            "alive": self._dead is None and not self._closed,
            "conditionals_cache": self._conditionals.stats(),
            "s3gen_runner": type(self._runner).__name__ if self._runner else None,
            "max_batch_size": e.max_batch_size,
            "max_model_len": e.max_model_len,
            "cfg_scale": e.cfg_scale,
            "diffusion_steps": e.diffusion_steps,
        }

    async def _on_gpu_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._gpu_thread, fn, *args)

    def _live_model(self) -> LoadedModel:
        if self._dead is not None:
            raise EngineError(f"vLLM engine is dead: {self._dead}")
        if self._model is None:
            raise EngineError("vLLM engine is shut down" if self._closed else "not started")
        return self._model

    # Everything below runs on the GPU thread, one call at a time.

    def _run_batch(
        self, model: LoadedModel, requests: Sequence[SynthesisRequest]
    ) -> list[SynthesisOutcome]:
        outcomes: dict[int, SynthesisOutcome] = {}
        prompts = []
        for index, request in enumerate(requests):
            try:
                prompts.append(self._prepare(model, index, request))
            except Exception as exc:
                outcomes[index] = _item_error(exc, "Preparation")
        generated = []
        for prompt, tokens in self._generate(model, prompts):
            if isinstance(tokens, ChatterboxError):
                outcomes[prompt.index] = tokens
            else:
                generated.append((prompt, tokens))
        wavs = self._vocode(
            model,
            [
                model.torch.tensor(t, dtype=model.torch.long, device=model.tts.target_device)
                for _, t in generated
            ],
            [p.s3gen_ref for p, _ in generated],
        )
        for (prompt, tokens), wav in zip(generated, wavs, strict=True):
            if isinstance(wav, ChatterboxError):
                outcomes[prompt.index] = wav
                continue
            audio = np.asarray(wav.float().cpu().numpy(), dtype=np.float32).reshape(-1)
            outcomes[prompt.index] = SynthesisResult(
                audio=np.clip(audio, -1.0, 1.0),
                sample_rate=SAMPLE_RATE,
                input_tokens=prompt.text_tokens,
                output_tokens=len(tokens),
            )
        return [outcomes[i] for i in range(len(requests))]

    def _prepare(self, model: LoadedModel, index: int, request: SynthesisRequest) -> _Prompt:
        assert self._tokenizer is not None
        ids = self._tokenizer.encode(request.text, request.language)
        max_len = self.settings.engine.max_model_len
        room = max_len - len(ids) - PROMPT_OVERHEAD
        if room < 1:
            raise InvalidRequestError(
                f"Text chunk of {len(ids)} tokens leaves no room for speech within "
                f"VLLM_MAX_MODEL_LEN={max_len}",
                param="input",
            )
        with model.torch.no_grad():
            voice = self._conditionals.get_or_compute(
                cache_key(request.voice), lambda: compute_conditionals(model.tts, request.voice)
            )
            cond_emb = model.tts.update_exaggeration(voice.cond_emb, request.exaggeration)
        # Every sampling value is explicit: chatterbox-vllm's defaults differ from
        # upstream Chatterbox (repetition_penalty 2.0) and it drops min_p (issue 4).
        params = model.sampling_params(
            temperature=request.temperature,
            top_p=request.top_p,
            min_p=request.min_p,
            repetition_penalty=request.repetition_penalty,
            seed=request.seed,
            max_tokens=room,
            stop_token_ids=[model.tts.t3_config.stop_speech_token + model.speech_token_offset],
        )
        return _Prompt(
            index=index,
            prompt={"prompt_token_ids": ids, "multi_modal_data": {"conditionals": [cond_emb]}},
            params=params,
            text_tokens=len(ids),
            s3gen_ref=voice.s3gen_ref,
        )

    def _generate(
        self, model: LoadedModel, prompts: list[_Prompt]
    ) -> list[tuple[_Prompt, list[int] | ChatterboxError]]:
        """Speech tokens per prompt from one T3 call; on failure, each prompt alone."""
        if not prompts:
            return []
        llm = model.tts.t3
        try:
            outputs = llm.generate(
                [p.prompt for p in prompts],
                sampling_params=[p.params for p in prompts],
                use_tqdm=False,
            )
        except Exception as exc:
            self._raise_if_fatal(exc, llm)
            if len(prompts) == 1:
                return [(prompts[0], _item_error(exc, "T3 generation"))]
            logger.warning("T3 batch of %d failed (%s); retrying one by one", len(prompts), exc)
            return [result for p in prompts for result in self._generate(model, [p])]
        offset = model.speech_token_offset
        results: list[tuple[_Prompt, list[int] | ChatterboxError]] = []
        for prompt, output in zip(prompts, outputs, strict=True):
            tokens = [t - offset for t in output.outputs[0].token_ids]
            tokens = [t for t in tokens if 0 <= t < SPEECH_VOCAB_SIZE]
            results.append((prompt, tokens or EngineError("T3 produced no speech tokens")))
        return results

    def _vocode(
        self, model: LoadedModel, tokens: list[Any], refs: list[dict[str, Any]]
    ) -> list[Any]:
        """Waveforms from the S3Gen runner; on failure, each item alone."""
        if not tokens:
            return []
        assert self._runner is not None
        try:
            wavs = self._runner.run(tokens, refs, self.settings.engine.diffusion_steps)
            if len(wavs) != len(tokens):
                raise EngineError(f"S3Gen returned {len(wavs)} waveforms for {len(tokens)} items")
            return list(wavs)
        except Exception as exc:
            self._raise_if_fatal(exc, None)
            if len(tokens) == 1:
                return [_item_error(exc, "S3Gen")]
            logger.warning("S3Gen batch of %d failed (%s); retrying one by one", len(tokens), exc)
            return [
                w for t, r in zip(tokens, refs, strict=True) for w in self._vocode(model, [t], [r])
            ]

    def _raise_if_fatal(self, exc: Exception, llm: Any) -> None:
        """Mark the engine dead when an error leaves vLLM or the GPU unusable."""
        reason = None
        if type(exc).__name__ == "EngineDeadError" or "CUDA error" in str(exc):
            reason = f"{type(exc).__name__}: {exc}"
        elif llm is not None and _has_stranded_requests(llm):
            # vLLM 0.10.0 does not abort the prompts of a failed `generate` call that it
            # had already queued; they would leak into the next call's outputs.
            reason = f"requests stranded in vLLM after {type(exc).__name__}: {exc}"
        if reason is not None:
            self._dead = reason
            logger.error("vLLM engine marked dead: %s", reason)
            raise EngineError(f"vLLM engine is dead: {reason}") from exc


def _has_stranded_requests(llm: Any) -> bool:
    try:
        return bool(llm.llm_engine.has_unfinished_requests())
    except Exception:
        return True


def _item_error(exc: Exception, stage: str) -> ChatterboxError:
    if isinstance(exc, ChatterboxError):
        return exc
    logger.error("Item failed while %s: %s", stage, exc, exc_info=exc)
    return EngineError(f"{stage} failed: {type(exc).__name__}: {exc}")
