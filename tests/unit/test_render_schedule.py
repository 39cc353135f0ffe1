"""Streamed renders on a buffer margin: no gaps for the listener under load, few renders idle.

A simulated clock drives the engine's loop (`VLLMEngine.synthesize_stream`): T3 tokens
arrive at a steady rate; when the schedule says so, a render takes every token there
is and its new audio reaches the listener a render latency later, while T3 goes on. The
listener starts at the first audio, plays in real time and waits when it runs out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pytest

from chatterbox_serve.engines.vllm.render_schedule import MIN_NEW_TOKENS, RenderSchedule

TOKENS_PER_S = 25  # speech tokens per second of audio
HOLD_TOKENS = 4  # tokens whose frames a non-final render holds back (8 frames)
CROSSFADE_S = 0.02
MARGIN_S = 1.0  # the CHATTERBOX_STREAM_MARGIN_S default
FIRST = 20  # the CHATTERBOX_STREAM_FIRST_TOKENS default


class Schedule(Protocol):
    def due(self, tokens: int, now: float) -> bool: ...
    def sent(self, tokens: int, audio_s: float, now: float, took_s: float) -> None: ...


@dataclass
class Doubling:
    """The rule the margin replaces: render when the token count has doubled."""

    threshold: int

    def due(self, tokens: int, now: float) -> bool:
        return tokens >= self.threshold

    def sent(self, tokens: int, audio_s: float, now: float, took_s: float) -> None:
        self.threshold = 2 * tokens


@dataclass(frozen=True)
class Heard:
    stall_s: float  # total silence after the first audio, before the end
    worst_gap_s: float
    renders: int
    first_audio_s: float


def _committed_s(tokens: int, final: bool) -> float:
    """Audio a render of `tokens` has committed (`StreamingS3Gen`: held frames, crossfade)."""
    if final:
        return tokens / TOKENS_PER_S
    return max(0.0, (tokens - HOLD_TOKENS) / TOKENS_PER_S - CROSSFADE_S)


def listen(
    schedule: Schedule, tokens_per_s: float, total: int, render_s: Callable[[int], float]
) -> Heard:
    t, committed, renders = 0.0, 0.0, 0
    arrivals: list[tuple[float, float]] = []
    while True:
        tokens = min(total, math.floor(t * tokens_per_s + 1e-9))
        final = tokens == total
        if final or (tokens and schedule.due(tokens, t)):
            new = _committed_s(tokens, final) - committed
            committed += new
            took = render_s(tokens)
            t += took  # T3 goes on meanwhile; the loop sees it after
            renders += 1
            if new > 0:
                arrivals.append((t, new))
            schedule.sent(tokens, new, t, took)
            if final:
                break
        else:
            t = (tokens + 1) / tokens_per_s  # the next token from T3
    playing_until, stall, worst = arrivals[0][0], 0.0, 0.0
    for at, length in arrivals:
        if at > playing_until:
            stall += at - playing_until
            worst = max(worst, at - playing_until)
            playing_until = at
        playing_until += length
    assert math.isclose(sum(a for _, a in arrivals), total / TOKENS_PER_S)
    return Heard(stall, worst, renders, arrivals[0][0])


def _render_s(base: float) -> Callable[[int], float]:
    # A render re-runs S3Gen over the whole prefix: a fixed part (queueing, vocoder,
    # launch) and one growing with the tokens.
    return lambda tokens: base + 0.0005 * tokens


# 64 streams on the H200: ~28 tokens/s each (1.1x real time), renders queued behind
# other streams' S3Gen work. 170 tokens is a first chunk of ~100 characters, 500 a
# 280-character one.
@pytest.mark.parametrize("tokens_per_s", [28, 35])
@pytest.mark.parametrize("render_base_s", [0.35, 0.5])
@pytest.mark.parametrize("total", [170, 500])
def test_under_load_the_margin_leaves_no_gap_where_doubling_did(
    tokens_per_s: float, render_base_s: float, total: int
) -> None:
    render = _render_s(render_base_s)
    doubling = listen(Doubling(FIRST), tokens_per_s, total, render)
    margin = listen(RenderSchedule(FIRST, MARGIN_S), tokens_per_s, total, render)
    assert doubling.worst_gap_s > 0.5  # what listeners heard: gaps of 0.2-1.6 s
    assert margin.stall_s <= 0.02
    assert margin.first_audio_s == doubling.first_audio_s  # the first render is unchanged
    # Each render re-runs the prefix: more renders than doubling (each starts a render's
    # latency before the buffer reaches the margin), but bounded: one per 0.4 s of audio.
    assert margin.renders <= total / TOKENS_PER_S / 0.4


@pytest.mark.parametrize(("tokens_per_s", "render_base_s"), [(120, 0.1), (200, 0.05)])
def test_when_t3_is_far_ahead_renders_stay_as_few_as_doubling(
    tokens_per_s: float, render_base_s: float
) -> None:
    render = _render_s(render_base_s)
    doubling = listen(Doubling(FIRST), tokens_per_s, 500, render)
    margin = listen(RenderSchedule(FIRST, MARGIN_S), tokens_per_s, 500, render)
    assert margin.stall_s == doubling.stall_s == 0.0
    assert margin.renders <= doubling.renders


@pytest.mark.parametrize("render_base_s", [0.5, 1.5, 3.0])
def test_renders_slower_than_the_margin_start_early_enough(render_base_s: float) -> None:
    """Under load a render waits seconds behind other streams' S3Gen work (H100, 64
    streams: about 2-3 s); the schedule learns the latency and starts that much earlier."""
    heard = listen(RenderSchedule(FIRST, 0.3), 28, 500, _render_s(render_base_s))
    # Only the first render's latency is unknown when the second is asked for: at most
    # one gap, shorter than one render.
    assert heard.stall_s <= render_base_s


def test_a_schedule_blind_to_render_latency_leaves_gaps() -> None:
    """The bound can fail: a fixed margin shorter than a render stalls at every render."""

    class Blind(RenderSchedule):
        def sent(self, tokens: int, audio_s: float, now: float, took_s: float = 0.0) -> None:
            super().sent(tokens, audio_s, now, 0.0)

    heard = listen(Blind(FIRST, 0.3), 28, 500, _render_s(1.5))
    assert heard.stall_s > 2.0


def test_the_player_model_waits_when_it_runs_out() -> None:
    schedule = RenderSchedule(first_tokens=FIRST, margin_s=MARGIN_S)
    assert not schedule.due(FIRST - 1, 0.0) and schedule.due(FIRST, 0.0)
    schedule.sent(FIRST, 0.5, now=10.0)
    assert schedule.buffered_s(10.2) == pytest.approx(0.3)
    assert schedule.buffered_s(12.0) == 0.0  # ran out at 10.5 and waits there
    schedule.sent(FIRST + MIN_NEW_TOKENS, 2.0, now=13.0)
    assert schedule.buffered_s(13.5) == pytest.approx(1.5)  # resumed at 13.0, not before
    # Too few new tokens are not worth a render, however low the buffer.
    assert not schedule.due(FIRST + 2 * MIN_NEW_TOKENS - 1, 16.0)
    assert schedule.due(FIRST + 2 * MIN_NEW_TOKENS, 16.0)
