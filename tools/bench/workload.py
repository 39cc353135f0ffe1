"""The texts a run sends: one short sentence, and a long text split as a client must split it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chatterbox_serve.config import Settings
from chatterbox_serve.text.chunking import split_text
from tools.bench.options import SHORT_TEXT


@dataclass(frozen=True)
class Workload:
    """Request texts of one kind, and the engine chunks the pipeline will make of them."""

    name: str
    requests: tuple[str, ...]
    chunks: tuple[str, ...]

    def text_for(self, index: int) -> str:
        return self.requests[index % len(self.requests)]


def build_workloads(settings: Settings, long_text_path: Path) -> dict[str, Workload]:
    """`short`: one sentence. `long`: the long text cut at `MAX_TOTAL_LENGTH`, as a client must."""
    c = settings.chunking
    long_text = long_text_path.read_text(encoding="utf-8")
    pieces = tuple(split_text(long_text, c.max_total_length))
    return {
        "short": Workload(
            "short", (SHORT_TEXT,), tuple(split_text(SHORT_TEXT, c.max_chunk_length))
        ),
        "long": Workload(
            "long",
            pieces,
            tuple(chunk for piece in pieces for chunk in split_text(piece, c.max_chunk_length)),
        ),
    }
