"""What the GPU proofs of the two T3s share (`t3_vllm_proof`, `turbo_proof`).

Each proof holds a `Setup` (the items, their served prompts, a reference) and its own
checks; the machinery both run lives here once: the engine, the float32 and served
engine arguments, greedy decoding against a reference, the planted-bug loop, the stop
check with the served `SamplingParams`, the same sampled batch on a KV cache that forces
preemption, the seeded-sampling chi-square at fixed contexts, the report's common figures
and the command line.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

# IEEE float32 attention. TRITON_ATTN's float32 dot runs in TF32, which moved
# log-probabilities by 5e-3 on the H200 (benchmarks/results/t3-equivalence-h200-triton.json).
BACKEND = "FLEX_ATTENTION"
FLOAT32_ENGINE = f"float32 (both sides), TF32 off; vLLM eager, {BACKEND}"
SPEECH_TOKEN_TWO = 2  # an ordinary S3 code that once ended requests (transformers' eos)
STOP_REQUESTS = 64
KV_BLOCK = 16  # tokens per KV-cache block of the preemption engine
# Seeded sampling must be indistinguishable from the reference's distribution at fixed
# contexts: Fisher's combined p-value over the contexts above 1e-3 (a correct engine
# fails this one time in a thousand).
CHI_SQUARE_P_BOUND = 1e-3
CHI_SQUARE_DRAWS, CHI_SQUARE_HISTORY = 500, 24  # draws per context, tokens of its history
# The sampling values a result records (`fixed_length` reads them), in this order.
SAMPLING_FIELDS = ("temperature", "repetition_penalty", "min_p", "top_p", "top_k")

Save = Callable[[dict[str, Any]], None]


class ProofSetup(Protocol):
    """What the shared steps read of a proof's `Setup`."""

    model_dir: Path
    vocab: int
    stop: int
    items: list[dict[str, Any]]

    def prompt(self, item: dict[str, Any], forced: list[int] | None = None) -> dict[str, Any]: ...


Greedy = Callable[[Any, Any], list[dict[str, Any]]]


