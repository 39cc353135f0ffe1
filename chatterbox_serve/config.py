"""Settings for chatterbox-serve, read from the environment, a `.env` file and app args.

Every setting has one environment variable. The names are the ones users of the
original Chatterbox API and its vLLM integration already know (`VLLM_MAX_BATCH_SIZE`,
`EXAGGERATION`, ...); settings new to this project take the `CHATTERBOX_` prefix.

Precedence, highest first: process environment, `.env` file, the `settings:` mapping
of the application args in `serve_config.yaml`, then the defaults below. This is the
only module that reads environment variables.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from chatterbox_serve.errors import ConfigError
from chatterbox_serve.families import ModelFamily
from chatterbox_serve.generation import (
    CfgWeight,
    Exaggeration,
    GenerationParameters,
    MinP,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    family_defaults,
)

logger = logging.getLogger(__name__)


__all__ = [
    "AUTO",
    "ENGINES",
    "ConfigError",
    "Settings",
    "engine_names",
    "env_aliases",
    "env_names",
    "load_settings",
]

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


def _env(name: str, *aliases: str) -> dict[str, Any]:
    """The variable of a setting, and older names that still set it (the name wins)."""
    return {"env": name, "aliases": list(aliases)}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineConfig(_Section):
    engine: str = Field(
        "auto",
        description="Engine name from the registry `ENGINES` in `chatterbox_serve/config.py` "
        "(simulated, torch, vllm, ...), or auto (vllm with its extra and a CUDA GPU; else torch "
        "with torch and a checkpoint at hand; else simulated).",
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


class GenerationDefaults(_Section):
    """The server's default of each generation parameter (bounds and values: `generation.py`)."""

    exaggeration: Exaggeration = Field(
        GenerationParameters.exaggeration,
        description="Default emotion exaggeration.",
        json_schema_extra=_env("EXAGGERATION"),
    )
    cfg_weight: CfgWeight = Field(
        GenerationParameters.cfg_weight,
        description="Default classifier-free guidance weight of a request without cfg_weight "
        "(0 turns CFG off); `CFG_WEIGHT`, the original API's name, is an alias.",
        json_schema_extra=_env("CHATTERBOX_CFG_SCALE", "CFG_WEIGHT"),
    )
    temperature: Temperature = Field(
        GenerationParameters.temperature,
        description="Default sampling temperature.",
        json_schema_extra=_env("TEMPERATURE"),
    )
    top_p: TopP = Field(
        GenerationParameters.top_p,
        description="Default nucleus sampling top_p.",
        json_schema_extra=_env("CHATTERBOX_TOP_P"),
    )
    min_p: MinP = Field(
        GenerationParameters.min_p,
        description="Default min_p (upstream Chatterbox value).",
        json_schema_extra=_env("CHATTERBOX_MIN_P"),
    )
    repetition_penalty: RepetitionPenalty = Field(
        GenerationParameters.repetition_penalty,
        description="Default repetition penalty (upstream Chatterbox).",
        json_schema_extra=_env("CHATTERBOX_REPETITION_PENALTY"),
    )

    top_k: TopK = Field(
        GenerationParameters.top_k,
        description="Default top_k (Turbo; the original models ignore it).",
        json_schema_extra=_env("CHATTERBOX_TOP_K"),
    )

    def parameters(self, family: ModelFamily | None = None) -> GenerationParameters:
        """These defaults as the engine's parameters (a seed is never a server default).

        For a `family`: upstream's defaults for it, with the values an operator set
        (these variables) over them, so a setting applies to every family that uses it.
        """
        if family is None:
            return GenerationParameters(**self.model_dump())
        return replace(family_defaults(family), **self.model_dump(include=self.model_fields_set))


