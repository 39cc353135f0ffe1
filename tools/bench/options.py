"""What one benchmark run measures, and the settings it serves with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LONG_TEXT = REPO_ROOT.parent / "shared" / "data" / "texts" / "long-en.txt"

SHORT_TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank."

# Quick mode shrinks the simulated costs tenfold so CI finishes in seconds; the
# cost model in use is written into the report either way.
_QUICK_COST_SCALE = 0.1


@dataclass(frozen=True)
class BenchOptions:
    """Knobs of one run; `quick()` is the CI smoke run."""

    out_dir: Path = Path("bench-out")
    long_text_path: Path = DEFAULT_LONG_TEXT
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    # Each closed-loop worker sends this many short requests, so a level runs in full waves.
    short_rounds: int = 4
    min_short_requests: int = 12
    long_rounds: int = 1
    ttfb_samples: int = 5
    capacity_calls: int = 6
    encode_audio_s: float = 20.0
    encode_repeats: int = 3
    response_format: str = "mp3"
    max_batch_size: int = 16
    cost_scale: float = 1.0
    num_cpus: int = 2
    settings: dict[str, Any] = field(default_factory=dict)
    quick: bool = False

    @classmethod
    def quick_run(cls, **overrides: Any) -> BenchOptions:
        base: dict[str, Any] = {
            "concurrency": (1, 4),
            "short_rounds": 1,
            "min_short_requests": 2,
            "ttfb_samples": 1,
            "capacity_calls": 2,
            "encode_audio_s": 2.0,
            "encode_repeats": 1,
            "cost_scale": _QUICK_COST_SCALE,
            "quick": True,
        }
        base.update(overrides)
        return cls(**base)

    def app_settings(self) -> dict[str, Any]:
        """Settings overrides by env var name, passed to `build_app` and to the local engine."""
        from chatterbox_serve.config import SimulatedEngineConfig

        sim = SimulatedEngineConfig.model_validate({})
        scaled = {
            "CHATTERBOX_SIM_BASE_S": sim.base_s * self.cost_scale,
            "CHATTERBOX_SIM_PER_ITEM_S": sim.per_item_s * self.cost_scale,
            "CHATTERBOX_SIM_PER_CHAR_S": sim.per_char_s * self.cost_scale,
        }
        return {"VLLM_MAX_BATCH_SIZE": self.max_batch_size, **scaled, **self.settings}
