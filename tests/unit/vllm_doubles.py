"""Test doubles for the third-party objects the vLLM engine drives.

Each double has the call signature of the real object in vllm 0.10.0 or
chatterbox-vllm 0.2.1 (`LLM.generate`, `SamplingParams`, `ChatterboxTTS`, `S3Gen`,
`T3CondEnc.emotion_adv_fc`), computes in numpy instead of on a GPU, and records
what it was given so tests can assert on it. `test_vllm_contract.py` checks the
real source still has what these doubles stand in for.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import soundfile as sf

SPEECH_TOKEN_OFFSET = 2500
STOP_SPEECH_TOKEN = 6562
COND_ROWS, DIM = 34, 1024


class FakeTensor:
    """The few torch.Tensor methods the engine calls, over a numpy array."""

    def __init__(self, data: Any, device: str = "cpu") -> None:
        self.data = np.array(data)
        self.device = device

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def clone(self) -> FakeTensor:
        return FakeTensor(self.data.copy(), self.device)

    def float(self) -> FakeTensor:
        return FakeTensor(self.data.astype(np.float32), self.device)

    def cpu(self) -> FakeTensor:
        return FakeTensor(self.data, "cpu")

    def numpy(self) -> np.ndarray:
        assert self.device == "cpu", "torch refuses .numpy() on a CUDA tensor"
        return self.data

    def tolist(self) -> list[Any]:
        return list(self.data.tolist())

    def __len__(self) -> int:
        return len(self.data)


class FakeTorch:
    """Stands in for the `torch` module: `tensor`, `long`, `no_grad`."""

    long = np.int64

    def __init__(self) -> None:
        self.grad_enabled = True

    def tensor(self, data: Any, dtype: Any = None, device: str = "cpu") -> FakeTensor:
        return FakeTensor(np.asarray(data, dtype=dtype), device)

    @contextlib.contextmanager
    def no_grad(self) -> Iterator[None]:
        self.grad_enabled = False
        try:
            yield
        finally:
            self.grad_enabled = True


@dataclass(kw_only=True)
class SamplingParams:
    """vllm.SamplingParams (0.10.0) fields the engine may set, with vLLM's defaults."""

    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    detokenize: bool = True


class FakeEngineCore:
    def __init__(self) -> None:
        self.unfinished = False
        self.broken = False

    def has_unfinished_requests(self) -> bool:
        if self.broken:
            raise RuntimeError("engine core gone")
        return self.unfinished


@dataclass
class FakeLLM:
    """vllm.LLM.generate: speech tokens derived from the prompt ids and the seed.

    `fail_if(prompt)` makes any call containing that prompt raise, as vLLM does when
    one prompt of a call is rejected; `raise_exc` makes every call raise it.
    """

    tokens_per_prompt: int = 40
    fail_if: Callable[[dict[str, Any]], bool] = lambda prompt: False
    raise_exc: BaseException | None = None
    calls: list[tuple[list[dict[str, Any]], list[SamplingParams]]] = field(default_factory=list)
    llm_engine: FakeEngineCore = field(default_factory=FakeEngineCore)

    def generate(
        self,
        prompts: Sequence[dict[str, Any]],
        /,
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
        lora_request: Any = None,
        guided_options_request: Any = None,
    ) -> list[SimpleNamespace]:
        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        self.calls.append((list(prompts), list(sampling_params)))
        if self.raise_exc is not None:
            raise self.raise_exc
        if any(self.fail_if(p) for p in prompts):
            raise ValueError("prompt rejected")
        return [self._complete(p, sp) for p, sp in zip(prompts, sampling_params, strict=True)]

    def _complete(self, prompt: dict[str, Any], params: SamplingParams) -> SimpleNamespace:
        base = sum(prompt["prompt_token_ids"]) + (params.seed or 0)
        n = min(self.tokens_per_prompt, params.max_tokens or 0)
        speech = [SPEECH_TOKEN_OFFSET + (base + k) % 6561 for k in range(n)]
        # vLLM keeps the stop token in token_ids; T3 may also emit start-of-speech.
        ids = [SPEECH_TOKEN_OFFSET + 6561, *speech, *(params.stop_token_ids or [])]
        return SimpleNamespace(
            prompt_token_ids=prompt["prompt_token_ids"],
            outputs=[SimpleNamespace(token_ids=ids, finish_reason="stop")],
        )


class FakeS3Gen:
    """S3Gen.inference: 960 samples per speech token, the level set by the voice reference."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], dict[str, Any], int]] = []
        self.fail_voice: float | None = None

    def inference(
        self,
        speech_tokens: FakeTensor,
        ref_wav: Any = None,
        ref_sr: int | None = None,
        ref_dict: dict[str, Any] | None = None,
        cache_source: Any = None,
        finalize: bool = True,
        no_trim: bool = False,
        n_timesteps: int = 10,
    ) -> tuple[FakeTensor, FakeTensor]:
        assert ref_dict is not None and speech_tokens.device == "cuda"
        self.calls.append((speech_tokens.tolist(), ref_dict, n_timesteps))
        if ref_dict["level"] == self.fail_voice:
            raise RuntimeError("S3Gen failed for this reference")
        wav = np.full((1, 960 * len(speech_tokens)), ref_dict["level"], dtype=np.float32)
        return FakeTensor(wav, "cuda"), FakeTensor(np.zeros((1, 1, 0)), "cuda")


class FakeLinear:
    def __init__(self, weight: np.ndarray) -> None:
        self.weight = FakeTensor(weight)


class FakeChatterboxTTS:
    """chatterbox_vllm.tts.ChatterboxTTS, as far as the engine uses it.

    A voice's conditioning rows and S3Gen `level` are the mean absolute amplitude of
    its reference audio, so a test can tell which voice reached which prompt.
    """

    loads: list[tuple[Path, dict[str, Any]]] = []

    def __init__(self, llm: FakeLLM | None = None) -> None:
        self.target_device = "cuda"
        self.t3 = llm or FakeLLM()
        self.t3_config = SimpleNamespace(stop_speech_token=STOP_SPEECH_TOKEN)
        weight = np.linspace(-1.0, 1.0, DIM, dtype=np.float32).reshape(DIM, 1)
        self.t3_cond_enc = SimpleNamespace(emotion_adv_fc=FakeLinear(weight))
        self.s3gen = FakeS3Gen()
        self.conditioned: list[str | None] = []
        self.shut_down = False

    @classmethod
    def from_local(cls, ckpt_dir: str | Path, **kwargs: Any) -> FakeChatterboxTTS:
        cls.loads.append((Path(ckpt_dir), kwargs))
        return cls()

    @functools.lru_cache(maxsize=10)  # noqa: B019 - mirrors chatterbox-vllm
    def get_audio_conditionals(self, wav_fpath: str | None = None) -> tuple[dict[str, Any], Any]:
        self.conditioned.append(wav_fpath)
        if wav_fpath is None:
            level = 0.25
        else:
            wav, _sr = sf.read(wav_fpath, dtype="float32")
            level = round(float(np.mean(np.abs(wav))), 6)
        cond = np.full((COND_ROWS, DIM), level, dtype=np.float32)
        cond[-1] = 0.5 * self.t3_cond_enc.emotion_adv_fc.weight.data[:, 0]
        return {"level": level}, FakeTensor(cond)

    def update_exaggeration(self, cond_emb: FakeTensor, exaggeration: float) -> FakeTensor:
        new = cond_emb.clone()
        new.data[-1] = exaggeration * self.t3_cond_enc.emotion_adv_fc.weight.data[:, 0]
        return new

    def shutdown(self) -> None:
        self.shut_down = True