class ChunkingConfig(_Section):
    max_chunk_length: int = Field(
        280,
        ge=20,
        le=2000,
        description="Longest text chunk sent to the model, in characters; shorter where a "
        "script costs more prompt and speech per character (Chinese, Japanese, Korean: "
        "text/speech_rates.py), so every chunk fits T3 with its speech.",
        json_schema_extra=_env("MAX_CHUNK_LENGTH"),
    )
    max_total_length: int = Field(
        4096,
        ge=1,
        le=200000,
        description="Longest accepted input, in characters (OpenAI's limit; the original "
        "Chatterbox API took 3000).",
        json_schema_extra=_env("MAX_TOTAL_LENGTH"),
    )
    stream_first_chunk_length: int = Field(
        100,
        ge=10,
        le=2000,
        description="Longest first chunk when streaming, so the first audio comes fast.",
        json_schema_extra=_env("CHATTERBOX_STREAM_FIRST_CHUNK_LENGTH"),
    )
    stream_chunks_ahead: int = Field(
        2,
        ge=1,
        le=10000,
        description="Chunks of a stream in flight past the one being heard, so each is "
        "ready (or streaming) before the one before has played out.",
        json_schema_extra=_env("CHATTERBOX_STREAM_CHUNKS_AHEAD"),
    )
    max_chunks_per_request: int = Field(
        128,
        ge=1,
        le=10000,
        description="Most chunks one request may produce.",
        json_schema_extra=_env("CHATTERBOX_MAX_CHUNKS_PER_REQUEST"),
    )
    max_audio_s_per_char: float = Field(
        0.25,
        gt=0.0,
        le=10.0,
        description="Most seconds of audio (before speed) per alphabetic character, where "
        "speech runs near 0.07; other scripts get the same multiple of their speech per "
        "character (text/speech_rates.py).",
        json_schema_extra=_env("CHATTERBOX_MAX_AUDIO_S_PER_CHAR"),
    )
    max_file_response_bytes: int = Field(
        64 * 1_048_576,
        ge=1024,
        le=4 * 1_073_741_824,
        description="Largest whole-file response; larger ones must be streamed.",
        json_schema_extra=_env("CHATTERBOX_MAX_FILE_RESPONSE_BYTES"),
    )


class AudioConfig(_Section):
    crossfade_ms: float = Field(
        25.0,
        ge=0.0,
        le=500.0,
        description="Equal-power crossfade between chunks.",
        json_schema_extra=_env("CHATTERBOX_CROSSFADE_MS"),
    )
    mp3_bitrate_kbps: int = Field(
        64,
        ge=32,
        le=320,
        description="MP3 bit rate.",
        json_schema_extra=_env("CHATTERBOX_MP3_BITRATE_KBPS"),
    )
    default_response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = Field(
        "mp3",
        description="Format when a request names none: OpenAI's mp3; the original "
        "Chatterbox API answered wav.",
        json_schema_extra=_env("DEFAULT_RESPONSE_FORMAT"),
    )
    watermark: Literal["on", "off"] = Field(
        "on",
        description="Resemble AI's Perth implicit watermark on all generated speech, as "
        "upstream Chatterbox applies it; 'off' only where an operator must.",
        json_schema_extra=_env("WATERMARK"),
    )

    @property
    def watermarked(self) -> bool:
        """Whether generated audio carries the Perth watermark."""
        return self.watermark == "on"


class VoiceConfig(_Section):
    voice_library_dir: str = Field(
        "./voices",
        description="Local voice library directory.",
        json_schema_extra=_env("VOICE_LIBRARY_DIR"),
    )
    voice_library_url: str | None = Field(
        None,
        description="Object-storage voice library (s3://bucket/prefix); wins over the dir.",
        json_schema_extra=_env("VOICE_LIBRARY_URL"),
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint for VOICE_LIBRARY_URL (MinIO, R2, ...); "
        "credentials come from the standard AWS chain.",
        json_schema_extra=_env("AWS_ENDPOINT_URL"),
    )
    max_voices: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Most voices one library may hold.",
        json_schema_extra=_env("CHATTERBOX_MAX_VOICES"),
    )
    max_aliases_per_voice: int = Field(
        16,
        ge=0,
        le=1000,
        description="Most aliases one voice may have.",
        json_schema_extra=_env("CHATTERBOX_MAX_ALIASES_PER_VOICE"),
    )


class ServerConfig(_Section):
    cors_origins: str = Field(
        "*",
        description="Comma-separated allowed CORS origins.",
        json_schema_extra=_env("CORS_ORIGINS"),
    )
    max_json_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=64 * 1_048_576,
        description="Largest JSON request body.",
        json_schema_extra=_env("CHATTERBOX_MAX_JSON_BODY_BYTES"),
    )
    max_upload_bytes: int = Field(
        10 * 1_048_576,
        ge=1024,
        le=512 * 1_048_576,
        description="Largest uploaded audio file.",
        json_schema_extra=_env("CHATTERBOX_MAX_UPLOAD_BYTES"),
    )
    max_instructions_length: int = Field(
        4096,
        ge=0,
        le=100000,
        description="Longest accepted `instructions` field.",
        json_schema_extra=_env("CHATTERBOX_MAX_INSTRUCTIONS_LENGTH"),
    )
    api_keys: SecretStr | None = Field(
        None,
        description="Comma-separated API keys, or the path of a file holding them (one per "
        "line, e.g. a mounted Kubernetes Secret); unset means the API is open, set but empty "
        "stops startup.",
        json_schema_extra=_env("API_KEYS"),
    )
    admin_api_keys: SecretStr | None = Field(
        None,
        description="Operator keys, in the same forms as API_KEYS: they also work as API "
        "keys, and alone may reset memory, clear request history, change alert thresholds, "
        "read /status and /memory, and see every tenant's requests; unset means no operator "
        "(open mode without keys: everyone is).",
        json_schema_extra=_env("ADMIN_API_KEYS"),
    )


