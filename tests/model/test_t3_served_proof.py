"""The served GPU proof's reference side and statistics, on the CPU with the tiny checkpoint.

`tools/gpu/t3_vllm_proof.py` holds vLLM's numbers against `tools/gpu/t3_reference.py`
(upstream chatterbox-tts 0.1.7's own prompt rows, backbone, CFG and logits processors).
Here that reference is held against our own T3 and sampling chain (which the vLLM model
and sampler mirror), so a reference that drifted from upstream, or a comparison that
cannot fail, shows up in CI: each check also runs with a planted bug that must break
the proof's bound.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from chatterbox_serve.model.t3 import sampling as chain
from chatterbox_serve.model.t3.model import T3
from tests.model.conftest import build_upstream
from tests.model.proof_parts import GREEDY_WITHIN_BOUNDS
from tools.gpu import t3_reference as ref
from tools.gpu.t3_vllm_proof import KL_BOUND, STALL_P95_GOAL_S, TOLERANCE, report

pytestmark = pytest.mark.filterwarnings("ignore:.*sdp_kernel.*:FutureWarning")
STEPS = 12


@pytest.fixture(scope="module")
def upstream(multilingual_t3: T3, multilingual_dir: Path) -> Any:
    return build_upstream(multilingual_t3, multilingual_dir)


@pytest.fixture(scope="module")
def item(multilingual_t3: T3, upstream: Any) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(4)
    speaker = torch.randn(1, 256, generator=gen)
    prompt = torch.randint(0, 6561, (1, 150), generator=gen)
    text = [255, *torch.randint(1, 700, (18,), generator=gen).tolist(), 0]
    with torch.inference_mode():
        cond = multilingual_t3.conditioning(speaker, prompt, torch.tensor([0.6]))[0]
        ours = tuple(multilingual_t3.prefill_embeds(cond, text, u) for u in (False, True))
    return {
        "cond": cond,
        "text": text,
        "ours": ours,
        "upstream": ref.upstream_rows(upstream, speaker, prompt, 0.6, text),
        "tokens": torch.randint(0, 6561, (STEPS,), generator=gen).tolist(),
        "bare_start": multilingual_t3.speech_emb.weight.detach()[
            multilingual_t3.config.start_speech_token
        ],
    }


def _our_cfg_logits(
    t3: T3,
    rows: tuple[torch.Tensor, torch.Tensor],
    tokens: list[int],
    w: float,
    pos_offset: int = 1,
) -> torch.Tensor:
    """Our backbone teacher-forced along `tokens` (the k-th fed at speech position k + 1)."""
    fed = torch.tensor(tokens[:-1])
    speech = t3.embed_speech(fed, torch.arange(len(fed)) + pos_offset)
    embeds = torch.stack([torch.cat((r, speech)) for r in rows])
    n = embeds.shape[1]
    with torch.inference_mode():
        hidden = t3.tfmr(
            embeds,
            torch.arange(n).expand(2, n),
            t3.tfmr.new_cache(2, n),
            torch.ones(2, n, dtype=torch.bool),
        )
        start = rows[0].shape[0] - 1
        logits = t3.speech_head(hidden[:, start : start + len(tokens)]).float()
    return chain.combine_cfg(logits[0], logits[1], torch.full((len(tokens),), w))


def _our_processed(
    logits: torch.Tensor, tokens: list[int], s: ref.Sampling, start: int, planted: bool = False
) -> torch.Tensor:
    """Our chain; `planted` applies min_p before the temperature (an order bug)."""
    out = []
    one = torch.ones(1)
    for k in range(len(tokens)):
        seen = torch.zeros(1, logits.shape[-1], dtype=torch.bool)
        seen[0, [start, *tokens[:k]]] = True
        if planted:
            step = chain.apply_repetition_penalty(
                logits[k : k + 1], seen, one * s.repetition_penalty
            )
            step = chain.apply_min_p(step, one * s.min_p)
            step = chain.apply_top_p(
                chain.apply_temperature(step, one * s.temperature), one * s.top_p
            )
        else:
            step = chain.process_logits(
                logits[k : k + 1],
                seen,
                repetition_penalty=one * s.repetition_penalty,
                temperature=one * s.temperature,
                min_p=one * s.min_p,
                top_p=one * s.top_p,
            )
        out.append(torch.log_softmax(step, -1))
    return torch.cat(out)


def _as_returned(logprobs: torch.Tensor, top: int = 20) -> list[dict[int, float]]:
    """What vLLM returns per step: the top-`top` log-probabilities by token id."""
    values, ids = logprobs.topk(top, dim=-1)
    return [
        dict(zip(i.tolist(), v.tolist(), strict=True)) for i, v in zip(ids, values, strict=True)
    ]


def test_prompt_rows_match_upstream_and_a_planted_row_does_not(item: dict[str, Any]) -> None:
    (oc, ou), (uc, uu) = item["ours"], item["upstream"]
    assert oc.shape == uc.shape and ou.shape == uu.shape
    assert max(float((oc - uc).abs().max()), float((ou - uu).abs().max())) <= 1e-5
    # Planted: the unconditional branch keeps its text (CFG would then do nothing).
    assert float((oc - uu).abs().max()) > TOLERANCE
    # Planted: the closing start-of-speech row without its speech position.
    assert float((item["bare_start"] - uc[-1]).abs().max()) > TOLERANCE


def test_raw_reference_matches_our_backbone_and_planted_positions_break_the_bound(
    multilingual_t3: T3, upstream: Any, item: dict[str, Any]
) -> None:
    tokens = item["tokens"]
    theirs = ref.upstream_logprobs(upstream, item["upstream"], tokens, 0.5, None)
    ours = torch.log_softmax(_our_cfg_logits(multilingual_t3, item["ours"], tokens, 0.5), -1)
    diff, mismatches = ref.max_logprob_diff(_as_returned(ours), theirs)
    assert diff <= 1e-4 and mismatches == 0
    assert ref.mean_kl(theirs, ours) <= 1e-8
    assert ref.agreeing_steps(theirs, ours.argmax(-1).tolist()) == STEPS
    planted = torch.log_softmax(
        _our_cfg_logits(multilingual_t3, item["ours"], tokens, 0.5, pos_offset=0), -1
    )
    diff, _ = ref.max_logprob_diff(_as_returned(planted), theirs)
    assert diff > TOLERANCE


@pytest.mark.parametrize(
    "sampling", [ref.Sampling(0.8, 1.2, 0.05, 1.0), ref.Sampling(0.8, 2.0, 0.05, 0.9)]
)
def test_upstream_processors_match_our_chain_and_a_planted_order_breaks_it(
    multilingual_t3: T3, upstream: Any, item: dict[str, Any], sampling: ref.Sampling
) -> None:
    tokens = item["tokens"]
    # A token that repeats, so the penalty acts on generated tokens as well as the start.
    tokens = [*tokens[:4], tokens[1], *tokens[5:]]
    start = multilingual_t3.config.start_speech_token
    theirs = ref.upstream_logprobs(upstream, item["upstream"], tokens, 0.7, sampling)
    logits = _our_cfg_logits(multilingual_t3, item["ours"], tokens, 0.7)
    ours = _our_processed(logits, tokens, sampling, start)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    diff, mismatches = ref.max_logprob_diff(_as_returned(ours), theirs)
    assert diff <= 1e-4 and mismatches == 0
    planted = _our_processed(logits, tokens, sampling, start, planted=True)
    diff, mismatches = ref.max_logprob_diff(_as_returned(planted), theirs)
    assert diff > TOLERANCE or mismatches > 0


def test_greedy_agreement_stops_at_the_first_disagreement_unless_a_near_tie() -> None:
    reference = torch.log_softmax(torch.tensor([[3.0, 1.0, 0.0], [1.0, 1.0005, 0.0]] * 2), -1)
    assert ref.agreeing_steps(reference, [0, 1, 0, 1]) == 4
    assert ref.agreeing_steps(reference, [0, 0, 0, 1]) == 1
    assert ref.agreeing_steps(reference, [0, 0, 0, 1], tie=1e-3) == 4
    assert ref.agreeing_steps(reference, [0, 2, 0, 1], tie=1e-3) == 1


def test_support_mismatch_is_counted_not_hidden() -> None:
    reference = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0]]), -1)
    reference[0, 2] = float("-inf")
    diff, mismatches = ref.max_logprob_diff([{0: float(reference[0, 0]), 2: -3.0}], reference)
    assert diff == 0.0 and mismatches == 1


def test_kl_of_identical_and_shifted_distributions() -> None:
    logp = torch.log_softmax(torch.randn(4, 50, generator=torch.Generator().manual_seed(0)), -1)
    assert ref.mean_kl(logp, logp) == pytest.approx(0.0, abs=1e-12)
    hotter = torch.log_softmax(logp / 0.8, -1)
    assert ref.mean_kl(logp, hotter) > KL_BOUND
    assert ref.mean_kl(logp, ref.dense(_as_returned(logp, 50), 50)) == pytest.approx(0, abs=1e-9)


def test_chi_square_accepts_draws_from_the_reference_and_rejects_a_planted_temperature() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(300, generator=gen) * 1.5
    reference = torch.log_softmax(chain.apply_min_p(logits[None] / 0.8, torch.tensor([0.05])), -1)[
        0
    ]
    good = Counter(torch.multinomial(reference.exp(), 500, True, generator=gen).tolist())
    assert ref.chi_square_p(good, reference) > 1e-3
    planted = torch.log_softmax(chain.apply_min_p(logits[None], torch.tensor([0.05])), -1)[0]
    bad = Counter(torch.multinomial(planted.exp(), 500, True, generator=gen).tolist())
    assert ref.chi_square_p(bad, reference) < 1e-3
    p = ref.combined_p([ref.chi_square_p(good, reference), 0.5])
    assert 1e-3 < p <= 1


def test_chi_square_on_a_wide_support_like_random_weights() -> None:
    """Random full-size weights keep ~1,000 tokens after min_p: far more than 500 draws."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(8000, generator=gen)
    reference = torch.log_softmax(chain.apply_min_p(logits[None] / 0.8, torch.tensor([0.05])), -1)[
        0
    ]
    assert int((reference > float("-inf")).sum()) > 500
    p_values = []
    for seed in range(5):
        draws = torch.multinomial(reference.exp(), 500, True, generator=gen.manual_seed(seed))
        p_values.append(ref.chi_square_p(Counter(draws.tolist()), reference))
    assert all(p == p for p in p_values) and ref.combined_p(p_values) > 1e-3
    planted = torch.log_softmax(chain.apply_min_p(logits[None], torch.tensor([0.05])), -1)[0]
    bad = Counter(torch.multinomial(planted.exp(), 500, True, generator=gen).tolist())
    assert ref.chi_square_p(bad, reference) < 1e-3


