"""Chatterbox model code shared by the engines: the text tokenizer and batched S3Gen.

Modules here that need torch or chatterbox-vllm import them at module level; the
engines import these modules lazily, so the library imports without the `vllm` extra.
"""
