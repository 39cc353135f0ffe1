"""Write a random-weight Chatterbox checkpoint in the real file layout, keys and shapes.

    python -m tools.write_checkpoint DIR [--multilingual | --turbo] [--tiny] [--seed N]

Writes `ve.safetensors`, the T3 file (`t3_cfg.safetensors` or
`t3_mtl23ls_v2.safetensors`), `s3gen.safetensors`, `conds.pt` (a random built-in
voice) and, for the multilingual variant, a small `Cangjie5_TC.json`. The engines and
the GPU probes load it exactly as they load the real weights; the speech is noise.

`--tiny` shrinks only T3's backbone (2 layers, or 14 for multilingual so the
alignment analyzer's heads exist; 4-wide heads; MLP width 64) and its position tables,
and records the backbone in `t3_backbone.json`. Embedding widths stay 1024 because
upstream's perceiver is fixed at that width. S3Gen's architecture is fixed, so it is
written at full size, in float16 with `--tiny` to halve the file.

`--turbo` writes Chatterbox Turbo's layout instead (`chatterbox_serve.model.turbo.
checkpoint`): `t3_turbo_v1.safetensors` (GPT-2 medium, or with `--tiny` 2 layers of
width 64 and a text table the size of the tokenizer), `s3gen_meanflow.safetensors`
(upstream's `S3Gen(meanflow=True)`), `ve.safetensors`, `conds.pt` (375 prompt tokens)
and a small byte-level BPE trained here with the `tokenizers` library, saved as
GPT-2's files (`vocab.json`, `merges.txt`, `added_tokens.json` with the paralinguistic
tags, `tokenizer_config.json`, `special_tokens_map.json`) so that upstream's
`AutoTokenizer` reads it too. Every T3 weight is random, biases and layer norms
included; the stop-of-speech logit's bias is raised so random speech ends after
tens of tokens instead of running to the cap.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

TINY_BACKBONE = {"intermediate_size": 64, "num_heads": 16, "num_kv_heads": 16, "head_dim": 4}


def tiny_config(multilingual: bool) -> Any:
    from chatterbox_serve.model.t3.config import LlamaConfig, T3Config

    base = T3Config.multilingual() if multilingual else T3Config.english()
    backbone = LlamaConfig(num_layers=14 if multilingual else 2, **TINY_BACKBONE)
    return dataclasses.replace(base, max_text_tokens=254, max_speech_tokens=508, backbone=backbone)


def t3_state_dict(config: Any, seed: int) -> dict[str, Any]:
    """Random T3 weights under upstream's keys: normal(0, 0.02), norms at one."""
    import torch

    from chatterbox_serve.model.t3.model import T3

    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = T3(config)
    state: dict[str, Any] = {}
    for name, param in model.state_dict().items():
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            value = torch.ones(param.shape)
        elif name.endswith(".bias"):
            value = torch.zeros(param.shape)
        elif name == "cond_enc.perceiver.pre_attention_query":
            bound = math.sqrt(3.0) * math.sqrt(2.0 / (2 * param.shape[1]))
            value = (torch.rand(param.shape, generator=gen) * 2 - 1) * bound
        else:
            value = torch.randn(param.shape, generator=gen) * 0.02
        state[name] = value.contiguous()
    return state


