"""The run's outputs: a results table on stdout, `bench.json` and `bench.png`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def format_table(report: dict[str, Any]) -> str:
    """Markdown tables, so the same text goes into docs/PERFORMANCE.md."""
    meta, engine = report["meta"], report["engine"]
    cm = meta["cost_model"]
    lines = [
        f"Machine: {meta['machine']}; "
        f"load average at start {meta['load_average_at_start'][0]:.2f}.",
        f"Cost model (simulated engine): call_s = {cm['base_s']:g} + {cm['per_item_s']:g} * items"
        f" + {cm['per_char_s']:g} * chars; {cm['chars_per_second']:g} chars per audio second;"
        f" max batch {engine['capacity']['short']['batch_size']}.",
        "",
        "| workload | c | req | err | audio-s/s | / capacity | p50 s | p95 s | p99 s | items/call"
        " | busy | ingress ms | queue ms | engine ms | encode ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, levels in report["served"].items():
        cap = engine["capacity"][name]["audio_s_per_s"]
        lines.append(
            f"| {name} engine alone | - | - | - | {cap:.1f} | 1.00 | | | | "
            f"{engine['capacity'][name]['batch_size']} | 1.00 | | | | |"
        )
        lines += [_row(f"{name}, {lv['response_format']}", lv) for lv in levels]
        base = report["baseline"][name]
        lines.append(
            f"| {name} baseline (1 at a time) | 1 | {base['requests']} | 0 | "
            f"{base['audio_s_per_s']:.1f} | {base['audio_s_per_s'] / cap:.2f} | "
            f"{base['latency']['p50_s']:.3f} | {base['latency']['p95_s']:.3f} | "
            f"{base['latency']['p99_s']:.3f} | {base['mean_batch']:.1f} | | | | | |"
        )
    lines += [_row("short, pcm (control)", lv) for lv in report["control"]["short"]]
    lt = report["long_text"]
    lines += [
        "",
        f"Long text ({lt['characters']} chars, {lt['pieces']} requests, {lt['chunks']} chunks): "
        f"baseline {lt['baseline_wall_s']:.2f} s, served {lt['served_wall_s']:.2f} s, "
        f"speed-up {lt['speedup']:.1f}x ({report['meta']['options']['response_format']}); as pcm: "
        f"baseline {lt['pcm_baseline_wall_s']:.2f} s, served {lt['pcm_served_wall_s']:.2f} s, "
        f"speed-up {lt['pcm_speedup']:.1f}x.",
        "",
        "| time to first audio, c=1 | first-chunk engine s | audio TTFB s | sse TTFB s |",
        "|---|---|---|---|",
    ]
    for name, t in report["ttfb"].items():
        lines.append(
            f"| {name} | {t['first_chunk_engine_s']:.3f} | "
            f"{t['audio']['ttfb_p50_s']:.3f} | {t['sse']['ttfb_p50_s']:.3f} |"
        )
    lines += ["", "| format | audio s per CPU-second | bytes for the sample |", "|---|---|---|"]
    for fmt, e in report["encoding"].items():
        lines.append(f"| {fmt} | {e['realtime_per_cpu_s']:.0f} | {e['bytes']} |")
    lines += ["", "| target | value | target | met |", "|---|---|---|---|"]
    for t in report["targets"]:
        lines.append(
            f"| {t['name']} | {t['value']:.2f} {t['unit']} | {t['target']} | "
            f"{'yes' if t['met'] else 'NO'} |"
        )
    return "\n".join(lines)


def _row(label: str, lv: dict[str, Any]) -> str:
    lat, st, b = lv["latency"], lv["stages"], lv["batching"]
    return (
        f"| {label} | {lv['concurrency']} | {lv['requests']} | {lv['errors']} | "
        f"{lv['throughput_audio_s_per_s']:.1f} | {lv['ratio_to_engine_capacity']:.2f} | "
        f"{lat['p50_s']:.3f} | {lat['p95_s']:.3f} | {lat['p99_s']:.3f} | "
        f"{b['mean_items_per_call']:.1f} | {b['busy_fraction']:.2f} | "
        f"{st['ingress_s'] * 1000:.1f} | {st['queue_s'] * 1000:.1f} | "
        f"{st['engine_s'] * 1000:.1f} | {st['encode_s'] * 1000:.1f} |"
    )


def write_json(report: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bench.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def write_plot(report: dict[str, Any], out_dir: Path) -> Path:
    """Throughput and p50/p95 latency against concurrency, and time to first audio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    cap = report["engine"]["capacity"]
    colors = {"short": "tab:blue", "long": "tab:orange"}
    ax = axes[0]
    for name, levels in report["served"].items():
        cs = [lv["concurrency"] for lv in levels]
        ax.plot(
            cs,
            [lv["throughput_audio_s_per_s"] for lv in levels],
            "o-",
            color=colors[name],
            label=f"{name}: served",
        )
        ax.axhline(
            cap[name]["audio_s_per_s"], color=colors[name], ls="--", label=f"{name}: engine alone"
        )
        ax.axhline(
            report["baseline"][name]["audio_s_per_s"],
            color=colors[name],
            ls=":",
            label=f"{name}: one at a time",
        )
    pcm = report["control"]["short"]
    ax.plot(
        [lv["concurrency"] for lv in pcm],
        [lv["throughput_audio_s_per_s"] for lv in pcm],
        "x",
        color=colors["short"],
        ms=9,
        label="short: served as pcm (no encoding)",
    )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent clients",
        ylabel="audio seconds per second",
        title="Throughput",
    )
    ax.legend(fontsize=7)
    ax = axes[1]
    for name, levels in report["served"].items():
        cs = [lv["concurrency"] for lv in levels]
        ax.plot(
            cs,
            [lv["latency"]["p50_s"] for lv in levels],
            "o-",
            color=colors[name],
            label=f"{name} p50",
        )
        ax.plot(
            cs,
            [lv["latency"]["p95_s"] for lv in levels],
            "s--",
            color=colors[name],
            label=f"{name} p95",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent clients",
        ylabel="seconds, end to end",
        title="Latency",
    )
    concurrency = [lv["concurrency"] for lv in report["served"]["short"]]
    for axis in axes[:2]:
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xticks(concurrency)
    ax.legend(fontsize=7)
    ax = axes[2]
    names = list(report["ttfb"])
    width = 0.27
    for i, (key, label) in enumerate(
        (
            ("first_chunk_engine_s", "first chunk, engine alone"),
            ("audio", "stream_format=audio"),
            ("sse", "stream_format=sse"),
        )
    ):
        values = [
            report["ttfb"][n][key]
            if key == "first_chunk_engine_s"
            else report["ttfb"][n][key]["ttfb_p50_s"]
            for n in names
        ]
        ax.bar([j + (i - 1) * width for j in range(len(names))], values, width, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel="seconds", title="Time to first audio byte, c=1")
    ax.legend(fontsize=7)
    cm = report["meta"]["cost_model"]
    fig.suptitle(
        f"chatterbox-serve, simulated engine (call = {cm['base_s']:g} s"
        f" + {cm['per_item_s']:g} s/item"
        f" + {cm['per_char_s']:g} s/char), {report['meta']['machine']}",
        fontsize=9,
    )
    fig.tight_layout()
    path = out_dir / "bench.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