class JobsConfig(_Section):
    """Long-text jobs (`/v1/audio/speech/long`): storage, limits, workers, retention."""

    jobs_url: str | None = Field(
        None,
        description="Where jobs are kept: s3://bucket/prefix or a directory; unset means "
        "beside the voice library (VOICE_LIBRARY_URL or VOICE_LIBRARY_DIR).",
        json_schema_extra=_env("JOBS_URL"),
    )
    max_length: int = Field(
        100_000,
        ge=1,
        le=1_000_000,
        description="Longest long-text job input, in characters.",
        json_schema_extra=_env("LONG_TEXT_MAX_LENGTH"),
    )
    retention_days: float = Field(
        7.0,
        gt=0.0,
        le=3650.0,
        description="Days a finished job and its audio are kept.",
        json_schema_extra=_env("LONG_TEXT_JOB_RETENTION_DAYS"),
    )
    max_jobs_per_key: int = Field(
        5,
        ge=1,
        le=10_000,
        description="Unfinished jobs one API key may have at once (create, retry and bulk "
        "retry all count, atomically); more get 429.",
        json_schema_extra=_env("CHATTERBOX_MAX_JOBS_PER_KEY"),
    )
    jobs_per_worker: int = Field(
        3,
        ge=1,
        le=100,
        description="Jobs one job-worker replica runs at once.",
        json_schema_extra=_env("LONG_TEXT_MAX_CONCURRENT_JOBS"),
    )
    chunks_in_flight_per_job: int = Field(
        4,
        ge=1,
        le=256,
        description="Chunks of one job at the model at once.",
        json_schema_extra=_env("CHATTERBOX_JOB_CHUNKS_IN_FLIGHT"),
    )
    chunks_in_flight_total: int = Field(
        8,
        ge=1,
        le=1024,
        description="Chunks of all jobs of one worker replica at the model at once.",
        json_schema_extra=_env("CHATTERBOX_JOB_TOTAL_CHUNKS_IN_FLIGHT"),
    )
    lease_s: float = Field(
        30.0,
        ge=1.0,
        le=3600.0,
        description="Lease of a worker on a job; a dead worker's job is taken over after it.",
        json_schema_extra=_env("CHATTERBOX_JOB_LEASE_S"),
    )
    poll_s: float = Field(
        2.0,
        ge=0.05,
        le=600.0,
        description="How often an idle job worker looks for work.",
        json_schema_extra=_env("CHATTERBOX_JOB_POLL_S"),
    )
    chunk_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="Tries per chunk on server-side failures before the chunk fails.",
        json_schema_extra=_env("CHATTERBOX_JOB_CHUNK_ATTEMPTS"),
    )
    max_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="Runs of one job (takeovers and failed final assemblies included) before "
        "it fails with the last run's reason; a retry starts the count again.",
        json_schema_extra=_env("CHATTERBOX_JOB_MAX_ATTEMPTS"),
    )


class TenancyConfig(_Section):
    """What one API key may hold at once, so no tenant starves another (docs/SECURITY.md)."""

    max_sse_streams_per_key: int = Field(
        4,
        ge=1,
        le=10_000,
        description="Job progress (SSE) streams one API key may hold open per ingress "
        "replica; more get 429.",
        json_schema_extra=_env("CHATTERBOX_MAX_SSE_STREAMS_PER_KEY"),
    )
    max_downloads_per_key: int = Field(
        4,
        ge=1,
        le=10_000,
        description="Job downloads one API key may have in flight per ingress replica; "
        "more get 429.",
        json_schema_extra=_env("CHATTERBOX_MAX_DOWNLOADS_PER_KEY"),
    )
    stream_window_bytes: int = Field(
        4 * 1024**2,
        ge=64 * 1024,
        le=1024**3,
        description="Bytes of one streamed response (a job download, streamed speech) the "
        "ingress sends ahead of what Ray's proxy has delivered to the client; past it the "
        "response waits for the client to read.",
        json_schema_extra=_env("CHATTERBOX_STREAM_WINDOW_BYTES"),
    )
    sse_idle_timeout_s: float = Field(
        300.0,
        ge=1.0,
        le=86_400.0,
        description="A job progress (SSE) stream with nothing to report this long ends with "
        "a final `idle` event; the client reconnects to keep following.",
        json_schema_extra=_env("CHATTERBOX_SSE_IDLE_TIMEOUT_S"),
    )
    max_stored_jobs_per_key: int = Field(
        500,
        ge=1,
        le=1_000_000,
        description="Jobs, finished ones included, one API key may keep stored; more get 429.",
        json_schema_extra=_env("CHATTERBOX_MAX_STORED_JOBS_PER_KEY"),
    )
    max_stored_bytes_per_key: int = Field(
        2 * 1024**3,
        ge=1024,
        le=1024**5,
        description="Bytes of job input, chunk audio and output one API key may keep "
        "stored; a job that would pass it gets 507.",
        json_schema_extra=_env("CHATTERBOX_MAX_STORED_BYTES_PER_KEY"),
    )
    allow_unhardened_proxy: bool = Field(
        False,
        description="Start even when Ray's HTTP proxy lacks this service's middleware "
        "(RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH unset); only for a trusted development "
        "machine: clients can then lift the proxy's timeout and disconnect handling.",
        json_schema_extra=_env("CHATTERBOX_ALLOW_UNHARDENED_PROXY"),
    )


