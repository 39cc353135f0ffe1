"""The multilingual alignment analyzer: holds back or forces stop-of-speech from attention.

Upstream Chatterbox runs this on the multilingual checkpoint only
(`AlignmentStreamAnalyzer`). It averages the attention of three heads known to track
the text (layer 9 head 2, layer 12 head 15, layer 13 head 11) over the text columns,
follows the text position frame by frame, and per step:

- suppresses stop-of-speech while the position is more than 3 tokens from the end of
  a text longer than 5 tokens;
- forces stop-of-speech on a long tail (the last tokens attended for 5+ frames after
  completion), on attention returning to earlier text after completion, or when the
  last two tokens fed back are equal.

Upstream reads the heads of batch row 0 (the conditional row); so do we, per item.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

ALIGNED_HEADS: tuple[tuple[int, int], ...] = ((12, 15), (13, 11), (9, 2))
FORCE = 2**15


def capture_plan(num_layers: int) -> dict[int, list[int]]:
    """Layer -> heads the backbone must report; empty when the model is too shallow."""
    if max(layer for layer, _ in ALIGNED_HEADS) >= num_layers:
        return {}
    plan: dict[int, list[int]] = {}
    for layer, head in ALIGNED_HEADS:
        plan.setdefault(layer, []).append(head)
    return plan


class AlignmentAnalyzer:
    """Per-item analyzer state; `step` is called once per generated token."""

    def __init__(self, text_start: int, text_end: int, stop_token: int) -> None:
        self.text_start = text_start
        self.text_end = text_end
        self.stop_token = stop_token
        self.alignment = torch.zeros(0, text_end - text_start)
        self.frame = 0
        self.text_position = 0
        self.started = False
        self.complete = False
        self.completed_at: int | None = None
        self.recent_tokens: list[int] = []

    def step(self, logits: Tensor, attention: Tensor, last_token: int) -> Tensor:
        """Adjust one item's logits (V,).

        `attention` is the mean over the aligned heads of this step's attention rows,
        (queries, keys) over the item's own (unpadded) positions.
        """
        i, j = self.text_start, self.text_end
        chunk = attention[j:, i:j] if self.frame == 0 else attention[:, i:j]
        chunk = chunk.detach().float().cpu().clone()
        chunk[:, self.frame + 1 :] = 0
        self.alignment = torch.cat((self.alignment, chunk), dim=0)
        a = self.alignment
        frames, text_len = a.shape

        position = int(chunk[-1].argmax())
        if -4 < position - self.text_position < 7:
            self.text_position = position
        false_start = (not self.started) and bool(a[-2:, -2:].max() > 0.1 or a[:, :4].max() < 0.5)
        self.started = not false_start
        self.complete = self.complete or self.text_position >= text_len - 3
        if self.complete and self.completed_at is None:
            self.completed_at = frames
        long_tail = False
        repetition = False
        if self.complete:
            tail = a[self.completed_at :]
            long_tail = bool(tail[:, -3:].sum(dim=0).max() >= 5)
            repetition = bool(tail[:, :-5].max(dim=1).values.sum() > 5) if text_len > 5 else False
        self.recent_tokens = [*self.recent_tokens, last_token][-8:]
        token_repetition = len(self.recent_tokens) >= 3 and len(set(self.recent_tokens[-2:])) == 1

        logits = logits.clone()
        if position < text_len - 3 and text_len > 5:
            logits[self.stop_token] = -FORCE
        if long_tail or repetition or token_repetition:
            logger.debug(
                "forcing stop-of-speech: long_tail=%s repetition=%s token_repetition=%s",
                long_tail,
                repetition,
                token_repetition,
            )
            logits = torch.full_like(logits, -FORCE)
            logits[self.stop_token] = FORCE
        self.frame += 1
        return logits
