"""Chatterbox checkpoint files: their names, where they come from, and loading them.

A checkpoint directory holds upstream's files under upstream's names and keys:

- `ve.safetensors`: the voice encoder (speaker embedding, 256 values);
- `t3_cfg.safetensors` (English) or `t3_mtl23ls_v2.safetensors` (multilingual v2): T3;
- `s3gen.safetensors`: S3Gen (flow decoder, vocoder, and the S3 speech tokenizer);
- `conds.pt`: the built-in voice (T3 conditioning inputs and the S3Gen reference);
- `Cangjie5_TC.json` (multilingual): the Chinese character table.

The text vocabularies ship inside chatterbox-vllm (`model/tokenizer.py`).

The directory is `CHATTERBOX_MODEL_DIR`, else the Hugging Face hub at a pinned
revision. `cached_checkpoint` looks in the hub cache without the network (what the
`auto` engine rule asks); `resolve_checkpoint_dir` may download, and any failure
(offline, no such revision) becomes an `EngineError` naming `CHATTERBOX_MODEL_DIR`.
This module imports without torch; the `load_*` functions import it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatterbox_serve.errors import EngineError

if TYPE_CHECKING:
    import torch

    from chatterbox_serve.model.t3.model import T3

logger = logging.getLogger(__name__)

REPO_ID = "ResembleAI/chatterbox"
VOICE_ENCODER_FILE = "ve.safetensors"
S3GEN_FILE = "s3gen.safetensors"
CONDS_FILE = "conds.pt"
CANGJIE_FILE = "Cangjie5_TC.json"


@dataclass(frozen=True)
class CheckpointVariant:
    """One Chatterbox checkpoint flavour: its T3 file and the hub revision we trust."""

    name: str
    t3_file: str
    revision: str
    files: tuple[str, ...]

    @property
    def multilingual(self) -> bool:
        return self.name == "multilingual"


# The revisions chatterbox-vllm 0.2.1 pins.
ENGLISH = CheckpointVariant(
    name="english",
    t3_file="t3_cfg.safetensors",
    revision="1b475dffa71fb191cb6d5901215eb6f55635a9b6",
    files=(VOICE_ENCODER_FILE, "t3_cfg.safetensors", S3GEN_FILE, CONDS_FILE),
)
MULTILINGUAL = CheckpointVariant(
    name="multilingual",
    t3_file="t3_mtl23ls_v2.safetensors",
    revision="05e904af2b5c7f8e482687a9d7336c5c824467d9",
    files=(VOICE_ENCODER_FILE, "t3_mtl23ls_v2.safetensors", S3GEN_FILE, CONDS_FILE, CANGJIE_FILE),
)


def variant(multilingual: bool) -> CheckpointVariant:
    return MULTILINGUAL if multilingual else ENGLISH


def missing_files(directory: Path, checkpoint: CheckpointVariant) -> list[str]:
    return [name for name in checkpoint.files if not (directory / name).is_file()]


def cached_checkpoint(checkpoint: CheckpointVariant) -> Path | None:
    """The pinned revision's directory in the local hub cache, or None; never uses the network."""
    try:
        from huggingface_hub import snapshot_download

        path = Path(
            snapshot_download(
                repo_id=REPO_ID,
                revision=checkpoint.revision,
                allow_patterns=list(checkpoint.files),
                local_files_only=True,
            )
        )
    except Exception:
        return None
    return None if missing_files(path, checkpoint) else path


def _hub_download(checkpoint: CheckpointVariant) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id=REPO_ID,
                revision=checkpoint.revision,
                allow_patterns=list(checkpoint.files),
                etag_timeout=10,
            )
        )
    except Exception as exc:
        raise EngineError(
            f"Could not fetch the {checkpoint.name} Chatterbox weights from the Hugging Face hub "
            f"({REPO_ID}@{checkpoint.revision[:12]}): {type(exc).__name__}: {exc}. Set "
            "CHATTERBOX_MODEL_DIR to a directory holding them."
        ) from exc


def resolve_checkpoint_dir(
    model_dir: str | None,
    multilingual: bool,
    download: Callable[[CheckpointVariant], Path] = _hub_download,
) -> Path:
    """The checkpoint directory, checked to hold every file the variant needs.

    Raises:
        EngineError: naming the missing directory or file and the setting behind it.
    """
    checkpoint = variant(multilingual)
    if model_dir is None:
        directory = cached_checkpoint(checkpoint) or download(checkpoint)
        source = f"the hub checkout at {directory}"
    else:
        directory = Path(model_dir).expanduser().resolve()
        source = f"CHATTERBOX_MODEL_DIR={model_dir}"
        if not directory.is_dir():
            raise EngineError(f"{source} is not a directory")
    missing = missing_files(directory, checkpoint)
    if missing:
        raise EngineError(
            f"{source} has no {', '.join(missing)}, which the {checkpoint.name} model needs "
            f"(USE_MULTILINGUAL_MODEL={str(multilingual).lower()})"
        )
    return directory


