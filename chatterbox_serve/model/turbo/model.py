"""`TurboT3`: Turbo's text-to-speech-token network under upstream's state-dict keys.

Embedding rules, from upstream's `T3.prepare_input_embeds` with Turbo's config
(`input_pos_emb=None`, no perceiver, no emotion):

- the conditioning is the speaker row `spkr_enc(speaker_emb)`, then the prompt speech
  tokens' `speech_emb` rows as they are (up to 375);
- text rows are `text_emb(token)` of the GPT-2 BPE ids, with no start or stop token;
- the prompt ends with one start-of-speech row; generated tokens are fed as
  `speech_emb(token)`;
- no learned T3 positions anywhere: GPT-2 adds `wpe` over the whole sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from chatterbox_serve.model.turbo.backbone import GPT2Backbone
from chatterbox_serve.model.turbo.config import TurboConfig


class TurboCondEncoder(nn.Module):
    """The speaker projection (`cond_enc.spkr_enc`); Turbo's conditioning has nothing else."""

    def __init__(self, config: TurboConfig) -> None:
        super().__init__()
        self.speaker_embed_size = config.speaker_embed_size
        self.spkr_enc = nn.Linear(config.speaker_embed_size, config.hidden_size)

    def forward(self, speaker_emb: Tensor, prompt_emb: Tensor | None) -> Tensor:
        speaker: Tensor = self.spkr_enc(speaker_emb.reshape(-1, self.speaker_embed_size))[:, None]
        if prompt_emb is None:
            return speaker
        return torch.cat((speaker, prompt_emb), dim=1)


class TurboT3(nn.Module):
    """Turbo's T3; load with `load_state_dict(strict=True)`.

    The interface the original's generation loop uses (`SpeechTokenModel`):
        conditioning(speaker_emb (B, 256), prompt_tokens (B, L) or None) -> (B, 1 + L, D)
        prefill_embeds(prefix (1 + L, D), text_tokens, uncond) -> (1 + L + T + 1, D)
        embed_speech(tokens, positions) -> (..., D); `tfmr` and `speech_head` (with bias).
    """

    def __init__(self, config: TurboConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.tfmr = GPT2Backbone(config.backbone, config.text_vocab_size)
        self.cond_enc = TurboCondEncoder(config)
        self.text_emb = nn.Embedding(config.text_vocab_size, dim)
        self.speech_emb = nn.Embedding(config.speech_vocab_size, dim)
        self.text_head = nn.Linear(dim, config.text_vocab_size, bias=False)
        self.speech_head = nn.Linear(dim, config.speech_vocab_size, bias=True)

    @property
    def device(self) -> torch.device:
        return self.speech_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.speech_head.weight.dtype

    def conditioning(self, speaker_emb: Tensor, prompt_tokens: Tensor | None) -> Tensor:
        """The conditioning prefix for a batch of voices, (B, 1 + L, D)."""
        prompt = None if prompt_tokens is None else self.speech_emb(prompt_tokens)
        out: Tensor = self.cond_enc(speaker_emb, prompt)
        return out

    def embed_speech(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """Speech tokens -> (..., D); `positions` are GPT-2's business, not added here."""
        out: Tensor = self.speech_emb(tokens)
        return out

    def prefill_embeds(self, prefix: Tensor, text_tokens: Sequence[int], uncond: bool) -> Tensor:
        """One row's prompt as upstream builds it: prefix, text, one start-of-speech.

        Turbo has no classifier-free guidance, so there is no unconditional row.
        """
        if uncond:
            raise ValueError("Turbo has no unconditional (CFG) row")
        text = torch.tensor(list(text_tokens), dtype=torch.long, device=self.device)
        start = torch.tensor([self.config.start_speech_token], device=self.device)
        return torch.cat((prefix.to(self.dtype), self.text_emb(text), self.speech_emb(start)))