def test_stall_counts_only_gaps_after_playback_started() -> None:
    assert ref.stall_s([]) == 0.0
    # First audio at 1 s (not a stall); 2 s of audio covers the piece at 2.5 s.
    assert ref.stall_s([(1.0, 2.0), (2.5, 1.0), (3.9, 0.5)]) == 0.0
    # Buffer runs dry at 3 s; the next piece comes at 3.4 s: 0.4 s of silence.
    assert ref.stall_s([(1.0, 2.0), (3.4, 1.0)]) == pytest.approx(0.4)
    # Two gaps add up; audio left over from early pieces absorbs later lateness.
    arrivals = [(0.5, 0.5), (1.2, 2.0), (3.0, 0.2), (3.7, 1.0)]
    assert ref.stall_s(arrivals) == pytest.approx(0.2 + 0.3)
    assert ref.percentile([0.1, 0.2, 0.3, 0.4, 10.0], 50) == 0.3
    assert ref.percentile([0.0, 1.0], 95) == pytest.approx(0.95)


def _parts(tmp: Path, planted_kl: float, stall: float, multi_stall: float = 0.1) -> Path:
    import json

    summary = dict(GREEDY_WITHIN_BOUNDS)
    parts = {
        "exact": {
            "vllm": "0.26.0",
            "device": "test",
            "upstream_prompt_rows": 1e-6,
            "greedy": summary,
            "sampling": {"max_abs_logprob_diff": 2e-5, "support_mismatches": 0},
            "planted": {"bug": {**summary, "max_mean_kl": planted_kl, "max_abs_logprob_diff": 1}},
            "preemption": {"identical": True, "preemptions": 3},
        },
        "served": {
            "greedy": {**summary, "max_mean_kl": 4e-4, "min_greedy_agreeing_steps": 9},
            "chi_square": {"combined_p_value": 0.4},
            "stops": {"all_at_stop_token": True, "items_with_token_2_before_the_end": 20},
        },
        "stream": {
            "stall_p95_s": stall,
            "stall_p50_s": 0.0,
            "multi_chunk": {"stall_p95_s": multi_stall, "stall_p50_s": 0.0},
        },
        "cjk": {"all_200": True},
    }
    for name, body in parts.items():
        (tmp / f"{name}.json").write_text(json.dumps(body))
    return tmp


