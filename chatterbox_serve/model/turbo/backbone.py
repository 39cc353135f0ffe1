"""GPT-2 inside Turbo's T3, on `scaled_dot_product_attention`, with the original's KV cache.

Parameter names match Hugging Face's `GPT2Model` (upstream's `tfmr.*` keys), including
its `Conv1D` layout (weights stored input-major). T3 feeds embeddings, never token
ids; upstream deletes `wte` after loading, and we keep it only so the file loads
strictly. GPT-2 adds its own learned position (`wpe`) to every input: a row's
positions count its real tokens, so a left-padded row computes what it would alone.
The interface is `LlamaBackbone`'s, so the original's generation loop drives it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from chatterbox_serve.model.t3.backbone import KVCache
from chatterbox_serve.model.t3.config import LlamaConfig
from chatterbox_serve.model.turbo.config import GPT2Config


class Conv1D(nn.Module):
    """GPT-2's linear layer: `x @ weight + bias`, weight (in, out)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return out.view(*x.shape[:-1], self.weight.shape[1])


def gelu_new(x: Tensor) -> Tensor:
    """GPT-2's tanh approximation of GELU, written as Hugging Face's `NewGELUActivation`."""
    inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))
    return 0.5 * x * (1.0 + torch.tanh(inner))


class GPT2Attention(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.heads = config.num_heads
        self.head_dim = config.head_dim
        self.c_attn = Conv1D(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = Conv1D(config.hidden_size, config.hidden_size)

    def forward(
        self, x: Tensor, cache_k: Tensor, cache_v: Tensor, start: int, mask: Tensor
    ) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (t.view(b, n, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        cache_k[:, :, start : start + n] = k
        cache_v[:, :, start : start + n] = v
        out = F.scaled_dot_product_attention(
            q, cache_k[:, :, : start + n], cache_v[:, :, : start + n], attn_mask=mask[:, None]
        )
        projected: Tensor = self.c_proj(out.transpose(1, 2).reshape(b, n, d))
        return projected


class GPT2MLP(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.c_fc = Conv1D(config.hidden_size, 4 * config.hidden_size)
        self.c_proj = Conv1D(4 * config.hidden_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.c_proj(gelu_new(self.c_fc(x)))
        return out


class GPT2Block(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = GPT2Attention(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = GPT2MLP(config)


class GPT2Backbone(nn.Module):
    """The decoder stack; `forward` appends `embeds` to the cache and returns final states.

    Interface (`LlamaBackbone`'s):
        forward(embeds (R, N, D), positions (R, N) long, cache, valid (R, N)) -> (R, N, D)
    GPT-2 has no alignment heads to report, so `capture` must be empty.
    """

    def __init__(self, config: GPT2Config, text_vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(text_vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_positions, config.hidden_size)
        self.h = nn.ModuleList(GPT2Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def new_cache(self, rows: int, capacity: int) -> KVCache:
        c = self.config
        shape = LlamaConfig(
            hidden_size=c.hidden_size,
            num_layers=c.num_layers,
            num_heads=c.num_heads,
            num_kv_heads=c.num_heads,
            head_dim=c.head_dim,
        )
        weight = self.ln_f.weight
        return KVCache(shape, rows, capacity, weight.device, weight.dtype)

    def forward(
        self,
        embeds: Tensor,
        positions: Tensor,
        cache: KVCache,
        valid: Tensor,
        capture: Mapping[int, Sequence[int]] | None = None,
        captured: dict[tuple[int, int], Tensor] | None = None,
    ) -> Tensor:
        """Run `embeds` through every block; `valid` (R, N) marks real (non-padding) inputs."""
        if capture:
            raise ValueError("GPT-2's T3 has no alignment heads to capture")
        _, n, _ = embeds.shape
        start = cache.check_room(n)
        if int(positions.max()) >= self.config.max_positions:
            raise ValueError(f"position {int(positions.max())} is past GPT-2's table")
        mask = cache.admit(start, valid)
        h = embeds + self.wpe(positions)
        for index, module in enumerate(self.h):
            block = cast(GPT2Block, module)
            h = h + block.attn(block.ln_1(h), cache.keys[index], cache.values[index], start, mask)
            h = h + block.mlp(block.ln_2(h))
        cache.length = start + n
        out: Tensor = self.ln_f(h)
        return out
