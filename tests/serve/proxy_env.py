"""Test helper: start Ray with the proxy middleware callback, as production does."""

from __future__ import annotations

from tools.proxy_env import proxy_envelopes

__all__ = ["proxy_envelopes"]
