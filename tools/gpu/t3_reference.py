"""The reference side of the served T3 proof: upstream's own code, and the statistics.

Everything here runs on any device (the CPU tests use the tiny checkpoint), so what the
GPU proof compares against is itself tested in CI:

- `upstream_rows`: the prompt rows exactly as upstream 0.1.7's `T3.inference` builds
  them, from `T3.prepare_input_embeds` plus its second start-of-speech row
  (`speech_emb(start) + speech_pos_emb.get_fixed_embedding(0)`);
- `upstream_logprobs`: upstream's backbone and speech head teacher-forced along given
  tokens, each generated token embedded as `T3.inference` embeds it (speech position
  k + 1), CFG combined as upstream does, then upstream's own logits processors
  (Hugging Face's, as imported by upstream's `t3.py`) in upstream's order: repetition
  penalty over the start token and the tokens so far, temperature, min_p, top_p;
- `max_logprob_diff`, `mean_kl`, `chi_square_p`: how the engine's numbers are held
  against that reference;
- `stall_s`: what a listener hears as gaps, from when a stream's audio arrived.

Upstream's multilingual alignment analyzer is not applied: the served engines end
speech as upstream main does (the analyzer removed), so the reference is the model and
its sampling chain alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Sampling:
    """One item's sampling values (upstream's `T3.inference` arguments)."""

    temperature: float = 0.8
    repetition_penalty: float = 1.2
    min_p: float = 0.05
    top_p: float = 1.0


def upstream_rows(
    up: Any,
    speaker: Tensor,
    prompt_tokens: Tensor,
    exaggeration: float,
    text_ids: Sequence[int],
) -> tuple[Tensor, Tensor]:
    """Upstream's conditional and unconditional prompt rows of one item, each (P, D)."""
    from tools.upstream_t3 import import_upstream_t3

    device = up.speech_head.weight.device
    cond = (
        import_upstream_t3()
        .T3Cond(
            speaker_emb=speaker.to(device),
            cond_prompt_speech_tokens=prompt_tokens.to(device),
            emotion_adv=exaggeration * torch.ones(1, 1, 1, device=device),
        )
        .to(device=device)
    )
    text = torch.tensor([list(text_ids)] * 2, device=device)
    start = torch.full((2, 1), up.hp.start_speech_token, device=device)
    with torch.inference_mode():
        # cfg_weight only switches on the zeroing of the second row's text embeddings.
        embeds, _ = up.prepare_input_embeds(
            t3_cond=cond, text_tokens=text, speech_tokens=start, cfg_weight=1.0
        )
        bos = up.speech_emb(start[:1]) + up.speech_pos_emb.get_fixed_embedding(0)
        rows = torch.cat((embeds, torch.cat((bos, bos))), dim=1)
    return rows[0], rows[1]


def upstream_logprobs(
    up: Any,
    rows: tuple[Tensor, Tensor],
    tokens: Sequence[int],
    cfg_weight: float,
    sampling: Sampling | None,
) -> Tensor:
    """Log-probabilities of each step along `tokens`, (len(tokens), V), float32.

    With `sampling` None, the raw CFG distribution (`log_softmax` of the combined
    logits); otherwise after upstream's processors with those values, so filtered
    tokens are `-inf`.
    """
    from tools.upstream_t3 import import_upstream_t3

    upstream = import_upstream_t3()
    device = up.speech_head.weight.device
    start_id = up.hp.start_speech_token
    history = torch.tensor([start_id, *tokens[:-1]], device=device)
    # Upstream embeds its k-th generated token (k = 0..) at speech position k + 1; the
    # start token closing the prompt is already in `rows`.
    fed = history[1:]
    speech = up.speech_emb(fed[None]) + up.speech_pos_emb.get_fixed_embedding(
        torch.arange(1, len(tokens), device=device)[None]
    )
    backend = upstream.Backend(
        config=up.cfg,
        llama=up.tfmr,
        speech_enc=up.speech_emb,
        speech_head=up.speech_head,
        alignment_stream_analyzer=None,
    )
    with torch.inference_mode():
        embeds = torch.stack([torch.cat((r.to(speech.dtype), speech[0])) for r in rows])
        out = backend(inputs_embeds=embeds, past_key_values=None, use_cache=False)
        start = rows[0].shape[0] - 1
        logits = out.logits[:, start : start + len(tokens)].float()
        cond, uncond = logits[0], logits[1]
        cfg = torch.as_tensor(cfg_weight, device=device, dtype=cond.dtype)
        combined = cond + cfg * (cond - uncond)
        if sampling is None:
            return torch.log_softmax(combined, dim=-1)
        module = upstream.module
        penalty = module.RepetitionPenaltyLogitsProcessor(penalty=sampling.repetition_penalty)
        min_p = module.MinPLogitsWarper(min_p=sampling.min_p)
        top_p = module.TopPLogitsWarper(top_p=sampling.top_p)
        steps = []
        for k in range(len(tokens)):
            ids = history[: k + 1][None]  # the start token and the tokens before step k
            step = penalty(ids, combined[k : k + 1].clone())
            if sampling.temperature != 1.0:
                step = step / sampling.temperature
            step = top_p(ids, min_p(ids, step))
            steps.append(torch.log_softmax(step, dim=-1))
        return torch.cat(steps)


