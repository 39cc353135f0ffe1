"""vLLM plugin: registers our T3 architectures (both families) in every process vLLM starts.

vLLM calls `vllm.plugins.load_general_plugins()` in the API process and again in each
engine-core and worker process it spawns; that loads every entry point in the group
`vllm.general_plugins`, where `pyproject.toml` lists `register` below. Registering at
import of our engine module instead (as chatterbox-vllm does) reaches only the process
that imported it, which is why the old engine had to keep vLLM's engine core in-process.

The class is registered by its import path, so this module imports neither torch nor
the model code: vLLM imports it lazily when it builds the model.
"""

from __future__ import annotations

import importlib

from chatterbox_serve.engines.vllm.model_dir import MODEL_CLASSES


def register() -> None:
    """Register `ChatterboxT3ForCFG` and `ChatterboxTurboT3` with vLLM's registry (idempotent)."""
    registry = importlib.import_module("vllm").ModelRegistry
    supported = registry.get_supported_archs()
    for architecture, model_class in MODEL_CLASSES.items():
        if architecture not in supported:
            registry.register_model(architecture, model_class)