def test_report_passes_only_when_every_check_does(tmp_path: Path) -> None:
    good = report(_parts(tmp_path, planted_kl=0.5, stall=0.1))
    assert good["passed"] and all(good["checks"].values())
    assert good["bf16_graphs"]["greedy_agreeing_steps_min"] == 9
    # A planted bug under the KL bound means the bound proves nothing.
    assert not report(_parts(tmp_path, planted_kl=KL_BOUND / 2, stall=0.1))["passed"]
    assert not report(_parts(tmp_path, planted_kl=0.5, stall=STALL_P95_GOAL_S))["passed"]
    # Several-chunk streams are judged on their own: one-chunk streams passing is not enough.
    gappy = report(_parts(tmp_path, planted_kl=0.5, stall=0.1, multi_stall=1.2))
    assert not gappy["passed"] and not gappy["checks"]["stream_stall_multi_chunk"]
    assert gappy["stream_stall_multi_chunk_s"]["stall_p95_s"] == 1.2
    (tmp_path / "cjk.json").unlink()
    assert not report(tmp_path)["passed"]


def test_proof_setup_builds_served_prompts_and_upstream_rows_on_the_cpu(
    multilingual_dir: Path,
) -> None:
    """The GPU proof's own item building, prompts and parameters, before a GPU run."""
    from tools.gpu import t3_vllm_proof as proof

    setup = proof.Setup(multilingual_dir, device="cpu")
    assert len(setup.items) == 9 and len({i["cfg_weight"] for i in setup.items}) >= 6
    for item in setup.items:
        for ours, up in (("rows_c", "up_c"), ("rows_u", "up_u")):
            assert float((item[ours] - item[up]).abs().max()) <= 1e-5
    item = setup.items[4]
    rows = int(item["rows_c"].shape[0])
    prompt = setup.prompt(item, forced=[5, 6])
    assert prompt["prompt_token_ids"] == [setup.start] * rows + [5, 6]
    data = prompt["multi_modal_data"]["image"]
    assert tuple(data["t3_prefix"].shape) == (rows, 2 * setup.t3.config.hidden_size)
    assert float(data["t3_cfg_weight"][0]) == item["cfg_weight"]
    ref_lp = setup.reference(item, [1, 2, 3], proof._sampling(1))
    assert ref_lp.shape == (3, setup.vocab) and torch.isinf(ref_lp).any()
    params = proof._sampled_params(setup)
    assert {p.repetition_penalty for p in params} == {1.2, 2.0}
    assert {p.top_p for p in params} == {0.9, 0.95, 1.0}
    assert all(p.logprobs == proof.TOP and p.seed is not None for p in params)


def test_cjk_requests_are_2000_characters_and_get_the_plans_largest_budget() -> None:
    from tools.gpu.t3_vllm_proof import cjk_texts, largest_budget

    texts = cjk_texts(Path(__file__).parents[3] / "shared/data/texts/multilingual.json")
    assert set(texts) == {"zh", "ja"} and {len(t) for t in texts.values()} == {2000}
    assert largest_budget(texts) >= largest_budget({"zh": texts["zh"][:300]}) > 0
