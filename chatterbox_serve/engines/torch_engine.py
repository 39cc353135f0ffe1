"""`engine: torch`: Chatterbox in plain PyTorch on CUDA, Apple MPS or the CPU.

T3 is the reference implementation in `chatterbox_serve.model.t3` (upstream
Chatterbox's semantics, checked token for token against the upstream package), run
by its batched generation loop: every item of a call keeps its own voice,
exaggeration, language, CFG weight, seed and sampling values. The speech tokens then
go through the same batched S3Gen runner the vLLM engine uses.

Failures stay with their item, as `TTSEngine` requires: a bad language, a text too
long for T3's position table, an undecodable voice, or a T3/S3Gen error that recurs
when the item runs alone fails that item's slot only. A CUDA error marks the engine
dead, so `check_health` raises and Serve replaces the replica.

torch and the model code load in `start`, so this module imports without torch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import (
    SynthesisOutcome,
    SynthesisRequest,
    SynthesisResult,
    TTSEngine,
    VoicePrompt,
)
from chatterbox_serve.errors import (
    ChatterboxError,
    EngineError,
    InvalidRequestError,
    VoiceAudioMissingError,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
SAMPLES_PER_TOKEN = SAMPLE_RATE // 25  # S3Gen renders 2 mel frames of 480 samples a token
T = TypeVar("T")


def end_of_speech(samples: int, tokens: int, multilingual: bool) -> int:
    """How many of an utterance's samples to keep: on the multilingual model, all but the
    last speech token's.

    Upstream main (resemble-ai/chatterbox#516, which also removed the alignment
    analyzer) drops that token's audio: T3 emits it just before stop-of-speech with
    degraded attention, and it decodes to about 40 ms of noise. Both engines, whole and
    streamed, end an item here, so one request gives one audio whichever engine runs it.
    """
    if not multilingual:
        return samples
    return min(samples, max(1, tokens - 1) * SAMPLES_PER_TOKEN)


def pick_device(setting: str) -> str:
    """`auto` is the first of cuda, mps, cpu that torch can use; anything else is as set."""
    import torch

    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(setting: str, device: str) -> Any:
    import torch

    if setting == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, setting)


def to_audio(wav: Any) -> np.ndarray:
    """A waveform tensor on any device as the engine's output: float32 numpy in [-1, 1]."""
    audio = np.asarray(wav.float().cpu().numpy(), dtype=np.float32).reshape(-1)
    return np.clip(audio, -1.0, 1.0)


def seed_of(p: _Prepared) -> int:
    """S3Gen's noise seed for an item: its request's seed, or a fresh one."""
    return p.item.seed if p.item.seed is not None else secrets.randbits(31)


@dataclass
class _Loaded:
    """Everything `start` loads; one per engine."""

    checkpoint_dir: Path
    device: str
    dtype: Any
    t3: Any
    voice_encoder: Any
    s3gen: Any
    builtin: Any
    tokenizer: Any
    runner: Any


@dataclass(frozen=True)
class _Model:
    """The family's own parts of `_Loaded` (`TorchEngine._load_model`)."""

    t3: Any
    s3gen: Any
    tokenizer: Any
    runner: Any


@dataclass(frozen=True)
class _Prepared:
    index: int
    item: Any  # GenerationItem
    input_tokens: int
    s3gen_ref: dict[str, Any]


