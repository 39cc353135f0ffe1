"""Our per-row sampling chain equals Hugging Face's logits processors, which upstream uses.

Upstream `T3.inference` runs one item with transformers' `RepetitionPenaltyLogitsProcessor`,
temperature division, `MinPLogitsWarper` and `TopPLogitsWarper`. Ours takes one value
per row; each row must come out as the processors leave it for that row's values.
"""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TopPLogitsWarper,
)

from chatterbox_serve.model.t3.sampling import combine_cfg, process_logits, sample

ROWS = [
    # (repetition_penalty, temperature, min_p, top_p)
    (1.2, 0.8, 0.05, 1.0),
    (2.0, 1.3, 0.0, 0.9),
    (1.0, 0.5, 0.2, 0.5),
    (1.5, 1.0, 1.0, 0.95),
]


def _hf(logits: torch.Tensor, history: torch.Tensor, values: tuple[float, ...]) -> torch.Tensor:
    penalty, temperature, min_p, top_p = values
    out = RepetitionPenaltyLogitsProcessor(penalty=penalty)(history, logits)
    out = out / temperature
    out = MinPLogitsWarper(min_p=min_p)(history, out)
    return TopPLogitsWarper(top_p=top_p)(history, out)


def test_each_row_equals_the_transformers_chain() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(len(ROWS), 8194, generator=gen) * 4
    histories = [torch.randint(0, 8194, (1, 30), generator=gen) for _ in ROWS]
    seen = torch.zeros(len(ROWS), 8194, dtype=torch.bool)
    for row, history in enumerate(histories):
        seen[row, history[0]] = True
    ours = process_logits(
        logits.clone(),
        seen,
        repetition_penalty=torch.tensor([r[0] for r in ROWS]),
        temperature=torch.tensor([r[1] for r in ROWS]),
        min_p=torch.tensor([r[2] for r in ROWS]),
        top_p=torch.tensor([r[3] for r in ROWS]),
    )
    for row, values in enumerate(ROWS):
        theirs = _hf(logits[row : row + 1].clone(), histories[row], values)[0]
        assert torch.equal(torch.isinf(ours[row]), torch.isinf(theirs)), values
        kept = ~torch.isinf(theirs)
        torch.testing.assert_close(ours[row][kept], theirs[kept])
    # The filters did something, or this test could not fail.
    assert int(torch.isinf(ours).sum()) > 8194


def test_cfg_moves_away_from_the_unconditional_logits() -> None:
    cond = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    uncond = torch.tensor([[0.0, 4.0], [0.0, 4.0]])
    out = combine_cfg(cond, uncond, torch.tensor([0.0, 0.5]))
    assert out.tolist() == [[1.0, 2.0], [1.5, 1.0]]


def test_zero_temperature_is_greedy_and_sampling_follows_the_generator() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0], [0.0, 0.0, 0.0]])
    greedy = sample(logits, torch.tensor([0.0, 0.0]), [None, None])
    assert greedy.tolist() == [1, 0]
    draws = [
        sample(logits, torch.tensor([1.0, 1.0]), [torch.Generator().manual_seed(s)] * 2).tolist()
        for s in (1, 1, 2, 3, 4)
    ]
    assert draws[0] == draws[1]
    assert len({tuple(d) for d in draws}) > 1


@pytest.mark.parametrize("min_p", [0.0, 0.5, 1.0])
def test_min_p_always_keeps_the_top_token(min_p: float) -> None:
    logits = torch.tensor([[5.0, 5.0 - 1e-3, -2.0]])
    out = process_logits(
        logits,
        torch.zeros(1, 3, dtype=torch.bool),
        repetition_penalty=torch.tensor([1.0]),
        temperature=torch.tensor([1.0]),
        min_p=torch.tensor([min_p]),
        top_p=torch.tensor([1.0]),
    )
    assert torch.isfinite(out[0, 0])
