"""Self-attention of the CFM estimator over a padded batch, computed per item's length.

The estimator's 56 transformer blocks use diffusers' `AttnProcessor2_0`, which adds a
float bias (-1e10 on padded keys) to every score. For a padded batch that costs twice:
every row attends over the batch's longest length (attention is quadratic, so a batch
of lengths 460 to 1100 frames does about 1.8x the work of its items alone), and a float
bias keeps scaled-dot-product attention off its flash kernels. `packed_attention`
swaps in `LengthAttention` for the duration of one solve; it computes each row over its
own frames only, with no bias (measured per backend and precision in docs/S3GEN.md):

- `"packed"`: the valid frames of all rows are packed into one jagged nested tensor
  (no padded frame reaches the projections or the attention kernel);
- `"flex"`: `flex_attention` with a key-length block mask, compiled on CUDA (blocks past
  a row's end are skipped);
- `"varlen"`: the same packing as "packed", attended by flash-attention's
  variable-length kernel (`torch.nn.attention.varlen.varlen_attn`), which takes the
  packed frames and each row's offsets directly: no jagged tensor, no bias, no padded
  key. Flash-attention runs on CUDA in bfloat16 or float16 only, so this backend needs
  flow precision "bf16" or "fp16" (autocast makes the projections half precision).

All give each valid frame the output the biased attention gives it (exp(-1e10) is 0
in float32 and bfloat16), up to rounding. Padded query frames get zeros ("packed",
"varlen") or
attention over the valid keys ("flex"); nothing downstream reads them, since every
later layer of the estimator is masked or causal.

Imported lazily by `flow`: this module needs torch and diffusers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F

AttentionBackend = Literal["auto", "bias", "packed", "flex", "varlen"]
HALF = (torch.bfloat16, torch.float16)

logger = logging.getLogger(__name__)

_compiled_flex: Callable[..., torch.Tensor] | None = None
# Whether varlen_attn imports and runs, per CUDA device (probed once, by `resolve_attention`).
_varlen_works: dict[torch.device, bool] = {}


class LengthAttention:
    """A diffusers attention processor for self-attention over rows of known lengths.

    Holds the batch's layout (lengths, packing indices or block mask), so one instance
    serves every attention module of the estimator during one solve.
    """

    def __init__(self, lengths: torch.Tensor, frames: int, backend: AttentionBackend) -> None:
        self.backend = backend
        self.frames = frames
        rows = lengths.shape[0]
        lens = [int(n) for n in lengths.tolist()]
        device = lengths.device
        if backend in ("packed", "varlen"):
            steps = torch.arange(frames, device=device)
            valid = (steps.unsqueeze(0) < lengths.unsqueeze(1)).reshape(-1)
            self.index = valid.nonzero().squeeze(1)
            # flash-attention wants int32 offsets; nested tensors want int64.
            offset_type = torch.int32 if backend == "varlen" else torch.int64
            self.offsets = F.pad(lengths.cumsum(0), (1, 0)).to(offset_type)
            self.min_len, self.max_len = min(lens), max(lens)
        elif backend == "flex":
            from torch.nn.attention.flex_attention import create_block_mask

            def key_in_row(b: Any, h: Any, q: Any, kv: Any) -> Any:
                return kv < lengths[b]

            self.block_mask = create_block_mask(
                key_in_row, rows, None, frames, frames, device=device.type
            )
        else:
            raise ValueError(f"unknown attention backend {backend!r}")

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise ValueError("LengthAttention computes self-attention only")
        rows, frames, channels = hidden_states.shape
        if frames != self.frames:
            raise ValueError(f"laid out for {self.frames} frames, got {frames}")
        packed = self.backend in ("packed", "varlen")
        if self.backend == "packed":
            out = self._packed(attn, hidden_states.reshape(rows * frames, channels))
        elif self.backend == "varlen":
            out = self._varlen(attn, hidden_states.reshape(rows * frames, channels))
        else:
            out = self._flex(attn, hidden_states)
        out = attn.to_out[1](attn.to_out[0](out))
        if packed:
            full = out.new_zeros(rows * frames, out.shape[-1])
            out = full.index_copy_(0, self.index, out).view(rows, frames, -1)
        if attn.residual_connection:
            out = out + hidden_states
        result: torch.Tensor = out / attn.rescale_output_factor
        return result

    def _packed(self, attn: Any, flat: torch.Tensor) -> torch.Tensor:
        """(total valid frames, heads x head_dim), from a jagged nested tensor."""
        x = flat.index_select(0, self.index)
        heads = attn.heads

        def jagged(t: torch.Tensor) -> torch.Tensor:
            t = t.view(t.shape[0], heads, -1)
            nested = torch.nested.nested_tensor_from_jagged(
                t, self.offsets, min_seqlen=self.min_len, max_seqlen=self.max_len
            )
            return nested.transpose(1, 2)  # (rows, heads, jagged frames, head_dim)

        q, k, v = jagged(attn.to_q(x)), jagged(attn.to_k(x)), jagged(attn.to_v(x))
        out = F.scaled_dot_product_attention(q, k, v)
        values: torch.Tensor = out.transpose(1, 2).values()
        return values.reshape(values.shape[0], -1)

    def _varlen(self, attn: Any, flat: torch.Tensor) -> torch.Tensor:
        """(total valid frames, heads x head_dim), from flash-attention's varlen kernel."""
        x = flat.index_select(0, self.index)
        heads = attn.heads
        q, k, v = (
            t.view(t.shape[0], heads, -1) for t in (attn.to_q(x), attn.to_k(x), attn.to_v(x))
        )
        if q.dtype not in HALF:
            raise ValueError(
                f"attention 'varlen' runs in bfloat16 or float16, got {q.dtype}: "
                "use flow precision bf16 or fp16"
            )
        out: torch.Tensor = _flash_varlen(q, k, v, self.offsets, self.max_len)
        return out.reshape(out.shape[0], -1)

    def _flex(self, attn: Any, hidden_states: torch.Tensor) -> torch.Tensor:
        """(rows, frames, heads x head_dim), key padding skipped block by block."""
        rows, frames, _ = hidden_states.shape
        heads = attn.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(rows, frames, heads, -1).transpose(1, 2)

        q = split(attn.to_q(hidden_states))
        k = split(attn.to_k(hidden_states))
        v = split(attn.to_v(hidden_states))
        out = _flex_attention(q.device)(q, k, v, block_mask=self.block_mask)
        return out.transpose(1, 2).reshape(rows, frames, -1)


