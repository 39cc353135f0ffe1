"""TTS engines: the interface, the registry of engines by name, and construction.

Adding an engine takes one module with a `TTSEngine` subclass and one line in
`ENGINES` (kept in `config/engine.py`, where CHATTERBOX_ENGINE is validated). The class is
imported only when chosen, so an engine whose module needs
torch or vLLM costs nothing on a machine that runs another engine. An engine is
constructed with `cls.from_settings(settings)` when the class defines it, else
with `cls(settings)`; `needs_gpu` on the class decides whether its model replica
asks Ray for a GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

from chatterbox_serve.config import AUTO, ENGINES, Settings, engine_names
from chatterbox_serve.engines.base import (
    SynthesisOutcome,
    SynthesisRequest,
    SynthesisResult,
    TTSEngine,
    VoicePrompt,
)
from chatterbox_serve.errors import ConfigError

__all__ = [
    "AUTO",
    "ENGINES",
    "SynthesisOutcome",
    "SynthesisRequest",
    "SynthesisResult",
    "TTSEngine",
    "VoicePrompt",
    "build_engine",
    "engine_class",
    "resolve_engine_name",
    "vllm_available",
]


def vllm_available() -> bool:
    """Whether the `vllm` extra is installed (checked without importing vLLM)."""
    return all(importlib.util.find_spec(m) is not None for m in ("vllm", "chatterbox_vllm"))


def resolve_engine_name(settings: Settings) -> str:
    """The registry name the settings choose, with `auto` decided by what is installed."""
    name = settings.engine.engine
    if name == AUTO:
        from chatterbox_serve.engines.auto import choose_engine

        return choose_engine(settings).engine
    if name not in ENGINES:
        raise ConfigError(f"CHATTERBOX_ENGINE={name!r}; allowed: {', '.join(engine_names())}")
    return name


def engine_class(path: str) -> type[TTSEngine]:
    """Import the `module:Class` at `path`, or a registry name's, and check it is an engine."""
    module_name, _, attr = ENGINES.get(path, path).partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, TTSEngine)):
        raise ConfigError(f"engine {path!r} is not a TTSEngine subclass")
    return cls


def build_engine(settings: Settings, engine: str | None = None) -> TTSEngine:
    """Construct (not start) an engine: `engine` by name or import path, else the settings'.

    The builder passes the path it resolved once, so a model replica never decides
    `auto` again on a node whose installed packages differ.
    """
    cls = engine_class(engine or resolve_engine_name(settings))
    factory: Callable[[Settings], object] = getattr(cls, "from_settings", cls)
    built = factory(settings)
    if not isinstance(built, TTSEngine):
        raise ConfigError(f"engine {cls.__name__} built a {type(built).__name__}")
    return built
