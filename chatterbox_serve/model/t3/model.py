"""`T3`: the whole network (conditioning, embeddings, backbone, heads) with upstream's keys.

Embedding rules, all from upstream's `T3.inference` (resemble-ai/chatterbox):

- text rows: `text_emb(token) + text_pos_emb(i)`, i = 0.. over the text including its
  start and stop tokens. The unconditional CFG row zeroes `text_emb` but keeps the
  position term.
- prompt speech rows (inside the conditioning): `speech_emb + speech_pos_emb(0..L-1)`.
- speech rows: `speech_emb(token) + speech_pos_emb(p)`. Upstream's prefill ends with the
  start-of-speech token twice, both at speech position 0 (it embeds it in
  `prepare_input_embeds` and appends it again); the k-th generated token (k = 0..) is then
  fed at speech position k + 1. We reproduce this so tokens match upstream exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from chatterbox_serve.model.t3.backbone import LlamaBackbone
from chatterbox_serve.model.t3.conditioning import T3CondEncoder
from chatterbox_serve.model.t3.config import T3Config


class LearnedPositions(nn.Module):
    """A learned absolute position table (`<name>.emb.weight` in the checkpoint)."""

    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(rows, dim)

    def forward(self, positions: Tensor) -> Tensor:
        out: Tensor = self.emb(positions)
        return out


class T3(nn.Module):
    """Chatterbox T3 with upstream state-dict keys; load with `load_state_dict(strict=True)`.

    Stable interface used by the engines and the vLLM model:
        conditioning(speaker_emb, prompt_tokens, exaggeration) -> (B, 34, D)
        embed_text(tokens (B, T), uncond) -> (B, T, D)
        embed_speech(tokens, positions) -> (..., D)
        prefill_embeds(prefix (Lc, D), text_tokens, uncond) -> (Lc + T + 2, D)
        backbone forward (`tfmr`) and `speech_head` logits.
    """

    def __init__(self, config: T3Config) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.tfmr = LlamaBackbone(config.backbone)
        self.cond_enc = T3CondEncoder(config)
        self.text_emb = nn.Embedding(config.text_vocab_size, dim)
        self.speech_emb = nn.Embedding(config.speech_vocab_size, dim)
        self.text_pos_emb = LearnedPositions(config.text_positions, dim)
        self.speech_pos_emb = LearnedPositions(config.speech_positions, dim)
        self.text_head = nn.Linear(dim, config.text_vocab_size, bias=False)
        self.speech_head = nn.Linear(dim, config.speech_vocab_size, bias=False)

    @property
    def device(self) -> torch.device:
        return self.speech_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.speech_head.weight.dtype

    def embed_prompt_speech(self, tokens: Tensor) -> Tensor:
        """(B, L) prompt speech tokens -> (B, L, D) rows the perceiver reads."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        out: Tensor = self.speech_emb(tokens) + self.speech_pos_emb(positions)[None]
        return out

    def conditioning(
        self, speaker_emb: Tensor, prompt_tokens: Tensor | None, exaggeration: Tensor
    ) -> Tensor:
        """The conditioning prefix for a batch of voices, (B, 34, D) (2 rows without prompt)."""
        prompt = None if prompt_tokens is None else self.embed_prompt_speech(prompt_tokens)
        out: Tensor = self.cond_enc(speaker_emb, prompt, exaggeration)
        return out

    def embed_text(self, tokens: Tensor, uncond: bool = False) -> Tensor:
        """(B, T) text tokens (start/stop included) -> (B, T, D); CFG's uncond zeroes the tokens."""
        emb: Tensor = self.text_emb(tokens)
        if uncond:
            emb = torch.zeros_like(emb)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        out: Tensor = emb + self.text_pos_emb(positions)[None]
        return out

    def embed_speech(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """Speech tokens at explicit speech positions (same shapes) -> (..., D)."""
        out: Tensor = self.speech_emb(tokens) + self.speech_pos_emb(positions)
        return out

    def prefill_embeds(self, prefix: Tensor, text_tokens: Sequence[int], uncond: bool) -> Tensor:
        """One row's prompt as upstream builds it: prefix, text, start-of-speech twice."""
        text = torch.tensor([list(text_tokens)], dtype=torch.long, device=self.device)
        bos = torch.full((1, 2), self.config.start_speech_token, device=self.device)
        speech = self.embed_speech(bos, torch.zeros_like(bos))
        return torch.cat((prefix.to(self.dtype), self.embed_text(text, uncond)[0], speech[0]))

    def text_tokens_for(self, ids: Sequence[int]) -> list[int]:
        """Wrap tokenizer ids in the start/stop text tokens T3 was trained with."""
        return [self.config.start_text_token, *ids, self.config.stop_text_token]
