"""When a streamed item's audio is rendered again: on a buffer margin, not on a token count.

Each render re-runs S3Gen over every token so far and sends the audio they newly
commit. The listener starts playing at the first audio and plays in real time, so
what matters is how far the audio sent runs ahead of the audio played: the buffer.

- **First render** once T3 has made `first_tokens` tokens (`CHATTERBOX_STREAM_FIRST_TOKENS`).
- **Then** render whenever the buffer has fallen below `margin_s`
  (`CHATTERBOX_STREAM_MARGIN_S`) plus the latency this stream's renders have had, and
  T3 has made at least `MIN_NEW_TOKENS` tokens since the last render. A render that
  starts with less buffered than it takes leaves the listener waiting; under load a
  render waits behind other streams' S3Gen work for seconds, so a fixed margin is
  either too short under load or too eager when idle. The measured latency is what
  the buffer must cover; the setting is the reserve on top.
- **The last render** comes with T3's stop token, whatever the buffer.

Rendering when the token count doubles (the rule this replaces) keeps playback going
only while T3 makes more than twice real time (50 tokens/s per stream): each render's
audio then outlasts the wait for the next doubling. At 64 streams on the H200, T3 gives
each about 28 tokens/s (1.1x real time) and the listener heard gaps of 0.2-1.6 s. On a
margin, a render starts when it is needed and takes every token there is; each render's
step grows by T3's speed over real time (about 1.1x under load, several times when
idle), so the renders stay few when T3 is fast and are as many as the buffer needs when
it is not.

The buffer is modelled as a player that starts at the first audio and stalls when it
runs out (then resumes where it was), by the wall clock of the caller.

**A later chunk of a stream** (`behind`) is not heard until the chunks before it have
played: its listener is already playing, with at least the audio sent before it in hand
(`SynthesisRequest.play_after`). Its schedule starts playing at once with that audio as
its buffer, so it renders first at `first_tokens` only once that buffer runs low, and
takes as few renders as its own margin needs; modelled as a new listener it rendered as
often as the first chunk and looked, to stream admission, like a stream still waiting
for its first audio.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

# The fewest new tokens worth a render: each re-runs S3Gen over the whole prefix, and
# the last 4 tokens' frames are held back (`streaming.JoinPolicy.hold_frames`).
MIN_NEW_TOKENS = 8
# Weight of the newest render in the latency estimate: renders of one stream grow
# slowly (a longer prefix each time) and jump when other streams join a pass.
LATENCY_WEIGHT = 0.5


@dataclass
class RenderSchedule:
    """One streamed item's render decisions; `due` asks, `sent` tells what went out."""

    first_tokens: int
    margin_s: float
    rendered_tokens: int = 0
    sent_s: float = 0.0
    played_s: float = 0.0
    # How long this stream's renders take, from asking to audio (a moving average).
    latency_s: float = 0.0
    # Wall-clock time of the last playback update; None until the first audio.
    clock: float | None = None

    @classmethod
    def behind(
        cls, first_tokens: int, margin_s: float, ahead_s: float, now: float, latency_s: float
    ) -> RenderSchedule:
        """A later chunk's schedule: its listener has `ahead_s` of audio before it at `now`.

        `latency_s`: what renders take on this replica now, until this chunk's own are known.
        """
        return cls(first_tokens, margin_s, sent_s=max(0.0, ahead_s), latency_s=latency_s, clock=now)

    @property
    def playing(self) -> bool:
        """Whether the listener has audio yet (the first render has sent some)."""
        return self.clock is not None

    def due(self, tokens: int, now: float) -> bool:
        """Whether to render now that T3 has made `tokens` (not the final render)."""
        if self.rendered_tokens and tokens - self.rendered_tokens < MIN_NEW_TOKENS:
            return False
        if not self.rendered_tokens and tokens < self.first_tokens:
            return False
        if self.clock is None:
            return True
        return self.buffered_s(now) < self.margin_s + self.latency_s

    def sent(self, tokens: int, audio_s: float, now: float, took_s: float = 0.0) -> None:
        """A render of `tokens`, asked for `took_s` before `now`, sent `audio_s` of new audio."""
        self._play(now)
        if self.clock is None and audio_s > 0:
            self.clock = now
        self.rendered_tokens = tokens
        self.sent_s += audio_s
        if self.latency_s == 0.0:
            self.latency_s = took_s
        else:
            self.latency_s += LATENCY_WEIGHT * (took_s - self.latency_s)

    def buffered_s(self, now: float) -> float:
        """Seconds of audio sent and not yet played at `now`."""
        self._play(now)
        return self.sent_s - self.played_s

    def _play(self, now: float) -> None:
        if self.clock is not None:
            self.played_s = min(self.sent_s, self.played_s + max(0.0, now - self.clock))
            self.clock = max(self.clock, now)


def schedule_for(
    play_after: float | None, first_tokens: int, margin_s: float, latency_s: float = 0.0
) -> RenderSchedule:
    """The schedule of a streamed item whose listener reaches it at `play_after` (wall
    clock, `SynthesisRequest.play_after`; None: now, a first chunk)."""
    if play_after is None:
        return RenderSchedule(first_tokens, margin_s)
    ahead_s = play_after - time.time()
    return RenderSchedule.behind(first_tokens, margin_s, ahead_s, time.monotonic(), latency_s)
