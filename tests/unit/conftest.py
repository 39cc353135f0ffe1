"""Fixtures shared by the unit tests of the S3Gen model code."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def s3gen() -> Any:
    """chatterbox-vllm's S3Gen with seeded random weights, in eval mode, on the CPU."""
    torch = pytest.importorskip("torch")
    from chatterbox_serve.model.checkpoint import ensure_torchaudio

    ensure_torchaudio()
    from chatterbox_vllm.models.s3gen import S3Gen

    torch.manual_seed(0)
    return S3Gen().eval()