def float32_only() -> None:
    """TF32 off, so float32 on the GPU is IEEE float32 on both sides."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def served_prompt(
    rows: Any, cfg_weight: float, start: int, forced: list[int] | None = None
) -> dict[str, Any]:
    """The served prompt (`engine.prompt_for`) of `rows`, optionally teacher-forced."""
    from chatterbox_serve.engines.vllm.engine import prompt_for

    prompt = prompt_for(rows.float().cpu(), cfg_weight, start)
    prompt["prompt_token_ids"] = [*prompt["prompt_token_ids"], *(forced or [])]
    # A given id spares vLLM hashing the prefix tensor.
    prompt["multi_modal_uuids"] = {"image": [uuid.uuid4().hex]}
    return prompt


def build_llm(setup: ProofSetup, **kwargs: Any) -> Any:
    """A vLLM `LLM` on the setup's model folder; `kwargs` over the proofs' defaults."""
    from vllm import LLM

    base: dict[str, Any] = {
        "model": str(setup.model_dir),
        "skip_tokenizer_init": True,
        "max_model_len": 1024,
        "max_num_seqs": 64,
        "gpu_memory_utilization": 0.2,
        "enable_prefix_caching": False,
        "mm_processor_cache_gb": 0,
        "limit_mm_per_prompt": {"image": 1},
        "max_logprobs": setup.vocab,
    }
    return LLM(**{**base, **kwargs})


def float32_llm(setup: ProofSetup, **kwargs: Any) -> Any:
    """The `exact` engine: float32, eager, FlexAttention."""
    return build_llm(
        setup, dtype="float32", enforce_eager=True, attention_backend=BACKEND, **kwargs
    )


def fixed_length(values: Any, steps: int, seed: int, logprobs: int | None = None) -> Any:
    """vLLM's `SamplingParams` at `values`' sampling settings, seeded, decoding exactly
    `steps` tokens (the stop token kept, not ending the request), with `logprobs` of each.

    `values` has `temperature`, `top_p`, `min_p`, `repetition_penalty` and, for Turbo,
    `top_k` (without it top_k is off, vLLM's 0).
    """
    from vllm import SamplingParams

    return SamplingParams(
        temperature=values.temperature,
        top_k=getattr(values, "top_k", 0),
        top_p=values.top_p,
        min_p=values.min_p,
        repetition_penalty=values.repetition_penalty,
        seed=seed,
        max_tokens=steps,
        logprobs=logprobs,
        ignore_eos=True,
        detokenize=False,
    )


def decode(llm: Any, setup: ProofSetup, params: Sequence[Any]) -> list[list[int]]:
    """Every item decoded with its `params`: the tokens of each."""
    outs = llm.generate([setup.prompt(i) for i in setup.items], list(params), use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def prompt_rows(setup: ProofSetup) -> int:
    """The longest served prompt of the setup's items, in rows (one token id each)."""
    return max(len(setup.prompt(i)["prompt_token_ids"]) for i in setup.items)


def logprob_steps(logprobs: Any) -> list[dict[int, float]]:
    return [{t: lp.logprob for t, lp in step.items()} for step in logprobs]


def greedy(
    llm: Any,
    setup: ProofSetup,
    reference: Callable[[dict[str, Any], list[int]], Any],
    keys: Sequence[str],
    steps: int,
    tolerance: float,
) -> list[dict[str, Any]]:
    """Greedy decoding with every log-probability, against `reference(item, tokens)`.

    `reference` gives the raw log-probabilities along `tokens`; each item's result starts
    with the item's `keys`.
    """
    from vllm import SamplingParams

    from tools.gpu.t3_reference import agreeing_steps, dense, max_logprob_diff, mean_kl

    params = SamplingParams(
        temperature=0.0, max_tokens=steps, logprobs=setup.vocab, ignore_eos=True, detokenize=False
    )
    outs = llm.generate([setup.prompt(i) for i in setup.items], params, use_tqdm=False)
    results = []
    for item, out in zip(setup.items, outs, strict=True):
        comp = out.outputs[0]
        tokens = list(comp.token_ids)
        lps = logprob_steps(comp.logprobs)
        ref = reference(item, tokens).cpu()
        diff, mismatches = max_logprob_diff(lps, ref)
        results.append(
            {
                **{k: item[k] for k in keys},
                "tokens": tokens,
                "max_abs_logprob_diff": diff,
                "support_mismatches": mismatches,
                "mean_kl": mean_kl(ref, dense(lps, setup.vocab)),
                "greedy_agreeing_steps": agreeing_steps(ref, tokens),
                "greedy_agreeing_steps_ties_within_tolerance": agreeing_steps(
                    ref, tokens, tie=tolerance
                ),
            }
        )
    return results


def summary(per_item: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "max_abs_logprob_diff": max(i["max_abs_logprob_diff"] for i in per_item),
        "max_mean_kl": max(i["mean_kl"] for i in per_item),
        "min_greedy_agreeing_steps": min(i["greedy_agreeing_steps"] for i in per_item),
        "median_greedy_agreeing_steps": statistics.median(
            i["greedy_agreeing_steps"] for i in per_item
        ),
        "min_greedy_agreeing_steps_ties_within_tolerance": min(
            i["greedy_agreeing_steps_ties_within_tolerance"] for i in per_item
        ),
    }


def planted(
    llm: Any,
    setup: ProofSetup,
    bugs: Sequence[str],
    plant: Callable[..., None],
    run_greedy: Greedy,
    out: dict[str, Any],
    save: Save,
) -> None:
    """Greedy with each planted bug switched on in turn, into `out["planted"]`; then none."""
    out["planted"] = {}
    for bug in bugs:
        llm.apply_model(functools.partial(plant, bug=bug))
        out["planted"][bug] = summary(run_greedy(llm, setup))
        save(out)
    llm.apply_model(functools.partial(plant, bug=None))


def versions() -> dict[str, Any]:
    import torch
    import vllm

    return {
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
    }


def served_llm(setup: ProofSetup) -> tuple[Any, dict[str, Any]]:
    """The served engine (`engine.engine_kwargs`: bf16, CUDA graphs) and its arguments."""
    from chatterbox_serve.config import load_settings
    from chatterbox_serve.engines.vllm.engine import engine_kwargs

    kwargs = {
        **engine_kwargs(load_settings(os.environ, None), setup.model_dir),
        "gpu_memory_utilization": 0.3,
    }
    if kwargs["enforce_eager"]:
        raise SystemExit("the served configuration compiles: set VLLM_COMPILE=true")
    return build_llm(setup, **kwargs), {k: v for k, v in kwargs.items() if k != "model"}


def served(
    setup: ProofSetup,
    save: Save,
    run_greedy: Greedy,
    stops: Callable[[Any, Any], dict[str, Any]],
) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """The served engine (`served_llm`): greedy, then stops.

    Returns the engine, the result so far and the greedy items, for a proof's further steps.
    """
    llm, engine = served_llm(setup)
    out: dict[str, Any] = {**versions(), "engine": engine}
    items = run_greedy(llm, setup)
    out["greedy"] = {**summary(items), "items": items}
    save(out)
    out["stops"] = stops(llm, setup)
    save(out)
    return llm, out, items


def preemption(
    setup: ProofSetup,
    params: Sequence[Any],
    expected: list[list[int]],
    kv_blocks: int,
    build: Callable[..., Any] = float32_llm,
) -> dict[str, Any]:
    """The items decoded with `params` again, on an engine whose KV cache holds `kv_blocks`
    blocks: the same tokens as `expected` (decoded with room to spare), and vLLM's count
    of the preemptions it took.

    `build(setup, **kwargs)` makes the engine (float32, eager); `kv_blocks` must hold the
    longest item but not a few of them at once, so vLLM preempts and recomputes.
    """
    longest = prompt_rows(setup) + max(p.max_tokens for p in params)
    llm = build(
        setup,
        max_model_len=longest,
        num_gpu_blocks_override=kv_blocks,
        block_size=KV_BLOCK,
        disable_log_stats=False,
    )
    tokens = decode(llm, setup, params)
    preemptions = sum(
        getattr(m, "value", 0) for m in llm.get_metrics() if m.name == "vllm:num_preemptions"
    )
    del llm
    identical = tokens == expected
    print("preemption:", preemptions, "identical:", identical, flush=True)
    return {"kv_blocks": kv_blocks, "preemptions": preemptions, "identical": identical}


def chi_square(
    llm: Any,
    setup: ProofSetup,
    reference: Callable[[dict[str, Any], list[int]], Any],
    values: Any,
    histories: Sequence[Sequence[int]],
    keys: Sequence[str],
    draws: int = CHI_SQUARE_DRAWS,
    history: int = CHI_SQUARE_HISTORY,
) -> dict[str, Any]:
    """Seeded draws of the next token at fixed contexts against the reference's distribution.

    Context c is item c teacher-forced along the first `history` tokens of `histories[c]`;
    `draws` requests at `values`' sampling settings (`fixed_length`), seeded apart, each
    draw one token. `reference(item, tokens)` gives the processed log-probabilities
    (steps, V) along `tokens`; the last step is the one drawn. Each context's result
    starts with the item's `keys`.
    """
    from tools.gpu.t3_reference import chi_square_p, combined_p

    contexts = []
    for c, tokens in enumerate(histories):
        item = setup.items[c]
        forced = list(tokens[:history])
        ref = reference(item, [*forced, 0])[-1].cpu()
        prompts = [setup.prompt(item, forced=forced) for _ in range(draws)]
        params = [fixed_length(values, 1, 10_000 * c + k) for k in range(draws)]
        outs = llm.generate(prompts, params, use_tqdm=False)
        counts = Counter(int(o.outputs[0].token_ids[0]) for o in outs)
        p = chi_square_p(counts, ref)
        support = int((ref > float("-inf")).sum())
        contexts.append({**{k: item[k] for k in keys}, "support": support, "p_value": p})
        print("chi-square context", c, contexts[-1], flush=True)
    return {
        "draws_per_context": draws,
        "history_tokens": history,
        "sampling": {k: getattr(values, k) for k in SAMPLING_FIELDS if hasattr(values, k)},
        "contexts": contexts,
        "combined_p_value": combined_p([c["p_value"] for c in contexts]),
    }


def stops(
    llm: Any,
    setup: ProofSetup,
    values: Callable[[int, dict[str, Any]], Any],
    logit_bias: dict[int, float],
) -> dict[str, Any]:
    """64 requests with the served `SamplingParams`: each must end at the stop token only.

    `values(k, item)` gives request k's sampling values; `logit_bias` makes speech token 2
    and the stop token frequent enough to be seen on random weights.
    """
    from chatterbox_serve.engines.vllm.engine import sampling_params_for

    prompts, params = [], []
    for k in range(STOP_REQUESTS):
        item = setup.items[k % len(setup.items)]
        p = sampling_params_for(values(k, item), 1000, setup.stop, forced=False)
        p.logit_bias = logit_bias
        prompts.append(setup.prompt(item))
        params.append(p)
    outs = llm.generate(prompts, params, use_tqdm=False)
    finish: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    lengths: list[int] = []
    with_two = 0
    for out in outs:
        comp = out.outputs[0]
        toks = list(comp.token_ids)
        finish[str(comp.finish_reason)] += 1
        reasons[str(comp.stop_reason)] += 1
        lengths.append(len(toks))
        with_two += int(SPEECH_TOKEN_TWO in toks[:-1])
    all_at_stop = finish == Counter({"stop": STOP_REQUESTS}) and reasons == Counter(
        {str(setup.stop): STOP_REQUESTS}
    )
    print("stops:", dict(finish), dict(reasons), with_two, flush=True)
    return {
        "requests": STOP_REQUESTS,
        "finish_reasons": dict(finish),
        "stop_reasons": dict(reasons),
        "items_with_token_2_before_the_end": with_two,
        "length_min_median_max": [min(lengths), statistics.median(lengths), max(lengths)],
        "all_at_stop_token": all_at_stop,
    }


def elapsed(began: float) -> float:
    return round(time.perf_counter() - began, 1)


# ---- the report --------------------------------------------------------------------------


def parts_reader(parts: Path) -> Callable[[str], dict[str, Any]]:
    """`part(name)`: the saved `parts/<name>.json`, or {} where that part did not run."""

    def part(name: str) -> dict[str, Any]:
        path = parts / f"{name}.json"
        loaded: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        return loaded

    return part


def planted_report(
    ex: dict[str, Any], tolerance: float, kl_bound: float | None = None
) -> dict[str, Any]:
    """Per planted bug its figures and the bounds it crosses (the KL bound where given)."""
    return {
        bug: {
            "max_mean_kl": v["max_mean_kl"],
            "max_abs_logprob_diff": v["max_abs_logprob_diff"],
            **({} if kl_bound is None else {"over_kl_bound": v["max_mean_kl"] > kl_bound}),
            "over_tolerance": v["max_abs_logprob_diff"] > tolerance,
        }
        for bug, v in ex.get("planted", {}).items()
    }


def float32_greedy_passes(greedy: dict[str, Any], tolerance: float, steps: int) -> bool:
    return bool(
        greedy.get("max_abs_logprob_diff", 1.0) <= tolerance
        and greedy.get("min_greedy_agreeing_steps_ties_within_tolerance", 0) == steps
    )


def stops_pass(stops: dict[str, Any]) -> bool:
    return (
        bool(stops.get("all_at_stop_token"))
        and stops.get("items_with_token_2_before_the_end", 0) > 0
    )


def preemption_passes(result: dict[str, Any]) -> bool:
    """The preempted decoding gave the same tokens, and vLLM did preempt."""
    return bool(result.get("identical")) and result.get("preemptions", 0) > 0


def chi_square_passes(result: dict[str, Any]) -> bool:
    return (result.get("combined_p_value") or 0.0) >= CHI_SQUARE_P_BOUND


def bf16_figures(sv: dict[str, Any], steps: int, kl_bound: float) -> dict[str, Any]:
    """The served part's greedy figures against the float32 reference."""
    greedy = sv.get("greedy", {})
    return {
        "engine": sv.get("engine"),
        "greedy_agreeing_steps_min": greedy.get("min_greedy_agreeing_steps"),
        "greedy_agreeing_steps_median": greedy.get("median_greedy_agreeing_steps"),
        "steps": steps,
        "mean_kl_per_step_max_item": greedy.get("max_mean_kl"),
        "kl_bound": kl_bound,
    }


def versions_of(*parts: dict[str, Any]) -> dict[str, Any]:
    """vLLM, torch and the device, from the first part that saved each."""
    return {k: next((p[k] for p in parts if p.get(k)), None) for k in ("vllm", "torch", "device")}


def brief(value: Any) -> Any:
    """Scalars of a result, nested dicts kept, per-item lists dropped (for the log)."""
    if isinstance(value, dict):
        return {k: brief(v) for k, v in value.items() if not isinstance(v, list)}
    return value


def main(
    parser: argparse.ArgumentParser,
    report: Callable[[Path], dict[str, Any]],
    parts: dict[str, Callable[[argparse.Namespace, Save], object]],
) -> None:
    """Runs the part named on the command line (`report` joins the saved parts into --out).

    `parser` declares `part`, `--parts` and `--out`; each part gets the arguments and a
    `save(result)` that writes `<parts>/<part>.json`.
    """
    args = parser.parse_args()
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # apply_model's closure
    args.parts.mkdir(parents=True, exist_ok=True)
    if args.part == "report":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report(args.parts), indent=2) + "\n")
        print(json.dumps(json.loads(args.out.read_text())["checks"], indent=1))
        return
    parts[args.part](args, saver(args.parts / f"{args.part}.json"))


def saver(path: Path) -> Save:
    """A `save(result)` that writes `result` to `path` (whole, each time) and logs its gist."""

    def save(result: dict[str, Any]) -> None:
        path.write_text(json.dumps(result, indent=2))
        print("saved", json.dumps(brief(result))[:1500], flush=True)

    return save