def load_t3(
    directory: Path, multilingual: bool, device: torch.device | str = "cpu", dtype: Any = None
) -> T3:
    """The T3 of a checkpoint directory, strictly loaded, in eval mode on `device`.

    The config follows the file's shapes (`T3Config.from_state_dict_shapes`), so a
    tiny test checkpoint loads through the same path as the real one.
    """
    import torch
    from safetensors.torch import load_file

    from chatterbox_serve.model.t3.config import T3Config, read_backbone_file
    from chatterbox_serve.model.t3.model import T3

    path = directory / variant(multilingual).t3_file
    state = load_file(str(path))
    config = T3Config.from_state_dict_shapes(
        {k: tuple(v.shape) for k, v in state.items()}, read_backbone_file(directory)
    )
    if config.is_multilingual != multilingual:
        raise EngineError(
            f"{path.name} has a {config.text_vocab_size}-token text vocabulary, which is not "
            f"the {variant(multilingual).name} model's"
        )
    with torch.device("meta"):
        model = T3(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype or torch.float32).eval()


class _TorchaudioMissing(EngineError, AttributeError):
    """A use of the torchaudio stand-in.

    Also an AttributeError, so that probes such as `getattr(module, name, default)` read
    the attribute as absent: torch.compile's graph hashing walks module attributes and
    failed on the stand-in.
    """


def ensure_torchaudio() -> None:
    """Let chatterbox-vllm's S3Gen import where torchaudio is missing (no build for torch 2.13).

    S3Gen's inference never calls torchaudio; only reference embedding (resampling and
    Kaldi filter banks, for cloning a new voice) does. A placeholder module is put in
    its place whose every use raises an error that says so; the built-in voice works.
    """
    try:
        importlib.import_module("torchaudio")
        return
    except (ImportError, OSError):
        pass
    logger.warning("torchaudio is not installed: only the built-in voice can be used")

    class _Missing(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            raise _TorchaudioMissing(
                "Cloning a voice on this engine needs torchaudio, which is not installed "
                f"(torchaudio.{name} was called); use the built-in voice or install torchaudio"
            )

    names = ["torchaudio", "torchaudio.transforms", "torchaudio.compliance"]
    names.append("torchaudio.compliance.kaldi")
    modules = {name: _Missing(name) for name in names}
    for name, module in modules.items():
        # `importlib.util.find_spec` (transformers probes with it) needs a spec.
        module.__dict__["__spec__"] = importlib.machinery.ModuleSpec(name, None)
    # `import torchaudio.compliance.kaldi as K` looks the children up as attributes.
    modules["torchaudio"].__dict__["transforms"] = modules["torchaudio.transforms"]
    modules["torchaudio"].__dict__["compliance"] = modules["torchaudio.compliance"]
    modules["torchaudio.compliance"].__dict__["kaldi"] = modules["torchaudio.compliance.kaldi"]
    sys.modules.update(modules)


def load_voice_encoder(directory: Path, device: Any) -> Any:
    """chatterbox-vllm's `VoiceEncoder` with the checkpoint's weights, in eval mode."""
    from safetensors.torch import load_file

    module = importlib.import_module("chatterbox_vllm.models.voice_encoder")
    encoder = module.VoiceEncoder()
    encoder.load_state_dict(load_file(str(directory / VOICE_ENCODER_FILE)))
    return encoder.to(device).eval()


def load_s3gen(directory: Path, device: Any) -> Any:
    """chatterbox-vllm's `S3Gen` with the checkpoint's weights, in eval mode.

    Loaded non-strictly as upstream does: the file also carries weights S3Gen's
    inference does not use.
    """
    from safetensors.torch import load_file

    ensure_torchaudio()
    module = importlib.import_module("chatterbox_vllm.models.s3gen")
    s3gen = module.S3Gen()
    s3gen.load_state_dict(load_file(str(directory / S3GEN_FILE)), strict=False)
    return s3gen.to(device).eval()


def load_builtin_voice(directory: Path) -> dict[str, Any]:
    """`conds.pt` as a plain dict: {"t3": {speaker_emb, ...}, "gen": {prompt_token, ...}}."""
    import torch

    data: dict[str, Any] = torch.load(directory / CONDS_FILE, map_location="cpu", weights_only=True)
    if "t3" not in data or "gen" not in data:
        raise EngineError(f"{directory / CONDS_FILE} has no 't3' and 'gen' sections")
    return data
