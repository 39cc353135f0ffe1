"""What `engine: auto` picks, and why: vllm, else torch, else simulated.

- `vllm` when its extra is installed (vllm and chatterbox-vllm) and a CUDA GPU is
  visible to this process;
- else `torch` when torch and chatterbox-vllm's model modules are installed and a
  checkpoint of the default family is at hand without the network:
  `CHATTERBOX_MODEL_DIR` holding the variant's files, or the pinned revision in the
  Hugging Face hub cache (Turbo: `CHATTERBOX_TURBO_MODEL_DIR` holding its files);
- else `simulated`, with a warning that names every missing piece.

The decision runs once, where the app is built; on a cluster whose head node has no
GPU, name the engine (`CHATTERBOX_ENGINE=vllm`) instead of relying on `auto`.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from chatterbox_serve.config import Settings
from chatterbox_serve.families import ModelFamily

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutoChoice:
    """The engine `auto` resolved to and the reasons each better engine was passed over."""

    engine: str
    reasons: tuple[str, ...]


def _installed(*modules: str) -> list[str]:
    """The modules of `modules` that are missing (checked without importing them)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _cuda_visible() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _checkpoint_reason(settings: Settings) -> str | None:
    """None when the default family's checkpoint is available offline, else why not."""
    from chatterbox_serve.model import checkpoint

    family = settings.engine.default_family
    if family is ModelFamily.TURBO:
        return _turbo_checkpoint_reason(settings.engine.turbo_model_dir)
    multilingual = family is ModelFamily.MULTILINGUAL
    variant = checkpoint.variant(multilingual)
    configured = settings.engine.model_dir
    if configured is not None:
        missing = checkpoint.missing_files(Path(configured).expanduser(), variant)
        if missing:
            return f"CHATTERBOX_MODEL_DIR={configured} lacks {', '.join(missing)}"
        return None
    if checkpoint.cached_checkpoint(variant) is None:
        return (
            f"no checkpoint: CHATTERBOX_MODEL_DIR is unset and {checkpoint.REPO_ID}@"
            f"{variant.revision[:12]} ({variant.name}) is not in the Hugging Face hub cache"
        )
    return None


def _turbo_checkpoint_reason(configured: str | None) -> str | None:
    from chatterbox_serve.model.turbo import checkpoint

    if configured is None:
        return "no Turbo checkpoint: CHATTERBOX_TURBO_MODEL_DIR is unset"
    missing = checkpoint.missing_files(Path(configured).expanduser())
    if missing:
        return f"CHATTERBOX_TURBO_MODEL_DIR={configured} lacks {', '.join(missing)}"
    return None


def choose_engine(settings: Settings) -> AutoChoice:
    """Decide `auto`; logs a warning when it falls back to the simulated engine."""
    reasons: list[str] = []
    missing = _installed("vllm", "chatterbox_vllm")
    if missing:
        reasons.append(f"vllm: not installed ({', '.join(missing)}; the `vllm` extra)")
    elif not _cuda_visible():
        reasons.append("vllm: installed, but no CUDA GPU is visible")
    else:
        return AutoChoice("vllm", ())
    missing = _installed("torch", "chatterbox_vllm", "safetensors")
    if missing:
        reasons.append(f"torch: not installed ({', '.join(missing)}; the `torch` extra)")
    else:
        why = _checkpoint_reason(settings)
        if why is None:
            return AutoChoice("torch", tuple(reasons))
        reasons.append(f"torch: {why}")
    logger.warning(
        "CHATTERBOX_ENGINE=auto chose the simulated engine (synthetic tones, not speech): %s",
        "; ".join(reasons),
    )
    return AutoChoice("simulated", tuple(reasons))
