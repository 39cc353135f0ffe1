"""The reference side of the Turbo vLLM proof (tools/gpu/turbo_reference.py) on the CPU.

What the GPU proof holds vLLM against must itself be right: our prompt rows and logits
against upstream chatterbox-tts 0.1.7's own T3 (tiny Turbo checkpoint), and the two
sampling orders equal where the order cannot matter and apart where it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from chatterbox_serve.model.turbo import checkpoint
from tools.gpu.turbo_reference import (
    Chain,
    reference_logits,
    total_variation,
    upstream_logits,
    upstream_order,
    upstream_rows,
    upstream_turbo_t3,
    vllm_order,
)

START = 6561
TOKENS = [17, 2, 6000, 4299, 17, 6560, 0, 3, 3, 812, 45, 1000, 17, 17]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    from tools.write_checkpoint import write_turbo_checkpoint

    directory = write_turbo_checkpoint(
        tmp_path_factory.mktemp("turbo"), tiny=True, seed=5, with_s3gen=False
    )
    ours = checkpoint.load_t3(directory)
    return ours, upstream_turbo_t3(ours, directory), directory


def _rows(models: tuple[Any, Any, Path]) -> tuple[torch.Tensor, torch.Tensor]:
    ours, up, _ = models
    gen = torch.Generator().manual_seed(2)
    speaker = torch.randn(1, 256, generator=gen)
    prompt = torch.randint(0, 6561, (1, 375), generator=gen)
    ids = [5, 80, 33, 2, 199]
    with torch.inference_mode():
        rows = ours.prefill_embeds(ours.conditioning(speaker, prompt)[0], ids, uncond=False)
    return rows, upstream_rows(up, speaker, prompt, ids)


def test_prompt_rows_and_logits_are_upstreams(models: tuple[Any, Any, Path]) -> None:
    ours, up, _ = models
    rows, theirs = _rows(models)
    assert rows.shape == theirs.shape == (1 + 375 + 5 + 1, 64)
    assert float((rows - theirs).abs().max()) < 1e-6
    gap = reference_logits(ours, rows, TOKENS) - upstream_logits(up, theirs, TOKENS)
    assert float(gap.abs().max()) < 1e-5


def test_sampling_orders_agree_without_penalty_and_part_with_it(
    models: tuple[Any, Any, Path],
) -> None:
    ours, _, _ = models
    rows, _ = _rows(models)
    logits = reference_logits(ours, rows, TOKENS) * 20  # sharper than random weights give
    plain = Chain(repetition_penalty=1.0)
    same = total_variation(
        upstream_order(logits, TOKENS, plain, START), vllm_order(logits, TOKENS, plain, START)
    )
    assert float(same.max()) < 1e-6
    # Where a spoken token decides the top_k edge, the orders part: upstream keeps the
    # spoken token (filtered before the penalty), vLLM the runner-up.
    edge = torch.zeros(2, 6563)
    edge[:, 100], edge[:, 200] = 10.0, 8.0
    spoken = [100, 100]
    chain = Chain(top_k=1, repetition_penalty=2.0)
    up, ours_order = (
        upstream_order(edge, spoken, chain, START),
        vllm_order(edge, spoken, chain, START),
    )
    assert torch.equal(
        total_variation(up, ours_order), torch.tensor([0.0, 1.0], dtype=torch.float64)
    )
    assert float(up[1, 100]) == 0.0 and float(ours_order[1, 200]) == 0.0
