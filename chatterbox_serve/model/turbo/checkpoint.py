"""Chatterbox Turbo's checkpoint files (upstream's names and keys) and their loaders.

A Turbo checkpoint directory (ResembleAI/chatterbox-turbo) holds:

- `t3_turbo_v1.safetensors`: the GPT-2 T3 (`TurboT3`);
- `s3gen_meanflow.safetensors`: S3Gen with the meanflow decoder, loaded into upstream's
  `S3Gen(meanflow=True)` (chatterbox-tts; chatterbox-vllm's S3Gen has no meanflow);
- `ve.safetensors` and `conds.pt`, as for the original model (`model.checkpoint`);
- the tokenizer: `vocab.json`, `merges.txt`, `added_tokens.json` and the Hugging Face
  tokenizer JSONs (`tokenizer_config.json`, `special_tokens_map.json`), which upstream's
  `AutoTokenizer` reads and we do not need.

Hub download is not wired yet (docs/TURBO.md): point `CHATTERBOX_MODEL_DIR` at a
directory holding these files.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatterbox_serve.errors import EngineError
from chatterbox_serve.model.checkpoint import CONDS_FILE, VOICE_ENCODER_FILE, ensure_torchaudio
from chatterbox_serve.model.turbo.tokenizer import TOKENIZER_FILES

if TYPE_CHECKING:
    import torch

    from chatterbox_serve.model.turbo.model import TurboT3

T3_FILE = "t3_turbo_v1.safetensors"
S3GEN_FILE = "s3gen_meanflow.safetensors"
TOKENIZER_JSONS = ("tokenizer_config.json", "special_tokens_map.json")
FILES = (T3_FILE, S3GEN_FILE, VOICE_ENCODER_FILE, CONDS_FILE, *TOKENIZER_FILES)


def missing_files(directory: Path) -> list[str]:
    return [name for name in FILES if not (directory / name).is_file()]


def check_checkpoint_dir(directory: Path) -> Path:
    """`directory`, checked to hold every file Turbo needs.

    Raises:
        EngineError: naming the missing directory or files.
    """
    if not directory.is_dir():
        raise EngineError(f"{directory} is not a directory (Turbo checkpoint)")
    missing = missing_files(directory)
    if missing:
        raise EngineError(f"{directory} has no {', '.join(missing)}, which Turbo needs")
    return directory


def load_t3(directory: Path, device: torch.device | str = "cpu", dtype: Any = None) -> TurboT3:
    """Turbo's T3, strictly loaded, in eval mode on `device`; the config follows the file."""
    import torch
    from safetensors.torch import load_file

    from chatterbox_serve.model.turbo.config import TurboConfig, read_backbone_file
    from chatterbox_serve.model.turbo.model import TurboT3

    state = load_file(str(directory / T3_FILE))
    config = TurboConfig.from_state_dict_shapes(
        {k: tuple(v.shape) for k, v in state.items()}, read_backbone_file(directory)
    )
    with torch.device("meta"):
        model = TurboT3(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype or torch.float32).eval()


def upstream_module(name: str) -> types.ModuleType:
    """A module of resemble-ai's chatterbox-tts, imported without its package `__init__`.

    That `__init__` imports every TTS class and their dependencies (the watermarker,
    loudness meters); the model subpackages need only torch and their own imports, and
    torchaudio at import time (`ensure_torchaudio` stands in where it is missing).
    """
    ensure_torchaudio()
    if "chatterbox" not in sys.modules:
        spec = importlib.util.find_spec("chatterbox")
        if spec is None or not spec.submodule_search_locations:
            raise EngineError("chatterbox-tts is not installed; Turbo's S3Gen comes from it")
        package = types.ModuleType("chatterbox")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["chatterbox"] = package
    return importlib.import_module(name)


def build_s3gen() -> Any:
    """Upstream's `S3Gen(meanflow=True)` with its initial (random) weights."""
    return upstream_module("chatterbox.models.s3gen").S3Gen(meanflow=True)


def load_s3gen(directory: Path, device: Any) -> Any:
    """Upstream's meanflow S3Gen with the checkpoint's weights, strictly, in eval mode."""
    from safetensors.torch import load_file

    s3gen = build_s3gen()
    s3gen.load_state_dict(load_file(str(directory / S3GEN_FILE)), strict=True)
    return s3gen.to(device).eval()
