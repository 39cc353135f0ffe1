"""TTS engines: the interface, the simulated engine, and selection by name."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Literal

from chatterbox_serve.config import Settings
from chatterbox_serve.engines.base import (
    SynthesisOutcome,
    SynthesisRequest,
    SynthesisResult,
    TTSEngine,
    VoicePrompt,
)

__all__ = [
    "SynthesisOutcome",
    "SynthesisRequest",
    "SynthesisResult",
    "TTSEngine",
    "VoicePrompt",
    "build_engine",
    "resolve_engine_name",
    "vllm_available",
]

ConcreteEngine = Literal["vllm", "torch", "simulated"]


def vllm_available() -> bool:
    """Whether the `vllm` extra is installed (checked without importing vLLM)."""
    return all(importlib.util.find_spec(m) is not None for m in ("vllm", "chatterbox_vllm"))


def resolve_engine_name(settings: Settings) -> ConcreteEngine:
    """Turn `auto` into a concrete engine (`engines/auto.py` has the rule)."""
    name = settings.engine.engine
    if name == "auto":
        from chatterbox_serve.engines.auto import choose_engine

        chosen = choose_engine(settings).engine
        assert chosen in ("vllm", "torch", "simulated")
        return chosen  # type: ignore[return-value]
    return name


def build_engine(settings: Settings) -> TTSEngine:
    """Construct (not start) the configured engine; vLLM is imported only when chosen."""
    if resolve_engine_name(settings) == "simulated":
        from chatterbox_serve.engines.simulated import SimulatedEngine

        return SimulatedEngine(settings.simulated)
    if resolve_engine_name(settings) == "torch":
        from chatterbox_serve.engines.torch_engine import TorchEngine

        return TorchEngine(settings)
    module = importlib.import_module("chatterbox_serve.engines.vllm_engine")
    engine: TTSEngine = module.VLLMEngine(settings)
    return engine