class TorchEngine(TTSEngine):
    """Chatterbox T3 (reference PyTorch implementation) plus batched S3Gen, on one device."""

    name = "torch"
    sample_rate = SAMPLE_RATE
    needs_gpu = False

    def __init__(self, settings: Settings) -> None:
        """Use `from_settings`, which builds the engine of the settings' family."""
        self.settings = settings
        self.multilingual = settings.engine.use_multilingual_model
        self._loaded: _Loaded | None = None
        from chatterbox_serve.model.voice import VoiceCache

        self._voices = VoiceCache(settings.engine.conditionals_cache_size)
        # Calls run one at a time on one thread, so torch's thread-local state is the
        # one set at load and items of overlapping calls never interleave on the device.
        self._lock = asyncio.Lock()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "chatterbox-torch")
        self._dead: str | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> TorchEngine:
        """The torch engine of `settings.family`: Turbo's (`torch_turbo`) or the original's."""
        from chatterbox_serve.families import ModelFamily

        if settings.family is ModelFamily.TURBO:
            from chatterbox_serve.engines.torch_turbo import TurboTorchEngine

            return TurboTorchEngine(settings)
        return cls(settings)

    async def start(self) -> None:
        self._loaded = await self._on_thread(self._load)

    async def synthesize(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisOutcome]:
        async with self._lock:
            loaded = self._live()
            began = time.monotonic()
            outcomes = await self._on_thread(self._run_batch, loaded, requests)
            took = time.monotonic() - began
        return [
            dataclasses.replace(o, batch_size=len(requests), engine_s=took)
            if isinstance(o, SynthesisResult)
            else o
            for o in outcomes
        ]

    async def check_health(self) -> None:
        self._live()

    async def shutdown(self) -> None:
        async with self._lock:
            self._loaded, self._closed = None, True
        self._thread.shutdown(wait=False)

    def info(self) -> dict[str, Any]:
        loaded = self._loaded
        return {
            **super().info(),
            "model": "multilingual" if self.multilingual else "english",
            "family": self.settings.family.value,
            "started": loaded is not None,
            "alive": self._dead is None and not self._closed,
            "device": loaded.device if loaded else None,
            "dtype": str(loaded.dtype).removeprefix("torch.") if loaded else None,
            "t3_layers": loaded.t3.config.backbone.num_layers if loaded else None,
            "conditionals_cache": self._voices.stats(),
            "max_new_tokens": self.settings.engine.max_new_tokens,
            "diffusion_steps": self._diffusion_steps(),
        }

    async def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _live(self) -> _Loaded:
        if self._dead is not None:
            raise EngineError(f"torch engine is dead: {self._dead}")
        if self._loaded is None:
            raise EngineError("torch engine is shut down" if self._closed else "not started")
        return self._loaded

    # Everything below runs on the engine thread.

    def _load(self) -> _Loaded:
        from chatterbox_serve.model import checkpoint

        e = self.settings.engine
        directory = self._checkpoint_dir()
        device = pick_device(e.device)
        dtype = pick_dtype(e.torch_dtype, device)
        logger.info(
            "torch engine: loading %s %s on %s (%s)", self.settings.family, directory, device, dtype
        )
        model = self._load_model(directory, device, dtype)
        return _Loaded(
            checkpoint_dir=directory,
            device=device,
            dtype=dtype,
            t3=model.t3,
            voice_encoder=checkpoint.load_voice_encoder(directory, device),
            s3gen=model.s3gen,
            builtin=checkpoint.load_builtin_voice(directory),
            tokenizer=model.tokenizer,
            runner=model.runner,
        )

    def _checkpoint_dir(self) -> Path:
        """The family's checkpoint folder, checked."""
        from chatterbox_serve.model import checkpoint

        return checkpoint.resolve_checkpoint_dir(self.settings.engine.model_dir, self.multilingual)

    def _load_model(self, directory: Path, device: str, dtype: Any) -> _Model:
        """The family's T3, S3Gen, text tokenizer and S3Gen runner (voices are shared)."""
        from chatterbox_serve.model import checkpoint
        from chatterbox_serve.model.s3gen.runner import runner_factory
        from chatterbox_serve.model.tokenizer import T3TextTokenizer

        t3 = checkpoint.load_t3(directory, self.multilingual, device, dtype)
        s3gen = checkpoint.load_s3gen(directory, device)
        return _Model(
            t3=t3,
            s3gen=s3gen,
            tokenizer=T3TextTokenizer.load(
                multilingual=self.multilingual, checkpoint_dir=directory
            ),
            runner=runner_factory(self.settings)(s3gen),
        )

    def _run_batch(
        self, loaded: _Loaded, requests: Sequence[SynthesisRequest]
    ) -> list[SynthesisOutcome]:
        outcomes, prepared = self._prepare_all(loaded, requests)
        return self._finish(loaded, len(requests), outcomes, self._generate(loaded, prepared))

    def _prepare_all(
        self, loaded: _Loaded, requests: Sequence[SynthesisRequest]
    ) -> tuple[dict[int, SynthesisOutcome], list[_Prepared]]:
        """Items ready for T3, and the outcomes of those that failed on the way."""
        outcomes: dict[int, SynthesisOutcome] = {}
        prepared: list[_Prepared] = []
        for index, request in enumerate(requests):
            try:
                prepared.append(self._prepare(loaded, index, request))
            except Exception as exc:
                outcomes[index] = self._item_error(exc, "Preparation")
        return outcomes, prepared

    def _finish(
        self,
        loaded: _Loaded,
        count: int,
        outcomes: dict[int, SynthesisOutcome],
        t3_results: Sequence[tuple[_Prepared, list[int] | ChatterboxError]],
    ) -> list[SynthesisOutcome]:
        """S3Gen over the items T3 finished, then one outcome per request, in order."""
        generated: list[tuple[_Prepared, list[int]]] = []
        for p, tokens in t3_results:
            if isinstance(tokens, ChatterboxError):
                outcomes[p.index] = tokens
            else:
                generated.append((p, tokens))
        wavs = self._vocode(loaded, generated)
        for (p, tokens), wav in zip(generated, wavs, strict=True):
            outcomes[p.index] = (
                wav if isinstance(wav, ChatterboxError) else self._result_of(p, tokens, wav)
            )
        return [outcomes[i] for i in range(count)]

    @staticmethod
    def _result_of(p: _Prepared, tokens: Sequence[int], wav: Any) -> SynthesisResult:
        return SynthesisResult(
            audio=to_audio(wav),
            sample_rate=SAMPLE_RATE,
            input_tokens=p.input_tokens,
            output_tokens=len(tokens),
        )

    def _prepare(self, loaded: _Loaded, index: int, request: SynthesisRequest) -> _Prepared:
        import torch

        from chatterbox_serve.model.t3.generation import GenerationItem

        config = loaded.t3.config
        g = request.generation
        ids = loaded.tokenizer.encode(request.text, request.language)
        if len(ids) > config.max_text_tokens:
            raise InvalidRequestError(
                f"Text chunk of {len(ids)} tokens is longer than T3's {config.max_text_tokens}",
                param="input",
            )
        inputs = self._voice_inputs(loaded, request.voice)
        with torch.inference_mode():
            exaggeration = torch.tensor([g.exaggeration], device=loaded.device)
            prefix = loaded.t3.conditioning(
                inputs.speaker_emb.to(loaded.dtype),
                inputs.prompt_tokens,
                exaggeration.to(loaded.dtype),
            )[0]
        budget = self._token_budget(request, config.max_speech_tokens)
        item = GenerationItem(
            prefix=prefix,
            text_tokens=tuple(ids),
            cfg_weight=g.cfg_weight,
            temperature=g.temperature,
            top_p=g.top_p,
            min_p=g.min_p,
            repetition_penalty=g.repetition_penalty,
            seed=g.seed,
            max_new_tokens=budget,
        )
        return _Prepared(index, item, len(ids), inputs.s3gen_ref)

    def _token_budget(self, request: SynthesisRequest, model_cap: int) -> int:
        """An item's speech-token budget: the operator's, the model's `model_cap`, and the
        request's cap (from the text's length), which can only lower them."""
        most = self.settings.engine.max_new_tokens
        return min(request.max_new_tokens or most, most, model_cap)

    def _voice_inputs(self, loaded: _Loaded, voice: VoicePrompt | None) -> Any:
        """The `VoiceInputs` of a voice (None: the built-in one), from the cache if there."""
        from chatterbox_serve.model.voice import BUILTIN_KEY, builtin_voice_inputs

        if voice is None:
            return self._voices.get_or_compute(
                BUILTIN_KEY, lambda: builtin_voice_inputs(loaded.builtin, loaded.device)
            )

        def compute() -> Any:
            # A voice sent by sha256 alone serves from the conditionals cache; without
            # its audio it cannot be computed, and the chunk is resent.
            if voice.detached:
                raise VoiceAudioMissingError(voice.sha256)
            return self._clone_voice(loaded, voice.audio)

        return self._voices.get_or_compute(voice.sha256, compute)

    def _clone_voice(self, loaded: _Loaded, audio: bytes) -> Any:
        """A reference recording's `VoiceInputs`, as this family's model clones it."""
        return self._voice_cloner()(
            audio,
            s3gen=loaded.s3gen,
            voice_encoder=loaded.voice_encoder,
            prompt_len=loaded.t3.config.speech_cond_prompt_len,
            device=loaded.device,
        )

    def _voice_cloner(self) -> Callable[..., Any]:
        """This family's cloning function (`model.voice.clone_voice_inputs`'s keywords)."""
        from chatterbox_serve.model.voice import clone_voice_inputs

        return clone_voice_inputs

    def _generate(
        self, loaded: _Loaded, prepared: list[_Prepared]
    ) -> list[tuple[_Prepared, list[int] | ChatterboxError]]:
        """Speech tokens per item from one batched T3 run; on failure, each item alone."""
        if not prepared:
            return []
        try:
            results = self._run_t3(loaded, [p.item for p in prepared])
        except Exception as exc:
            self._raise_if_fatal(exc)
            if len(prepared) == 1:
                return [(prepared[0], self._item_error(exc, "T3 generation"))]
            logger.warning("T3 batch of %d failed (%s); retrying one by one", len(prepared), exc)
            return [r for p in prepared for r in self._generate(loaded, [p])]
        out: list[tuple[_Prepared, list[int] | ChatterboxError]] = []
        for p, result in zip(prepared, results, strict=True):
            tokens = self._s3gen_tokens(result)
            out.append((p, tokens or EngineError("T3 produced no speech tokens")))
        return out

    def _run_t3(self, loaded: _Loaded, items: list[Any]) -> list[Any]:
        """T3's `GenerationResult` of every `GenerationItem`, as one batch."""
        from chatterbox_serve.model.t3.generation import generate

        # No alignment analyzer, as upstream main (`end_of_speech`).
        return generate(loaded.t3, items)

    def _s3gen_tokens(self, result: Any) -> list[int]:
        """The tokens of a `GenerationResult` that S3Gen renders (none: T3 said nothing)."""
        tokens: list[int] = result.speech_tokens()
        return tokens

    def _diffusion_steps(self) -> int:
        return self.settings.engine.diffusion_steps

    def _vocode(self, loaded: _Loaded, generated: list[tuple[_Prepared, list[int]]]) -> list[Any]:
        """Waveforms from the S3Gen runner; on failure, each item alone."""
        import torch

        if not generated:
            return []
        tokens = [torch.tensor(t, dtype=torch.long, device=loaded.device) for _, t in generated]
        refs = [p.s3gen_ref for p, _ in generated]
        # A seeded request repeats exactly only if S3Gen's vocoder noise is seeded too;
        # unseeded items get fresh seeds so they still differ from each other.
        seeds = [seed_of(p) for p, _ in generated]
        try:
            with torch.inference_mode():
                wavs = loaded.runner.run(tokens, refs, self._diffusion_steps(), seeds=seeds)
            if len(wavs) != len(tokens):
                raise EngineError(f"S3Gen returned {len(wavs)} waveforms for {len(tokens)} items")
            multilingual = loaded.t3.config.is_multilingual
            return [
                w[..., : end_of_speech(w.shape[-1], len(t), multilingual)]
                for w, t in zip(wavs, tokens, strict=True)
            ]
        except Exception as exc:
            self._raise_if_fatal(exc)
            if len(generated) == 1:
                return [self._item_error(exc, "S3Gen")]
            logger.warning("S3Gen batch of %d failed (%s); retrying one by one", len(tokens), exc)
            return [w for g in generated for w in self._vocode(loaded, [g])]

    def _raise_if_fatal(self, exc: Exception) -> None:
        if "CUDA error" in str(exc) or "out of memory" in str(exc).lower():
            self._dead = f"{type(exc).__name__}: {exc}"
            logger.error("torch engine marked dead: %s", self._dead)
            raise EngineError(f"torch engine is dead: {self._dead}") from exc

    @staticmethod
    def _item_error(exc: Exception, stage: str) -> ChatterboxError:
        if isinstance(exc, ChatterboxError):
            return exc
        logger.error("Item failed while %s: %s", stage, exc, exc_info=exc)
        return EngineError(f"{stage} failed: {type(exc).__name__}: {exc}")
