"""`BatchRecorder`: counts engine calls, their sizes and busy time, for tests and benchmarks."""

from __future__ import annotations

import collections
import time
from typing import Any


class BatchRecorder:
    """Counts engine calls, items per call and busy time, for tests and benchmarks."""

    def __init__(self, keep: int = 10_000) -> None:
        self.started = time.monotonic()
        self.calls = 0
        self.items = 0
        self.busy_s = 0.0
        self.recent: collections.deque[int] = collections.deque(maxlen=keep)

    def record(self, size: int, seconds: float) -> None:
        self.calls += 1
        self.items += size
        self.busy_s += seconds
        self.recent.append(size)

    def snapshot(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "calls": self.calls,
            "items": self.items,
            "busy_s": self.busy_s,
            "elapsed_s": elapsed,
            "busy_fraction": min(1.0, self.busy_s / elapsed),
            "batch_sizes": list(self.recent),
        }

    def reset(self) -> None:
        self.__init__(self.recent.maxlen or 10_000)  # type: ignore[misc]
