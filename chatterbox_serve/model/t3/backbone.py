"""The Llama decoder inside T3, on `scaled_dot_product_attention`, with a batched KV cache.

Parameter names match Hugging Face's `LlamaModel` (upstream's `tfmr.*` keys). T3 feeds
embeddings, never token ids, so `embed_tokens` (8 rows upstream) is kept only so a
real checkpoint loads strictly.

Batches are left-padded: every row's newest token sits in the same cache slot, and a
key mask hides each row's padding. Positions (RoPE) are per row and count only real
tokens, so a padded row computes what it would alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from chatterbox_serve.model.t3.config import LlamaConfig


def llama3_inverse_frequencies(config: LlamaConfig) -> Tensor:
    """RoPE inverse frequencies with Llama 3's long-context scaling."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    original = config.rope_original_max_positions
    low_wavelen = original / config.rope_low_freq_factor
    high_wavelen = original / config.rope_high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / config.rope_factor, inv_freq)
    smooth = (original / wavelen - config.rope_low_freq_factor) / (
        config.rope_high_freq_factor - config.rope_low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / config.rope_factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def attention_mask(valid_keys: Tensor, start: int, n: int) -> Tensor:
    """(R, N, keys) bool: causal, real keys only; a padding query sees itself (no NaN)."""
    total = valid_keys.shape[1]
    device = valid_keys.device
    query_pos = torch.arange(start, start + n, device=device)[:, None]
    key_pos = torch.arange(total, device=device)[None, :]
    causal = key_pos <= query_pos
    mask = causal[None] & valid_keys[:, None, :]
    return mask | (key_pos == query_pos)[None]


class KVCache:
    """Keys and values of every layer for a batch of rows, preallocated to `capacity` slots.

    `valid[r, t]` says whether slot t of row r holds a real token (not left padding).
    Rows leave with `keep`, which compacts every tensor to the surviving rows.
    """

    def __init__(
        self,
        config: LlamaConfig,
        rows: int,
        capacity: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        shape = (rows, config.num_kv_heads, capacity, config.head_dim)
        self.keys = [
            torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)
        ]
        self.values = [
            torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.num_layers)
        ]
        self.valid = torch.zeros(rows, capacity, dtype=torch.bool, device=device)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    def keep(self, rows: Tensor) -> None:
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        self.valid = self.valid.index_select(0, rows)

    def check_room(self, n: int) -> int:
        """The first free slot, once sure that `n` more inputs fit."""
        start = self.length
        if start + n > self.capacity:
            raise ValueError(f"KV cache of {self.capacity} slots cannot take {start + n}")
        return start

    def admit(self, start: int, valid: Tensor) -> Tensor:
        """Record which of N new inputs (R, N) are real; their attention mask (R, N, keys)."""
        n = valid.shape[1]
        self.valid[:, start : start + n] = valid
        return attention_mask(self.valid[:, : start + n], start, n)


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.heads = config.num_heads
        self.kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        inner = config.num_heads * config.head_dim
        kv_inner = config.num_kv_heads * config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, inner, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, kv_inner, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, kv_inner, bias=False)
        self.o_proj = nn.Linear(inner, config.hidden_size, bias=False)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        cache_k: Tensor,
        cache_v: Tensor,
        start: int,
        mask: Tensor,
        capture_heads: Sequence[int] = (),
    ) -> tuple[Tensor, dict[int, Tensor]]:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        cache_k[:, :, start : start + n] = k
        cache_v[:, :, start : start + n] = v
        keys = cache_k[:, :, : start + n]
        values = cache_v[:, :, : start + n]
        if self.kv_heads != self.heads:
            repeat = self.heads // self.kv_heads
            keys = keys.repeat_interleave(repeat, dim=1)
            values = values.repeat_interleave(repeat, dim=1)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask[:, None])
        captured: dict[int, Tensor] = {}
        if capture_heads:
            # Attention probabilities of a few heads for the alignment analyzer; SDPA
            # does not return them, so they are recomputed for those heads only.
            idx = torch.tensor(list(capture_heads), device=x.device)
            qh, kh = q.index_select(1, idx).float(), keys.index_select(1, idx).float()
            scores = qh @ kh.transpose(-1, -2) / math.sqrt(self.head_dim)
            scores = scores.masked_fill(~mask[:, None], float("-inf"))
            probs = scores.softmax(-1)
            captured = {h: probs[:, i] for i, h in enumerate(capture_heads)}
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1)), captured


class LlamaMLP(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return out


class LlamaLayer(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaBackbone(nn.Module):
    """The decoder stack: `forward` appends `embeds` to the cache and returns final states.

    Interface:
        forward(embeds (R, N, D), positions (R, N) long, cache, capture) -> (R, N, D)
    `cache.length` advances by N. `capture` maps layer index -> head indices whose
    attention probabilities (R, N, keys) are returned in `captured[(layer, head)]`.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(8, config.hidden_size)
        self.layers = nn.ModuleList(LlamaLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # RoPE frequencies stay float32 on every device, whatever dtype the weights take
        # (a bf16 buffer would shift the rotation angles of distant positions).
        self._inv_freq: dict[torch.device, Tensor] = {}

    def new_cache(self, rows: int, capacity: int) -> KVCache:
        weight = self.norm.weight
        return KVCache(self.config, rows, capacity, weight.device, weight.dtype)

    def forward(
        self,
        embeds: Tensor,
        positions: Tensor,
        cache: KVCache,
        valid: Tensor,
        capture: Mapping[int, Sequence[int]] | None = None,
        captured: dict[tuple[int, int], Tensor] | None = None,
    ) -> Tensor:
        """Run `embeds` through every layer; `valid` (R, N) marks real (non-padding) inputs."""
        _, n, _ = embeds.shape
        start = cache.check_room(n)
        mask = cache.admit(start, valid)
        inv_freq = self._inv_freq.get(positions.device)
        if inv_freq is None:
            inv_freq = llama3_inverse_frequencies(self.config).to(positions.device)
            self._inv_freq[positions.device] = inv_freq
        freqs = positions[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos().to(embeds.dtype)[:, None]
        sin = emb.sin().to(embeds.dtype)[:, None]
        h = embeds
        for index, module in enumerate(self.layers):
            layer = cast(LlamaLayer, module)
            heads = (capture or {}).get(index, ())
            attn, probs = layer.self_attn(
                layer.input_layernorm(h),
                cos,
                sin,
                cache.keys[index],
                cache.values[index],
                start,
                mask,
                heads,
            )
            if captured is not None:
                captured.update({(index, head): p for head, p in probs.items()})
            h = h + attn
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        cache.length = start + n
        out: Tensor = self.norm(h)
        return out
