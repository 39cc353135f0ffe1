"""The per-request values our vLLM T3 reads from its position ids, packed into one integer.

T3 needs two per-request values on every decode step that vLLM does not hand a model:

- where speech starts (the prompt length), because a generated token is embedded with
  upstream's learned speech position `k + 1` for the k-th generated token;
- the request's CFG weight, because logits are `cond + w * (cond - uncond)`.

vLLM's M-RoPE interface is the one documented per-request hook that reaches decode
steps: `get_mrope_input_positions` runs once per request with its multimodal data and
returns the prompt's positions plus a constant `delta`, and every later token is fed at
position `context_len + delta`. We make that integer carry all three values:

    packed = weight_code * SPAN**2 + speech_start * SPAN + sequence_index

`sequence_index` is what RoPE sees, so attention is exactly upstream's; `speech_start`
and `weight_code` are constant per request, so `delta = packed(0, ...)` keeps them on
every decode step, and after a preemption vLLM recomputes the same values. Positions
are int64 in vLLM's M-RoPE buffers, so the product never overflows.

This module imports no torch, so the packing is tested on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass

SPAN = 8192  # > any sequence index and any prompt length (max_model_len <= SPAN)
WEIGHT_SCALE = 10_000  # CFG weight resolution: 1e-4
# compute_logits receives the code as two bf16-exact channels (hi * 256 + lo).
MAX_WEIGHT_CODE = 256 * 256 - 1
MAX_CFG_WEIGHT = MAX_WEIGHT_CODE / WEIGHT_SCALE


@dataclass(frozen=True)
class PackedPosition:
    """The three values one packed position id holds."""

    sequence_index: int
    speech_start: int
    weight_code: int

    @property
    def cfg_weight(self) -> float:
        return self.weight_code / WEIGHT_SCALE

    @property
    def speech_position(self) -> int:
        """Upstream's speech position of a generated token; <= 0 inside the prompt."""
        return self.sequence_index - self.speech_start + 1


def weight_code(cfg_weight: float) -> int:
    """The CFG weight as the integer the positions carry.

    Raises:
        ValueError: for a weight outside [0, MAX_CFG_WEIGHT]; the API bounds it to [0, 1].
    """
    if not 0.0 <= cfg_weight <= MAX_CFG_WEIGHT:
        raise ValueError(f"cfg_weight {cfg_weight} outside [0, {MAX_CFG_WEIGHT}]")
    return round(cfg_weight * WEIGHT_SCALE)


def pack(sequence_index: int, speech_start: int, code: int) -> int:
    if not (0 <= sequence_index < SPAN and 0 <= speech_start < SPAN):
        raise ValueError(
            f"sequence index {sequence_index} or speech start {speech_start} >= {SPAN}"
        )
    if not 0 <= code <= MAX_WEIGHT_CODE:
        raise ValueError(f"weight code {code} outside [0, {MAX_WEIGHT_CODE}]")
    return (code * SPAN + speech_start) * SPAN + sequence_index


def unpack(position: int) -> PackedPosition:
    rest, sequence_index = divmod(position, SPAN)
    code, speech_start = divmod(rest, SPAN)
    return PackedPosition(sequence_index, speech_start, code)


def prompt_positions(
    num_tokens: int, speech_start: int, cfg_weight: float
) -> tuple[list[int], int]:
    """Packed positions of a prompt of `num_tokens` tokens, and the decode delta.

    `speech_start` is the index of the first generated token (the prompt's length when
    the prompt is the conditioning, the text and the two start-of-speech tokens).
    """
    code = weight_code(cfg_weight)
    base = pack(0, speech_start, code)
    return [base + i for i in range(num_tokens)], base