class SimulatedEngineConfig(_Section):
    """Cost model of the simulated engine: one batch call costs base + per_item*n + per_char*chars.

    The defaults make one 234-character chunk alone cost 0.39 s, the per-chunk figure
    published for chatterbox-vllm on an RTX 3090 (154 chunks, 60.8 s of S3Gen), and
    make a batch cost mostly fixed, as batched T3 on vLLM and batched S3Gen are on a GPU.
    """

    base_s: float = Field(
        0.35,
        ge=0.0,
        le=60.0,
        description="Fixed cost of one engine call.",
        json_schema_extra=_env("CHATTERBOX_SIM_BASE_S"),
    )
    per_item_s: float = Field(
        0.01,
        ge=0.0,
        le=60.0,
        description="Cost of each item in a call.",
        json_schema_extra=_env("CHATTERBOX_SIM_PER_ITEM_S"),
    )
    per_char_s: float = Field(
        0.00012,
        ge=0.0,
        le=1.0,
        description="Cost of each input character in a call.",
        json_schema_extra=_env("CHATTERBOX_SIM_PER_CHAR_S"),
    )
    chars_per_second: float = Field(
        15.0,
        gt=0.0,
        le=1000.0,
        description="Characters of text per second of audio.",
        json_schema_extra=_env("CHATTERBOX_SIM_CHARS_PER_SECOND"),
    )
    streaming: bool = Field(
        False,
        description="Stream each item's audio in pieces by the vllm engine's render rule "
        "(CHATTERBOX_STREAM_FIRST_TOKENS, then CHATTERBOX_STREAM_MARGIN_S), its tokens "
        "coming evenly over the item's cost.",
        json_schema_extra=_env("CHATTERBOX_SIM_STREAMING"),
    )
    failure_marker: str = Field(
        "<<simulate-engine-failure>>",
        min_length=1,
        description="Text containing this marker fails in the engine (fault injection).",
        json_schema_extra=_env("CHATTERBOX_SIM_FAILURE_MARKER"),
    )


