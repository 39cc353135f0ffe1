"""T3's conditioning prefix: speaker embedding, perceiver over prompt speech, emotion.

The prefix is `(speaker row, perceiver rows, emotion row)`: 34 rows for a voice
with a speech prompt (1 + 32 + 1), 2 without one. Parameter names match upstream's
`cond_enc.*` state-dict keys, so the real checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from chatterbox_serve.model.t3.config import T3Config


class PerceiverBlock(nn.Module):
    """Pre-norm multi-head attention with a residual; one LayerNorm serves queries and keys."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, queries: Tensor, context: Tensor) -> Tensor:
        q = self._split(self.to_q(self.norm(queries)))
        normed = self.norm(context)
        k = self._split(self.to_k(normed))
        v = self._split(self.to_v(normed))
        out = F.scaled_dot_product_attention(q, k, v)
        b, _, n, _ = out.shape
        projected: Tensor = self.proj_out(out.transpose(1, 2).reshape(b, n, -1))
        return queries + projected

    def _split(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)


class Perceiver(nn.Module):
    """Resamples any number of prompt rows to a fixed set of learned queries.

    One attention block is applied twice: queries attend to the prompt, then the
    result attends to itself (upstream shares the block's weights between the two).
    """

    def __init__(self, dim: int, queries: int, heads: int) -> None:
        super().__init__()
        self.pre_attention_query = nn.Parameter(torch.zeros(1, queries, dim))
        self.attn = PerceiverBlock(dim, heads)

    def forward(self, prompt: Tensor) -> Tensor:
        queries = self.pre_attention_query.expand(prompt.shape[0], -1, -1)
        resampled = self.attn(queries, prompt)
        out: Tensor = self.attn(resampled, resampled)
        return out


class T3CondEncoder(nn.Module):
    """Builds the conditioning prefix from a voice and an exaggeration value.

    Interface (stable; the vLLM model uses it):
        forward(speaker_emb (B, 256), prompt_emb (B, L, D) or None, exaggeration (B,))
            -> (B, 34, D) with a prompt, (B, 2, D) without.
    `prompt_emb` is the speech embedding of the prompt tokens plus their learned speech
    positions 0..L-1 (`T3.embed_prompt_speech` builds it).
    """

    def __init__(self, config: T3Config) -> None:
        super().__init__()
        dim = config.hidden_size
        self.speaker_embed_size = config.speaker_embed_size
        self.spkr_enc = nn.Linear(config.speaker_embed_size, dim)
        self.emotion_adv_fc = nn.Linear(1, dim, bias=False)
        self.perceiver = Perceiver(dim, config.perceiver_queries, config.perceiver_heads)

    def forward(
        self, speaker_emb: Tensor, prompt_emb: Tensor | None, exaggeration: Tensor
    ) -> Tensor:
        speaker = self.spkr_enc(speaker_emb.reshape(-1, self.speaker_embed_size))[:, None]
        rows = [speaker]
        if prompt_emb is not None:
            rows.append(self.perceiver(prompt_emb))
        rows.append(self.emotion_adv_fc(exaggeration.reshape(-1, 1, 1).to(speaker.dtype)))
        return torch.cat(rows, dim=1)

    def emotion_row(self, exaggeration: Tensor) -> Tensor:
        """The last prefix row alone, (B, 1, D): swapping it changes exaggeration cheaply."""
        out: Tensor = self.emotion_adv_fc(exaggeration.reshape(-1, 1, 1))
        return out