def max_logprob_diff(engine: Sequence[Mapping[int, float]], reference: Tensor) -> tuple[float, int]:
    """Largest |engine - reference| over every returned log-probability, and mismatches.

    A mismatch is a token one side filtered (`-inf`) and the other kept: the two
    disagree on the sampling support, which no finite difference measures.
    """
    worst, mismatches = 0.0, 0
    for step, returned in enumerate(engine):
        for token, value in returned.items():
            ref = float(reference[step, token])
            if math.isinf(value) or math.isinf(ref):
                mismatches += int(math.isinf(value) != math.isinf(ref))
                continue
            worst = max(worst, abs(value - ref))
    return worst, mismatches


def dense(engine: Sequence[Mapping[int, float]], vocab: int) -> Tensor:
    """Full-vocabulary log-probabilities returned per step, as a (steps, V) tensor."""
    out = torch.full((len(engine), vocab), float("-inf"))
    for step, returned in enumerate(engine):
        ids = torch.tensor(list(returned.keys()), dtype=torch.long)
        out[step, ids] = torch.tensor(list(returned.values()), dtype=torch.float32)
    return out


def mean_kl(reference: Tensor, engine: Tensor) -> float:
    """Mean over steps of KL(reference || engine) in nats; both (steps, V) log-probs."""
    ref = reference.double()
    eng = engine.double().to(ref.device)
    p = ref.exp()
    terms = torch.where(p > 0, p * (ref - eng), torch.zeros_like(p))
    return float(terms.sum(-1).mean())


def agreeing_steps(reference: Tensor, tokens: Sequence[int], tie: float = 0.0) -> int:
    """Steps from the start where the engine's greedy token is the reference's argmax.

    With `tie` > 0 a step also agrees where the engine's token is within `tie` of the
    reference's best log-probability: a near-tie that rounding of either side may break
    either way (the greedy induction still holds within the tolerance).
    """
    best = reference.max(-1).values
    n = 0
    while n < len(tokens) and float(reference[n, tokens[n]]) >= float(best[n]) - tie:
        n += 1
    return n


def chi_square_p(counts: Mapping[int, int], reference: Tensor, per_bin: float = 25.0) -> float:
    """Goodness of fit of sampled token counts to the reference distribution (1-D log-probs).

    Random weights spread the sampling support over hundreds of tokens, far more than a
    few hundred draws can fill, so tokens are grouped: sorted by reference probability,
    they fill bins of about equal reference mass, each expecting at least `per_bin`
    draws (at least two bins). A token the reference filtered but the engine drew (a
    near-tie at the min_p or top_p edge) counts in the least likely bin.
    """
    from scipy.stats import chisquare

    n = sum(counts.values())
    probs = reference.double().exp().cpu()
    order = torch.argsort(probs, descending=True).tolist()
    bins = max(2, min(50, int(n // per_bin)))
    target = 1.0 / bins
    masses: list[float] = []
    members: list[list[int]] = []
    mass = 0.0
    current: list[int] = []
    for token in order:
        p = float(probs[token])
        if p <= 0:
            break
        current.append(token)
        mass += p
        if mass >= target and len(masses) < bins - 1:
            masses.append(mass)
            members.append(current)
            mass, current = 0.0, []
    if current:
        masses.append(mass)
        members.append(current)
    if len(masses) > 1 and masses[-1] * n < per_bin / 5:
        masses[-2] += masses.pop()
        members[-2] += members.pop()
    if len(masses) < 2:
        return 1.0  # one token carries all the mass: nothing to test
    observed = [sum(counts.get(t, 0) for t in group) for group in members]
    observed[-1] += n - sum(observed)  # draws outside the reference's support
    total = sum(masses)
    expected = [n * m / total for m in masses]
    return float(chisquare(observed, expected).pvalue)


def combined_p(p_values: Sequence[float]) -> float:
    """Fisher's combination of independent p-values."""
    from scipy.stats import combine_pvalues

    return float(combine_pvalues(list(p_values), method="fisher").pvalue)


def stall_s(arrivals: Sequence[tuple[float, float]]) -> float:
    """Total silence a listener hears inside one stream, in seconds.

    `arrivals` is (arrival time, seconds of audio in that piece) per piece, in order.
    Playback starts when the first piece arrives and plays continuously while audio
    is buffered; when a piece arrives after the buffer ran dry, playback resumes with
    it and the wait is a stall. The wait before the first audio is not a stall.
    """
    if not arrivals:
        return 0.0
    clock = arrivals[0][0]  # when the buffered audio runs out
    stall = 0.0
    for at, audio in arrivals:
        if at > clock:
            stall += at - clock
            clock = at
        clock += audio
    return stall


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between order statistics."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
