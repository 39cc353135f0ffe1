"""`engine: torch` for the Turbo family: `TurboModel`'s parts run by the torch engine.

The torch engine's batching, failure handling and voice cache are the original's
(`TorchEngine`); what differs is what it loads and how an item becomes tokens and
audio, each as `model/turbo/reference.py` does it (exact to upstream on the CPU):

- the checkpoint is Turbo's file layout in CHATTERBOX_TURBO_MODEL_DIR;
- the text is Turbo's GPT-2 BPE, whose added tokens keep the paralinguistic tags
  (`[laugh]`, ...) one token each;
- sampling is Turbo's chain (temperature, top_k, top_p, then the repetition penalty),
  no CFG and no min_p; `cfg_weight`, `exaggeration` and `min_p` are not read (the
  request layer reports the ones a client set);
- T3's tokens lose the start/stop tokens and gain three silence tokens, then the
  meanflow S3Gen renders them in 2 steps without CFG;
- a cloned voice needs more than 5 s of audio and is loudness-normalised first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import SynthesisRequest
from chatterbox_serve.engines.torch_engine import (
    TorchEngine,
    _Loaded,
    _Model,
    _Prepared,
)
from chatterbox_serve.errors import ConfigError, InvalidRequestError
from chatterbox_serve.families import ModelFamily


class TurboTorchEngine(TorchEngine):
    """Chatterbox Turbo (GPT-2 T3, meanflow S3Gen) in plain PyTorch, on one device."""

    def __init__(self, settings: Settings) -> None:
        if settings.family is not ModelFamily.TURBO:
            raise ConfigError(f"TurboTorchEngine serves chatterbox-turbo, not {settings.family}")
        super().__init__(settings)
        self._chain: Any = None

    def info(self) -> dict[str, Any]:
        return {**super().info(), "model": "turbo"}

    def _diffusion_steps(self) -> int:
        return ModelFamily.TURBO.spec.diffusion_steps

    def _checkpoint_dir(self) -> Path:
        from chatterbox_serve.model.turbo import checkpoint

        configured = self.settings.engine.model_dir_for(ModelFamily.TURBO)
        if configured is None:
            raise ConfigError(
                "chatterbox-turbo needs CHATTERBOX_TURBO_MODEL_DIR (a local Turbo checkpoint)"
            )
        return checkpoint.check_checkpoint_dir(Path(configured).expanduser())

    def _load_model(self, directory: Path, device: str, dtype: Any) -> _Model:
        from chatterbox_serve.model import checkpoint as original

        # Upstream's S3Gen modules import torchaudio, which has no build for every torch.
        original.ensure_torchaudio()
        from chatterbox_serve.model.s3gen.runner import s3gen_policy
        from chatterbox_serve.model.turbo import checkpoint
        from chatterbox_serve.model.turbo.s3gen import MeanflowS3GenRunner
        from chatterbox_serve.model.turbo.sampling import TurboChain
        from chatterbox_serve.model.turbo.tokenizer import TurboTextTokenizer

        t3 = checkpoint.load_t3(directory, device, dtype)
        s3gen = checkpoint.load_s3gen(directory, device)
        # The meanflow runner has no compiled or graphed path yet.
        policy = dataclasses.replace(s3gen_policy(self.settings), compile="off")
        self._chain = TurboChain(t3.config.start_speech_token)
        return _Model(
            t3=t3,
            s3gen=s3gen,
            tokenizer=TurboTextTokenizer.load(directory),
            runner=MeanflowS3GenRunner(s3gen, policy),
        )

    def _prepare(self, loaded: _Loaded, index: int, request: SynthesisRequest) -> _Prepared:
        import torch

        from chatterbox_serve.model.turbo.reference import TurboSampling

        config = loaded.t3.config
        g = request.generation
        ids = loaded.tokenizer.encode(request.text, request.language)
        inputs = self._voice_inputs(loaded, request.voice)
        spec_cap = ModelFamily.TURBO.spec.max_new_tokens
        assert spec_cap is not None
        budget = self._token_budget(request, spec_cap)
        # GPT-2 has learned positions over the whole sequence: speaker, prompt, text,
        # start, then the speech.
        prompt_tokens = inputs.prompt_tokens
        prompt_len = 0 if prompt_tokens is None else int(prompt_tokens.shape[-1])
        room = config.backbone.max_positions - (1 + prompt_len + len(ids) + 1)
        if room < 1:
            raise InvalidRequestError(
                f"Text chunk of {len(ids)} tokens leaves no room in Turbo's "
                f"{config.backbone.max_positions} positions",
                param="input",
            )
        with torch.inference_mode():
            prefix = loaded.t3.conditioning(inputs.speaker_emb.to(loaded.dtype), prompt_tokens)[0]
        sampling = TurboSampling(
            temperature=g.temperature,
            top_k=g.top_k,
            top_p=g.top_p,
            repetition_penalty=g.repetition_penalty,
            max_new_tokens=min(budget, room),
        )
        return _Prepared(index, sampling.item(prefix, ids, g.seed), len(ids), inputs.s3gen_ref)

    def _voice_cloner(self) -> Callable[..., Any]:
        from chatterbox_serve.model.turbo.voice import clone_turbo_voice

        return clone_turbo_voice

    def _run_t3(self, loaded: _Loaded, items: list[Any]) -> list[Any]:
        from chatterbox_serve.model.t3.generation import generate

        return generate(loaded.t3, items, chain=self._chain)

    def _s3gen_tokens(self, result: Any) -> list[int]:
        from chatterbox_serve.model.turbo.reference import S3_SPEECH_VOCAB, s3gen_tokens

        if not result.speech_tokens(S3_SPEECH_VOCAB):
            return []
        # Start/stop dropped, upstream's silence appended.
        tokens: list[int] = s3gen_tokens(result, "cpu").tolist()
        return tokens
