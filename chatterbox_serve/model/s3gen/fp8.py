"""FP8 matrix products for the CFM estimator's transformer blocks (Hopper and newer).

The estimator's 56 transformer blocks run six linear layers each (query, key, value,
output, and the feed-forward pair, 256 <-> 1024 wide) over every frame of every row of
the guidance pair. `fp8_linears` swaps those layers' forward, for the duration of one
solve, for `Fp8Linear`: the weight is quantised once to float8 e4m3 with one scale per
output channel, each call quantises its input with one scale per row (frame), and
`torch._scaled_mm` multiplies in float8 with float32 accumulation, writing bfloat16
(rowwise scales need a bfloat16 output). Layer norms, attention, the residual stream
and the solver state keep the precision autocast gives them.

Rowwise scales follow the outliers of each frame and each output channel, which a
single scale per tensor would let dominate the whole matrix. Whether the result stays
inside the quality bounds (tests/model/test_s3gen_quality.py: mels 1e-2, waveforms 1e-3)
is measured on the GPU by `tools/gpu/s3gen_speed.py` (variants `bf16-fp8*`) and
estimated on the CPU by `emulate=True`, which runs the same quantisation and multiplies
the dequantised operands in float32.

The per-call quantisation (a row maximum, a division, a cast) is extra passes over the
activations in eager mode; under `torch.compile` it fuses into the kernel before it. So
at K = 256 these products are memory-bound in bfloat16 already, and FP8 is expected to
pay mostly where it is compiled.

Imported lazily: this module needs torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
# A row of zeros (a padded frame) keeps a finite scale; its output is zero either way.
_MIN_AMAX = 1e-12


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) as float8 e4m3 and its per-row float32 scales (M, 1): x ~ q * scale."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=_MIN_AMAX)
    scale = amax / FP8_MAX
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def fp8_supported(device: torch.device) -> bool:
    """Whether `torch._scaled_mm` runs float8 here: CUDA, compute capability 8.9 or more."""
    if device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


class Fp8Linear:
    """The forward of one `nn.Linear` in float8: called like `linear(x)`.

    Holds the quantised weight, transposed to the column-major layout `_scaled_mm` wants
    for its second operand, and the per-output-channel scales (1, N).
    """

    def __init__(self, linear: torch.nn.Linear, emulate: bool = False) -> None:
        out_features, in_features = linear.weight.shape
        if in_features % 16 or out_features % 16:
            raise ValueError(f"float8 products need sizes divisible by 16, got {in_features}")
        q, scale = quantize_rows(linear.weight.detach())
        self.weight_t = q.t()  # (K, N), column-major
        self.weight_scale = scale.t().contiguous()  # (1, N)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.emulate = emulate

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        # Extra arguments: diffusers' LoRA-compatible layers pass a LoRA scale; there is
        # no LoRA layer in the estimator, so it has nothing to scale.
        device = x.device.type
        out_dtype = (
            torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        )
        if out_dtype not in (torch.bfloat16, torch.float32) or (
            not self.emulate and out_dtype != torch.bfloat16
        ):
            raise ValueError(f"float8 linear layers write bfloat16, not {out_dtype}")
        shape = x.shape
        q, scale = quantize_rows(x.reshape(-1, shape[-1]))
        if self.emulate:
            with torch.autocast(device, enabled=False):
                w = self.weight_t.float() * self.weight_scale
                y = ((q.float() * scale) @ w).to(out_dtype)
        else:
            y = torch._scaled_mm(
                q, self.weight_t, scale_a=scale, scale_b=self.weight_scale, out_dtype=out_dtype
            )
        if self.bias is not None:
            y = y + self.bias.to(out_dtype)
        return y.reshape(*shape[:-1], y.shape[-1])


def transformer_linears(estimator: torch.nn.Module) -> list[torch.nn.Linear]:
    """The linear layers of the estimator's transformer blocks (not its resnets or time MLP).

    Those run once per frame; the time embedding's and the resnets' time projections run
    once per row and are left alone.
    """
    from chatterbox_serve.model.s3gen.compiled import block_levels

    found: list[torch.nn.Linear] = []
    for _resnet, blocks in block_levels(estimator):
        for block in blocks:
            found.extend(m for m in block.modules() if isinstance(m, torch.nn.Linear))
    return found


# Quantised weights per estimator: quantising 336 matrices takes a moment, and the
# runner calls `fp8_linears` once per solve. Entries keep their estimator alive, so an
# id is never reused; a weight changed in place after the first solve is not seen.
_quantised: dict[
    tuple[int, bool], tuple[torch.nn.Module, list[tuple[torch.nn.Linear, Fp8Linear]]]
] = {}


@contextlib.contextmanager
def fp8_linears(estimator: torch.nn.Module, emulate: bool = False) -> Iterator[None]:
    """Run the estimator's transformer-block linear layers in float8 within this block.

    `emulate` computes the same quantisation with float32 products, on any device (the
    CPU tests). Not safe while another thread runs the same estimator: the forwards are
    module state, as `attention.packed_attention`'s processors are.
    """
    key = (id(estimator), emulate)
    if key not in _quantised:
        pairs = [(m, Fp8Linear(m, emulate)) for m in transformer_linears(estimator)]
        _quantised[key] = (estimator, pairs)
    _, pairs = _quantised[key]
    for module, fast in pairs:
        module.forward = fast  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        for module, _ in pairs:
            del module.forward
