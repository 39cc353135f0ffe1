"""The engine section (models, vLLM, S3Gen, streaming, torch engine) and the ENGINES registry."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from chatterbox_serve.config.base import _env, _Section
from chatterbox_serve.families import ModelFamily

# Engine name (CHATTERBOX_ENGINE, `args.engine`) -> "module:Class". Adding an engine
# takes one module with a `TTSEngine` subclass and one line here.
ENGINES: dict[str, str] = {
    "simulated": "chatterbox_serve.engines.simulated:SimulatedEngine",
    "vllm": "chatterbox_serve.engines.vllm.engine:VLLMEngine",
    "torch": "chatterbox_serve.engines.torch_engine:TorchEngine",
}

# Not an engine: vllm with its extra and a CUDA GPU, else torch with a checkpoint at
# hand, else simulated (`engines/auto.py`).
AUTO = "auto"


def engine_names() -> list[str]:
    """Every name CHATTERBOX_ENGINE accepts."""
    return [AUTO, *ENGINES]


class EngineConfig(_Section):
    engine: str = Field(
        "auto",
        description="Engine name from the registry `ENGINES` in "
        "`chatterbox_serve/config/engine.py` (simulated, torch, vllm, ...), or auto (vllm "
        "with its extra and a CUDA GPU; else torch with torch and a checkpoint at hand; else "
        "simulated).",
        json_schema_extra=_env("CHATTERBOX_ENGINE"),
    )
    max_batch_size: int = Field(
        10,
        ge=1,
        le=256,
        description="Items per engine call; the Serve batch size follows it. The vllm engine "
        "runs 4 calls at once, so vLLM's max_num_seqs is 4x this.",
        json_schema_extra=_env("VLLM_MAX_BATCH_SIZE"),
    )
    max_model_len: int = Field(
        2048,
        ge=64,
        # Our vLLM T3 packs positions into int32 (engines/vllm/positions.py: MAX_MODEL_LEN).
        le=4096,
        description="vLLM max_model_len in tokens (prompt + speech).",
        json_schema_extra=_env("VLLM_MAX_MODEL_LEN"),
    )
    compile: bool = Field(
        False,
        description="Let vLLM compile CUDA graphs (slower start, faster decode).",
        json_schema_extra=_env("VLLM_COMPILE"),
    )
    s3gen_fp16: bool = Field(
        False,
        description="Not supported (refused at startup): use CHATTERBOX_S3GEN_PRECISION=bf16.",
        json_schema_extra=_env("VLLM_S3GEN_FP16"),
    )
    diffusion_steps: int = Field(
        10,
        ge=1,
        le=100,
        description="Flow-matching steps in S3Gen.",
        json_schema_extra=_env("VLLM_DIFFUSION_STEPS"),
    )
    use_multilingual_model: bool = Field(
        True,
        description="Load the 23-language model instead of the English one (when "
        "CHATTERBOX_MODELS is unset).",
        json_schema_extra=_env("USE_MULTILINGUAL_MODEL"),
    )
    models: tuple[ModelFamily, ...] | None = Field(
        None,
        description="Model families to load, comma-separated (chatterbox, "
        "chatterbox-multilingual, chatterbox-turbo), each its own model deployment; unset "
        "means the one USE_MULTILINGUAL_MODEL names.",
        json_schema_extra=_env("CHATTERBOX_MODELS"),
    )
    default_model: ModelFamily | None = Field(
        None,
        description="Family that OpenAI's model names (tts-1, tts-1-hd, gpt-4o-mini-tts) and "
        "requests without a model get; unset means the first of CHATTERBOX_MODELS.",
        json_schema_extra=_env("CHATTERBOX_DEFAULT_MODEL"),
    )
    s3gen_batched: bool = Field(
        True,
        description="Run S3Gen over whole batches (padded) instead of one item at a time.",
        json_schema_extra=_env("CHATTERBOX_S3GEN_BATCHED"),
    )
    s3gen_batch_size: int = Field(
        64,
        ge=1,
        le=256,
        description="Most items in one batched S3Gen pass (H200, bf16: 168 audio-s/s at 64 "
        "against 100 at 16).",
        json_schema_extra=_env("CHATTERBOX_S3GEN_BATCH_SIZE"),
    )
    s3gen_max_wait_s: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="vllm engine: longest an item finished by T3 waits for more to fill its "
        "S3Gen batch, while others are still decoding; 0 renders whatever has queued.",
        json_schema_extra=_env("CHATTERBOX_S3GEN_MAX_WAIT_S"),
    )
    stream_first_tokens: int = Field(
        20,
        ge=4,
        le=1000,
        description="vllm engine, streamed requests: speech tokens (25 a second) T3 makes "
        "before S3Gen renders the first audio.",
        json_schema_extra=_env("CHATTERBOX_STREAM_FIRST_TOKENS"),
    )
    stream_margin_s: float = Field(
        1.0,
        gt=0.0,
        le=30.0,
        description="vllm engine, streamed requests: after the first audio, S3Gen renders "
        "again when the audio sent runs less than this many seconds ahead of the listener "
        "(played by wall clock since the first audio); cover one render's latency under load.",
        json_schema_extra=_env("CHATTERBOX_STREAM_MARGIN_S"),
    )
    stream_max_starting: int = Field(
        4,
        ge=1,
        le=1024,
        description="vllm engine, streamed requests: most streams of a replica still waiting "
        "for their first audio; another starts only below it, and only while every playing "
        "stream has CHATTERBOX_STREAM_MARGIN_S buffered (a stream waits for its start rather "
        "than stalling everyone's playback).",
        json_schema_extra=_env("CHATTERBOX_STREAM_MAX_STARTING"),
    )
    stream_admit_wait_s: float = Field(
        30.0,
        ge=0.0,
        le=600.0,
        description="vllm engine, streamed requests: longest a stream waits for its start "
        "(CHATTERBOX_STREAM_MAX_STARTING); past it, it starts even on an overloaded replica.",
        json_schema_extra=_env("CHATTERBOX_STREAM_ADMIT_WAIT_S"),
    )
    s3gen_max_length_ratio: float = Field(
        1.5,
        ge=1.0,
        le=100.0,
        description="Longest/shortest item in one S3Gen batch; longer starts a new batch.",
        json_schema_extra=_env("CHATTERBOX_S3GEN_MAX_LENGTH_RATIO"),
    )
    s3gen_precision: Literal["auto", "fp32", "tf32", "bf16", "fp16"] = Field(
        "auto",
        description="Arithmetic of the batched S3Gen flow stage (encoder and CFM estimator; "
        "the vocoder stays fp32): bf16/fp16 autocast, tf32, fp32; auto is bf16 on Ampere "
        "or newer GPUs, fp32 elsewhere.",
        json_schema_extra=_env("CHATTERBOX_S3GEN_PRECISION"),
    )
    s3gen_compile: Literal["off", "default", "reduce-overhead", "regional", "graphs"] = Field(
        "graphs",
        description="How the S3Gen CFM estimator runs on CUDA: graphs (the eager step "
        "recorded as CUDA graphs per length bucket, no compilation; H200: first audio "
        "1099 -> 301 ms), off (eager), or torch.compile: default, reduce-overhead, regional "
        "(each repeated block alone). CPUs always run eager.",
        json_schema_extra=_env("CHATTERBOX_S3GEN_COMPILE"),
    )
    s3gen_vocoder_precision: Literal["fp32", "fp16"] = Field(
        "fp32",
        description="Arithmetic of the batched S3Gen vocoder's convolutions; fp16 measured "
        "inside the waveform bound with little margin on random weights.",
        json_schema_extra=_env("CHATTERBOX_S3GEN_VOCODER_PRECISION"),
    )
    s3gen_fp8: bool = Field(
        False,
        description="Run the S3Gen estimator's transformer-block linear layers in float8 "
        "(rowwise scales) on GPUs of compute capability 8.9+ (Hopper) when the flow runs in "
        "bf16; no effect elsewhere.",
        json_schema_extra=_env("CHATTERBOX_S3GEN_FP8"),
    )
    s3gen_compile_cache_dir: str | None = Field(
        None,
        description="Directory where torch.compile modes of S3Gen keep their compiled "
        "kernels across restarts (a volume shared by replicas); unset keeps torch's own "
        "per-machine cache only.",
        json_schema_extra=_env("CHATTERBOX_S3GEN_COMPILE_CACHE_DIR"),
    )
    model_dir: str | None = Field(
        None,
        description="Local checkpoint directory; unset means download from the hub.",
        json_schema_extra=_env("CHATTERBOX_MODEL_DIR"),
    )
    turbo_model_dir: str | None = Field(
        None,
        description="Local Turbo checkpoint directory (upstream's chatterbox-turbo file "
        "layout); required when chatterbox-turbo is loaded (its hub revision is not pinned).",
        json_schema_extra=_env("CHATTERBOX_TURBO_MODEL_DIR"),
    )
    gpu_memory_utilization: float = Field(
        0.6,
        gt=0.0,
        le=0.95,
        description="Fraction of GPU memory vLLM may take for T3.",
        json_schema_extra=_env("CHATTERBOX_GPU_MEMORY_UTILIZATION"),
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
        description="Torch engine device: auto (cuda, then mps, then cpu), cpu, mps, cuda[:N].",
        json_schema_extra=_env("CHATTERBOX_DEVICE"),
    )
    torch_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Torch engine T3 precision; auto is bfloat16 on CUDA, float32 elsewhere.",
        json_schema_extra=_env("CHATTERBOX_TORCH_DTYPE"),
    )
    max_new_tokens: int = Field(
        1000,
        ge=1,
        le=4096,
        description="Torch engine: most speech tokens per chunk (upstream's 1000 = 40 s).",
        json_schema_extra=_env("CHATTERBOX_MAX_NEW_TOKENS"),
    )
    bench_forced_tokens: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Benchmarks with random weights only: every chunk decodes exactly this "
        "many speech tokens, stop token ignored (vllm engine). Unset in production.",
        json_schema_extra=_env("CHATTERBOX_BENCH_FORCED_TOKENS"),
    )
    conditionals_cache_size: int = Field(
        128,
        ge=1,
        le=100000,
        description="Voice conditionals kept per model replica (LRU, keyed by audio sha256).",
        json_schema_extra=_env("CHATTERBOX_CONDITIONALS_CACHE_SIZE"),
    )

    voice_audio_cache_bytes: int = Field(
        256 * 1_048_576,
        ge=0,
        le=64 * 1_073_741_824,
        description="Voice audio kept per model replica (LRU by bytes, keyed by sha256), so "
        "a request sends its voice once, not with every chunk.",
        json_schema_extra=_env("CHATTERBOX_VOICE_AUDIO_CACHE_BYTES"),
    )

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip()) or None
        return value

    @field_validator("models")
    @classmethod
    def _distinct_models(
        cls, value: tuple[ModelFamily, ...] | None
    ) -> tuple[ModelFamily, ...] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a family is named twice")
        return value

    @model_validator(mode="after")
    def _default_is_loaded(self) -> EngineConfig:
        if self.default_model is not None and self.default_model not in self.families:
            raise ValueError(
                f"CHATTERBOX_DEFAULT_MODEL={self.default_model.value} is not loaded "
                f"(CHATTERBOX_MODELS: {', '.join(f.value for f in self.families)})"
            )
        return self

    @property
    def families(self) -> tuple[ModelFamily, ...]:
        """The families to load, in the order declared."""
        if self.models is not None:
            return self.models
        if self.use_multilingual_model:
            return (ModelFamily.MULTILINGUAL,)
        return (ModelFamily.ORIGINAL,)

    def model_dir_for(self, family: ModelFamily) -> str | None:
        """The checkpoint directory setting of `family`: Turbo's own, else CHATTERBOX_MODEL_DIR
        (which holds the English and the multilingual files alike)."""
        return self.turbo_model_dir if family is ModelFamily.TURBO else self.model_dir

    @property
    def default_family(self) -> ModelFamily:
        """The family OpenAI's names and requests without a model get."""
        return self.default_model or self.families[0]

    @field_validator("s3gen_fp16")
    @classmethod
    def _no_fp16(cls, on: bool) -> bool:
        # chatterbox-vllm's fp16 S3Gen failed every item, and neither of our
        # runners has an fp16 path: refuse at startup rather than ignore it.
        if on:
            raise ValueError(
                "chatterbox-vllm's fp16 S3Gen is not supported; use "
                "CHATTERBOX_S3GEN_PRECISION=bf16 (the default, auto, picks it on Ampere or newer)"
            )
        return on

    @field_validator("engine")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in engine_names():
            raise ValueError("not a registered engine")
        return name
