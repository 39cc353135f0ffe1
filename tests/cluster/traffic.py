"""Speech clients that keep sending while a node dies or the app upgrades, and what they saw.

Each client sends one request at a time. A 5xx answer or a broken connection is retried
after a short pause, as the OpenAI SDK retries, until the request succeeds or its
deadline passes. Every attempt is judged: a success must be the expected audio, and a
failure is clean only as a 5xx in the OpenAI error envelope or a connection the server
closed (never a 200 with short audio, a 4xx, or a plain-text error).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import probe

ENVELOPE_KEYS = {"message", "type", "param", "code"}


@dataclass
class Attempt:
    started: float
    ended: float
    outcome: str  # "ok", "http <status>" or the transport error's class name
    clean: bool


@dataclass
class Request:
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].outcome == "ok"


class Traffic:
    """`clients` threads posting `body` to `/v1/audio/speech` until stopped."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        body: dict[str, Any],
        duration_s: float,
        clients: int = 4,
        deadline_s: float = 120.0,
    ) -> None:
        self.base_url, self.headers, self.body = base_url, headers, body
        self.duration_s = duration_s  # the expected audio length of every success
        self.deadline_s = deadline_s
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._in_flight = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.deadline_s + 30)

    def wait_for_successes(self, count: int, after: float, timeout_s: float = 60) -> None:
        """Wait until `count` requests started after `after` (monotonic) have succeeded."""
        deadline = time.monotonic() + timeout_s
        while len([r for r in self.finished() if r.attempts[0].started > after]) < count:
            assert time.monotonic() < deadline, f"fewer than {count} successes in {timeout_s} s"
            time.sleep(0.2)

    def finished(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.ok]

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=90) as client:
            while not self._stop.is_set():
                request = Request()
                with self._lock:
                    self.requests.append(request)
                deadline = time.monotonic() + self.deadline_s
                while time.monotonic() < deadline:
                    attempt = self._attempt(client)
                    request.attempts.append(attempt)
                    if attempt.outcome == "ok" or not attempt.clean:
                        break
                    time.sleep(0.5)

    def in_flight(self) -> int:
        """Attempts sent and not yet answered."""
        with self._lock:
            return self._in_flight

    def _post(self, client: httpx.Client) -> httpx.Response:
        with self._lock:
            self._in_flight += 1
        try:
            return client.post("/v1/audio/speech", json=self.body)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _attempt(self, client: httpx.Client) -> Attempt:
        started = time.monotonic()
        try:
            r = self._post(client)
        except httpx.TransportError as exc:
            return Attempt(started, time.monotonic(), type(exc).__name__, True)
        ended = time.monotonic()
        if r.status_code == 200:
            try:
                duration = float(probe(r.content)["duration_s"])  # type: ignore[arg-type]
            except Exception:
                duration = -1.0
            return Attempt(started, ended, "ok", abs(duration - self.duration_s) < 0.05)
        try:
            clean = r.status_code >= 500 and set(r.json()["error"]) == ENVELOPE_KEYS
        except (ValueError, KeyError, TypeError):
            clean = False
        return Attempt(started, ended, f"http {r.status_code}", clean)

    def failures_after(self, moment: float) -> list[str]:
        """Failed attempts that started after `moment` (monotonic)."""
        with self._lock:
            attempts = [a for r in self.requests for a in r.attempts]
        return [a.outcome for a in attempts if a.outcome != "ok" and a.started > moment]

    def summary(self, since: float = 0.0) -> dict[str, Any]:
        """Figures for the requests that started after `since` (monotonic)."""
        with self._lock:
            chosen = [r for r in self.requests if r.attempts and r.attempts[0].started > since]
        failed = [a for r in chosen for a in r.attempts if a.outcome != "ok"]
        outcomes: dict[str, int] = {}
        for a in failed:
            outcomes[a.outcome] = outcomes.get(a.outcome, 0) + 1
        return {
            "requests": len(chosen),
            "attempts": sum(len(r.attempts) for r in chosen),
            "failed_attempts": len(failed),
            "failures": outcomes,
            "retried_requests": sum(1 for r in chosen if len(r.attempts) > 1),
            "unclean": [a.outcome for r in chosen for a in r.attempts if not a.clean],
            "gave_up": sum(1 for r in chosen if not r.ok),
            "max_latency_s": round(
                max((r.attempts[-1].ended - r.attempts[0].started for r in chosen), default=0), 2
            ),
        }