def builtin_voice(seed: int, prompt_len: int = 150) -> dict[str, Any]:
    """A `conds.pt` payload shaped as upstream's: T3 inputs and an S3Gen reference."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    prompt = torch.randint(0, 6561, (1, prompt_len), generator=gen)
    ref_tokens = 100
    return {
        "t3": {
            "speaker_emb": torch.randn(1, 256, generator=gen) * 0.1,
            "clap_emb": None,
            "cond_prompt_speech_tokens": prompt,
            "cond_prompt_speech_emb": None,
            "emotion_adv": 0.5 * torch.ones(1, 1, 1),
        },
        "gen": {
            "prompt_token": torch.randint(0, 6561, (1, ref_tokens), generator=gen),
            "prompt_token_len": torch.tensor([ref_tokens]),
            "prompt_feat": torch.randn(1, 2 * ref_tokens, 80, generator=gen),
            "prompt_feat_len": None,
            "embedding": torch.randn(1, 192, generator=gen),
        },
    }


def write_checkpoint(
    directory: Path,
    *,
    multilingual: bool = False,
    tiny: bool = False,
    seed: int = 0,
    with_s3gen: bool = True,
) -> Path:
    """Write every checkpoint file into `directory` (created) and return it."""
    import torch
    from safetensors.torch import save_file

    from chatterbox_serve.model import checkpoint
    from chatterbox_serve.model.t3.config import T3Config, write_backbone_file

    directory.mkdir(parents=True, exist_ok=True)
    variant = checkpoint.variant(multilingual)
    if tiny:
        config = tiny_config(multilingual)
        write_backbone_file(directory, config.backbone)
    else:
        config = T3Config.multilingual() if multilingual else T3Config.english()
    save_file(t3_state_dict(config, seed), str(directory / variant.t3_file))
    torch.save(builtin_voice(seed), directory / checkpoint.CONDS_FILE)
    if multilingual:
        table = ["你\tonf", "好\tvnd", "中\tl", "文\tyk"]
        (directory / checkpoint.CANGJIE_FILE).write_text(json.dumps(table, ensure_ascii=False))
    torch.manual_seed(seed)  # the modules below initialise from the global generator
    from chatterbox_vllm.models.voice_encoder import VoiceEncoder

    save_file(
        _contiguous(VoiceEncoder().state_dict()), str(directory / checkpoint.VOICE_ENCODER_FILE)
    )
    if with_s3gen:
        checkpoint.ensure_torchaudio()
        from chatterbox_vllm.models.s3gen import S3Gen

        state = S3Gen().state_dict()
        if tiny:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        save_file(_contiguous(state), str(directory / checkpoint.S3GEN_FILE))
    return directory


TURBO_TINY_BACKBONE = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "max_positions": 2048}
# Raises p(stop-of-speech) to a few percent per step under random weights.
TURBO_STOP_BIAS = 2.5
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Hello there, how are you today?",
    "She sells sea shells by the sea shore; the shells she sells are surely seashells.",
    "I can't believe it's already December! Well, that was a long year, wasn't it?",
    "Numbers like 1, 2, 3 and 42 appear too, as do quotes: \"yes\" and 'no'.",
)


def write_turbo_tokenizer(directory: Path, vocab_size: int = 400) -> int:
    """Train a byte-level BPE on a few sentences and save it as GPT-2's files; its size."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from chatterbox_serve.model.turbo import tokenizer as turbo_tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    end = turbo_tokenizer.END_OF_TEXT
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[end],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    bpe.model.save(str(directory))  # vocab.json, merges.txt
    size: int = bpe.get_vocab_size()
    tags = turbo_tokenizer.PARALINGUISTIC_TAGS
    added = {tag: size + i for i, tag in enumerate(tags)}
    (directory / turbo_tokenizer.ADDED_TOKENS_FILE).write_text(json.dumps(added, indent=2))
    specials = {"bos_token": end, "eos_token": end, "unk_token": end}
    (directory / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "model_max_length": 8196,
        **specials,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return size + len(tags)


def turbo_t3_state_dict(config: Any, seed: int) -> dict[str, Any]:
    """Random Turbo T3 weights under upstream's keys, every bias and norm random too."""
    import torch

    from chatterbox_serve.model.turbo.model import TurboT3

    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = TurboT3(config)
    state: dict[str, Any] = {}
    for name, param in model.state_dict().items():
        value = torch.randn(param.shape, generator=gen) * 0.02
        if ".ln_" in name and name.endswith(".weight"):
            value = value + 1.0
        state[name] = value.contiguous()
    state["speech_head.bias"][config.stop_speech_token] = TURBO_STOP_BIAS
    return state


def meanflow_s3gen_state_dict(seed: int) -> dict[str, Any]:
    """Upstream's `S3Gen(meanflow=True)` at its random initialisation, seeded.

    Its time mixer starts as [I | 0], which ignores the step's end time `r`; random
    weights go into the `r` half, so that `r` counts as in a trained decoder.
    """
    import torch

    from chatterbox_serve.model.turbo.checkpoint import build_s3gen

    torch.manual_seed(seed)
    state: dict[str, Any] = build_s3gen().state_dict()
    mixer = state["flow.decoder.estimator.time_embed_mixer.weight"]
    dims = mixer.shape[0]
    mixer[:, dims:] = torch.randn(dims, dims) * 0.02
    return state


def write_turbo_checkpoint(
    directory: Path, *, tiny: bool = False, seed: int = 0, with_s3gen: bool = True
) -> Path:
    """Write every Turbo checkpoint file into `directory` (created) and return it."""
    import torch
    from safetensors.torch import save_file

    from chatterbox_serve.model import checkpoint
    from chatterbox_serve.model.t3.config import write_backbone_file
    from chatterbox_serve.model.turbo import checkpoint as turbo
    from chatterbox_serve.model.turbo.config import GPT2Config, TurboConfig

    directory.mkdir(parents=True, exist_ok=True)
    text_vocab = write_turbo_tokenizer(directory)
    config = TurboConfig()
    if tiny:
        backbone = GPT2Config(**TURBO_TINY_BACKBONE)
        write_backbone_file(directory, backbone)
        config = dataclasses.replace(config, text_vocab_size=text_vocab, backbone=backbone)
    save_file(turbo_t3_state_dict(config, seed), str(directory / turbo.T3_FILE))
    torch.save(
        builtin_voice(seed, prompt_len=config.speech_cond_prompt_len),
        directory / checkpoint.CONDS_FILE,
    )
    torch.manual_seed(seed)
    from chatterbox_vllm.models.voice_encoder import VoiceEncoder

    save_file(
        _contiguous(VoiceEncoder().state_dict()), str(directory / checkpoint.VOICE_ENCODER_FILE)
    )
    if with_s3gen:
        state = meanflow_s3gen_state_dict(seed)
        if tiny:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        save_file(_contiguous(state), str(directory / turbo.S3GEN_FILE))
    return directory


def _contiguous(state: dict[str, Any]) -> dict[str, Any]:
    # safetensors refuses shared or strided storage.
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    family = parser.add_mutually_exclusive_group()
    family.add_argument("--multilingual", action="store_true", help="multilingual v2 layout")
    family.add_argument("--turbo", action="store_true", help="Chatterbox Turbo layout")
    parser.add_argument("--tiny", action="store_true", help="few-layer T3 for fast CI runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.turbo:
        path = write_turbo_checkpoint(args.directory, tiny=args.tiny, seed=args.seed)
    else:
        path = write_checkpoint(
            args.directory, multilingual=args.multilingual, tiny=args.tiny, seed=args.seed
        )
    print(path)


if __name__ == "__main__":
    main()