@torch.compiler.disable  # type: ignore[untyped-decorator]
def _flash_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: torch.Tensor, max_len: int
) -> torch.Tensor:
    """`varlen_attn` self-attention, kept out of compiled regions (compile "regional").

    Under compilation the per-solve `max_len` would become a guarded constant, and every
    solve a recompilation; outside, the blocks' graphs break here and stay valid.
    Positional arguments only: torch 2.10's signature (is_causal, return_aux after
    max_k) and later ones (keyword-only options) agree on these seven. The default
    scale, 1/sqrt(head_dim), is the one diffusers' AttnProcessor2_0 uses.
    """
    from torch.nn.attention.varlen import varlen_attn

    out = varlen_attn(q, k, v, offsets, offsets, max_len, max_len)
    if not isinstance(out, torch.Tensor):
        raise TypeError("varlen_attn returned its auxiliary outputs, which were not asked for")
    return out


def _flex_attention(device: torch.device) -> Callable[..., torch.Tensor]:
    """flex_attention, compiled once on CUDA (eager materialises the scores)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=True)
    return _compiled_flex


def resolve_attention(
    backend: AttentionBackend, precision: str, device: torch.device
) -> AttentionBackend:
    """The backend "auto" stands for: the fastest one measured on the H200 (docs/S3GEN.md).

    tf32 on CUDA: "flex" (1.7x the bias path at 16 and 64 items). fp32: "bias"; "packed"
    halves the attention work but its jagged tensors cost milliseconds of Python per
    call, so it wins only at 64 items. bf16 and fp16 on CUDA: "varlen" where this torch
    has a working flash-attention varlen kernel: the bias path's estimator step at 64
    items took 240 ms against 146 ms with no mask at all, the bound exact per-item
    attention can reach; else "bias" (cuDNN attention; flex measured the
    same, and needs no compilation).
    """
    if backend != "auto":
        return backend
    if device.type == "cuda" and precision == "tf32":
        return "flex"
    if device.type == "cuda" and precision in ("bf16", "fp16") and varlen_available(device):
        return "varlen"
    return "bias"


def varlen_available(device: torch.device) -> bool:
    """Whether `varlen_attn` imports and runs on `device` (probed once per device).

    torch builds before 2.10 lack it, and flash-attention refuses GPUs older than Ampere;
    either way "auto" falls back to the bias path instead of failing every solve.
    """
    if device.type != "cuda":
        return False
    if device not in _varlen_works:
        try:
            from torch.nn.attention.varlen import varlen_attn

            q = torch.zeros(4, 1, 64, device=device, dtype=torch.bfloat16)
            offsets = torch.tensor([0, 1, 4], device=device, dtype=torch.int32)
            varlen_attn(q, q, q, offsets, offsets, 3, 3)
            _varlen_works[device] = True
        except Exception as exc:  # any refusal (no kernel, old GPU, no CUDA) means "no"
            logger.warning("varlen attention unavailable on %s (%r); using 'bias'", device, exc)
            _varlen_works[device] = False
    return _varlen_works[device]


@contextlib.contextmanager
def packed_attention(
    estimator: torch.nn.Module,
    lengths: torch.Tensor | None,
    frames: int,
    backend: AttentionBackend,
) -> Iterator[None]:
    """Swap `LengthAttention` into every attention module of `estimator`, then restore.

    `lengths` holds each row's valid frames (rows in estimator batch order). Not safe
    while another thread runs the same estimator: the processors are module state.
    """
    if backend == "auto":
        raise ValueError("resolve 'auto' first (resolve_attention)")
    if backend == "bias":
        yield
        return
    if lengths is None:
        raise ValueError(f"attention {backend!r} needs each row's length")
    processor = LengthAttention(lengths, frames, backend)
    modules = [m for m in estimator.modules() if hasattr(m, "processor") and hasattr(m, "to_q")]
    saved = [m.processor for m in modules]
    for module in modules:
        module.processor = processor  # type: ignore[assignment]
    try:
        yield
    finally:
        for module, previous in zip(modules, saved, strict=True):
            module.processor = previous
