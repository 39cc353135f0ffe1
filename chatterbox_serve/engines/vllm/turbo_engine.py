"""`engine: vllm` for the Turbo family: Turbo's T3 on vLLM, its meanflow S3Gen batched.

`TurboVLLMEngine` is the vLLM engine (`VLLMEngine`: continuous batching, the S3Gen
stage, streaming, failures) over the Turbo torch engine's parts (`TurboTorchEngine`:
checkpoint, tokenizer with the tags, voices, Turbo's sampling values, silence tokens,
2 meanflow steps). What is Turbo's own here:

- T3 is `ChatterboxTurboT3` (`turbo_vllm.py`), one vLLM sequence per item: Turbo has
  no CFG, so its prompt is the reference's prefill rows alone (`VLLMEngine._t3_request`
  reads the family's `cfg`);
- streamed renders run the meanflow flow with noise fixed per stream
  (`StreamingMeanflowRunner`), so a growing prefix keeps the frames already sent.
"""

from __future__ import annotations

from typing import Any

from chatterbox_serve.engines.torch_engine import _Loaded
from chatterbox_serve.engines.torch_turbo import TurboTorchEngine
from chatterbox_serve.engines.vllm.engine import VLLMEngine


class TurboVLLMEngine(VLLMEngine, TurboTorchEngine):
    """Chatterbox Turbo with T3 on vLLM 0.26 and the batched meanflow S3Gen."""

    def info(self) -> dict[str, Any]:
        return {**super().info(), "t3": "vLLM (ChatterboxTurboT3, no CFG)"}

    def _streamer_for(self, loaded: _Loaded) -> Any:
        if self._streamer is None:
            from chatterbox_serve.model.s3gen.streaming import StreamingS3Gen
            from chatterbox_serve.model.turbo.s3gen import StreamingMeanflowRunner

            policy = loaded.runner.policy
            self._streamer = StreamingS3Gen(
                loaded.s3gen, policy, runner=StreamingMeanflowRunner(loaded.s3gen, policy)
            )
        return self._streamer
