"""Chatterbox model code shared by the engines: tokenizer, batched S3Gen, T3, checkpoints.

`t3/` is the reference T3 in PyTorch, `checkpoint.py` names and loads the checkpoint
files, `voice.py` turns reference audio into model inputs, and `turbo/` is Chatterbox
Turbo (GPT-2 T3, meanflow S3Gen) built on them. Modules here that need torch
or chatterbox-vllm import them at module level or in their functions; the engines
import these modules lazily, so the library imports without torch or the `vllm` extra.
"""
