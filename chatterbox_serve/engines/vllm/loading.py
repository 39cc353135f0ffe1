"""Loading Chatterbox on vLLM: checkpoint files, the T3 model directory, and `from_local`.

chatterbox-vllm's `from_pretrained*` re-creates a symlink under the current working
directory and needs a `./t3-model/config.json` its package lacks (issue 4). This
module instead resolves a checkpoint directory (`CHATTERBOX_MODEL_DIR`, or the hub
at a pinned revision), writes the T3 config shipped in `chatterbox_serve/resources`
next to a link to the T3 weights in a fresh private directory, and calls
`ChatterboxTTS.from_local` with every vLLM setting explicit.

Everything up to `from_local` runs without vLLM, so it is tested on a CPU.
"""

from __future__ import annotations

import importlib
import importlib.resources
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatterbox_serve.config import Settings
from chatterbox_serve.errors import EngineError

logger = logging.getLogger(__name__)

REPO_ID = "ResembleAI/chatterbox"
T3_CONFIG_RESOURCE = "t3-model-config.json"


@dataclass(frozen=True)
class ModelVariant:
    """One Chatterbox checkpoint flavour: its T3 weights and the hub revision we trust."""

    name: str  # chatterbox-vllm's `variant` argument
    t3_weights: str
    revision: str
    files: tuple[str, ...]


# Revisions are the ones chatterbox-vllm 0.2.1 pins in `from_pretrained*`.
ENGLISH = ModelVariant(
    name="english",
    t3_weights="t3_cfg.safetensors",
    revision="1b475dffa71fb191cb6d5901215eb6f55635a9b6",
    files=("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "conds.pt"),
)
MULTILINGUAL = ModelVariant(
    name="multilingual",
    t3_weights="t3_mtl23ls_v2.safetensors",
    revision="05e904af2b5c7f8e482687a9d7336c5c824467d9",
    files=(
        "ve.safetensors",
        "t3_mtl23ls_v2.safetensors",
        "s3gen.safetensors",
        "conds.pt",
        "Cangjie5_TC.json",
    ),
)


def variant_for(settings: Settings) -> ModelVariant:
    return MULTILINGUAL if settings.engine.use_multilingual_model else ENGLISH


def _hub_download(variant: ModelVariant) -> Path:
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(
            repo_id=REPO_ID, revision=variant.revision, allow_patterns=list(variant.files)
        )
    except Exception as exc:
        raise EngineError(
            f"Could not fetch the {variant.name} Chatterbox weights from the Hugging Face hub "
            f"({REPO_ID}@{variant.revision[:12]}): {exc}. Set CHATTERBOX_MODEL_DIR to a "
            "directory holding them."
        ) from exc
    return Path(path)


def resolve_checkpoint(
    settings: Settings, download: Callable[[ModelVariant], Path] = _hub_download
) -> Path:
    """The checkpoint directory, checked to hold every file the variant needs.

    Raises:
        EngineError: naming the missing directory or file and the setting behind it.
    """
    variant = variant_for(settings)
    configured = settings.engine.model_dir
    if configured is None:
        directory = download(variant)
        source = f"the hub download at {directory}"
    else:
        directory = Path(configured).expanduser().resolve()
        source = f"CHATTERBOX_MODEL_DIR={configured}"
        if not directory.is_dir():
            raise EngineError(f"{source} is not a directory")
    for name in variant.files:
        if not (directory / name).is_file():
            raise EngineError(
                f"{source} has no {name}, which the {variant.name} model needs "
                f"(USE_MULTILINGUAL_MODEL={str(variant is MULTILINGUAL).lower()})"
            )
    return directory


def build_model_dir(t3_weights: Path) -> Path:
    """A fresh private directory vLLM loads T3 from: our config.json and a weights link.

    `mkdtemp` makes a new directory per process, so replicas never race on it and
    the working directory does not matter; the caller deletes it at shutdown.
    """
    model_dir = Path(tempfile.mkdtemp(prefix="chatterbox-serve-t3-")).resolve()
    config = importlib.resources.files("chatterbox_serve") / "resources" / T3_CONFIG_RESOURCE
    (model_dir / "config.json").write_bytes(config.read_bytes())
    (model_dir / "model.safetensors").symlink_to(t3_weights.resolve())
    return model_dir


def from_local_kwargs(settings: Settings, model_dir: Path) -> dict[str, Any]:
    """Arguments for `ChatterboxTTS.from_local` after the checkpoint path.

    `model` and `gpu_memory_utilization` override the values chatterbox-vllm would
    pick (a cwd-relative path, and a heuristic that gives vLLM about 2% of a large
    GPU); `max_num_seqs` caps vLLM's batch at the Serve batch size.
    """
    e = settings.engine
    return {
        "target_device": "cuda",
        "variant": variant_for(settings).name,
        "max_model_len": e.max_model_len,
        "max_batch_size": e.max_batch_size,
        "compile": e.compile,
        "s3gen_use_fp16": e.s3gen_fp16,
        "model": str(model_dir),
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "max_num_seqs": e.max_batch_size,
    }


@dataclass(frozen=True)
class LoadedModel:
    """The loaded third-party objects the engine drives, plus what it must clean up."""

    tts: Any  # chatterbox_vllm.tts.ChatterboxTTS
    sampling_params: Callable[..., Any]  # vllm.SamplingParams
    torch: Any  # the torch module, passed in so tests can stand in for it
    speech_token_offset: int  # chatterbox-vllm shifts speech ids by this inside vLLM
    checkpoint_dir: Path
    model_dir: Path | None = None

    def close(self) -> None:
        self.tts.shutdown()
        if self.model_dir is not None:
            shutil.rmtree(self.model_dir, ignore_errors=True)


def load_model(settings: Settings) -> LoadedModel:
    """Resolve the checkpoint, build the model directory and start T3 on vLLM plus S3Gen."""
    variant = variant_for(settings)
    checkpoint = resolve_checkpoint(settings)
    model_dir = build_model_dir(checkpoint / variant.t3_weights)
    # T3 reads CFG from the environment when vLLM constructs it; it is engine-global.
    os.environ["CHATTERBOX_CFG_SCALE"] = str(settings.engine.cfg_scale)
    # Keep vLLM's engine core in this process: inside a Ray actor vLLM would start it
    # with `spawn`, and a spawned process lacks the ChatterboxT3 model class that
    # chatterbox-vllm registers with vLLM only when it is imported.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        tts_module = importlib.import_module("chatterbox_vllm.tts")
        t3_module = importlib.import_module("chatterbox_vllm.models.t3")
        vllm = importlib.import_module("vllm")
        torch = importlib.import_module("torch")
        tts = tts_module.ChatterboxTTS.from_local(
            checkpoint, **from_local_kwargs(settings, model_dir)
        )
    except BaseException:
        shutil.rmtree(model_dir, ignore_errors=True)
        raise
    logger.info("Loaded Chatterbox %s from %s (T3 dir %s)", variant.name, checkpoint, model_dir)
    return LoadedModel(
        tts=tts,
        sampling_params=vllm.SamplingParams,
        torch=torch,
        speech_token_offset=int(t3_module.SPEECH_TOKEN_OFFSET),
        checkpoint_dir=checkpoint,
        model_dir=model_dir,
    )