class Settings(_Section):
    """The root of all settings; one instance is built at startup and passed to every replica."""

    engine: EngineConfig = Field(default_factory=EngineConfig)
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    voices: VoiceConfig = Field(default_factory=VoiceConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    tenancy: TenancyConfig = Field(default_factory=TenancyConfig)
    simulated: SimulatedEngineConfig = Field(default_factory=SimulatedEngineConfig)

    @property
    def families(self) -> tuple[ModelFamily, ...]:
        """The model families this service loads (CHATTERBOX_MODELS)."""
        return self.engine.families

    @property
    def family(self) -> ModelFamily:
        """The one family an engine built from these settings serves.

        Raises:
            ConfigError: several families are loaded; build the engine from
                `for_family(family)`, as the builder does for each model deployment.
        """
        families = self.engine.families
        if len(families) != 1:
            raise ConfigError(
                f"settings load {len(families)} families; an engine takes for_family(...)"
            )
        return families[0]

    def for_family(self, family: ModelFamily) -> Settings:
        """These settings as the engine of `family` reads them: that family alone loaded.

        USE_MULTILINGUAL_MODEL follows the family, so engine code that reads it picks the
        family's checkpoint.
        """
        engine = self.engine.model_copy(
            update={
                "models": (family,),
                "default_model": None,
                "use_multilingual_model": family is ModelFamily.MULTILINGUAL,
            }
        )
        return self.model_copy(update={"engine": engine})

    def env_view(self) -> dict[str, Any]:
        """Effective settings keyed by environment variable name, for `/config`.

        Secrets show only whether they are set, never their value.
        """
        view: dict[str, Any] = {}
        for env, section, field in _fields():
            value = getattr(getattr(self, section), field)
            view[env] = ("<redacted>" if value is not None else None) if env in _SECRETS else value
        return view


# Settings whose values never leave the process: not in /config, not in logs.
_SECRETS = frozenset({"API_KEYS", "ADMIN_API_KEYS"})
_BLANK_IS_A_VALUE = frozenset({"CORS_ORIGINS", "API_KEYS", "ADMIN_API_KEYS"})


def _env_extras() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for section_name, section_field in Settings.model_fields.items():
        section_cls = section_field.default_factory
        assert isinstance(section_cls, type) and issubclass(section_cls, _Section)
        for name, info in section_cls.model_fields.items():
            extra = info.json_schema_extra
            assert isinstance(extra, dict)
            yield section_name, name, extra


def _fields() -> Iterator[tuple[str, str, str]]:
    for section_name, name, extra in _env_extras():
        yield str(extra["env"]), section_name, name


def env_names() -> list[str]:
    """Every environment variable this module reads, by its name (aliases aside)."""
    return [env for env, _, _ in _fields()]


def env_aliases() -> dict[str, str]:
    """Older variable names that still set a setting -> the setting's variable."""
    return {
        str(alias): str(extra["env"])
        for _, _, extra in _env_extras()
        for alias in extra.get("aliases") or []
    }


def _canonical(source: Mapping[str, Any]) -> dict[str, Any]:
    """`source` with aliases renamed to their setting's variable, which wins if both are set."""
    aliases = env_aliases()
    out = {aliases[k]: v for k, v in source.items() if k in aliases}
    out.update({k: v for k, v in source.items() if k not in aliases})
    return out


def _allowed(section: str, field: str) -> str:
    section_cls = Settings.model_fields[section].default_factory
    assert isinstance(section_cls, type) and issubclass(section_cls, BaseModel)
    info = section_cls.model_fields[field]
    bounds = []
    for meta in info.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sym} {getattr(meta, attr)}")
    if bounds:
        return "allowed: " + " and ".join(bounds)
    if info.annotation is bool:
        return "allowed: true or false"
    if (section, field) == ("engine", "engine"):
        return "allowed: " + ", ".join(engine_names())
    if (section, field) in (("engine", "models"), ("engine", "default_model")):
        return "allowed: " + ", ".join(ModelFamily)
    return f"allowed: {info.annotation}".replace("typing.", "")


def _read_dotenv(path: str | os.PathLike[str] | None) -> dict[str, str]:
    if path is None or not Path(path).is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | os.PathLike[str] | None = ".env",
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build `Settings` from app-arg overrides, a `.env` file and the environment.

    Raises:
        ConfigError: an unknown override key, or a value out of range; the message
            names the variable and what it allows.
    """
    environ = os.environ if environ is None else environ
    known = set(env_names()) | set(env_aliases())
    for key in overrides or {}:
        if key not in known:
            raise ConfigError(f"Unknown setting {key!r} in app args; known: {sorted(known)}")
    for key in environ:
        if key.startswith("CHATTERBOX_") and key not in known:
            logger.warning("Ignoring unknown environment variable %s", key)

    merged: dict[str, Any] = _canonical(overrides or {})
    merged.update(_canonical(_read_dotenv(dotenv_path)))
    merged.update(_canonical({k: v for k, v in environ.items() if k in known}))

    sections: dict[str, dict[str, Any]] = {}
    for env, section, field in _fields():
        if env in merged:
            value = merged[env]
            # Blank means unset, except where blank is a value: an empty API_KEYS (an
            # empty Kubernetes Secret) must stop startup, not open the API.
            if isinstance(value, str) and value.strip() == "" and env not in _BLANK_IS_A_VALUE:
                continue
            sections.setdefault(section, {})[field] = value
    try:
        return Settings.model_validate(sections)
    except ValidationError as exc:
        first = exc.errors()[0]
        if len(first["loc"]) < 2:  # a check across a section's fields
            raise ConfigError(f"Invalid settings: {first['msg']}") from None
        section, field = str(first["loc"][0]), str(first["loc"][1])
        env = next(e for e, s, f in _fields() if (s, f) == (section, field))
        shown = "<redacted>" if env in _SECRETS else repr(merged[env])
        raise ConfigError(
            f"Invalid {env}={shown}: {first['msg']} ({_allowed(section, field)})"
        ) from None
