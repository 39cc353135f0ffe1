"""Live tenant sweep: one key attacks the others' share of a running app.

    python -m tools.hostile_sweep tenants http://127.0.0.1:8000 \\
        --key-a A --key-b B --operator-key OPS [--json tenants.json]

The app must run with `API_KEYS=A,B` and `ADMIN_API_KEYS=OPS` behind the proxy
middleware (a plain `serve run serve_config.yaml` refuses to start without it).
Tenant B sends short speech requests one after another the whole time: first for a
baseline, then while tenant A tries every attack below as a hostile tenant would.
Each attack passes when it is refused (or bounded) as docs/SECURITY.md says, in the
OpenAI error envelope. The sweep passes when every attack does, every one of B's
requests succeeded, and B's p95 latency during the attacks is within 2x of before.

Exit status 0 only when everything passed. The table it prints is the one recorded
in docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

LONG = "/v1/audio/speech/long"
TEXT = " ".join(f"Sentence {i} of a long story that keeps going." for i in range(120))


@dataclass
class Attack:
    """One hostile tenant's try, and what counts as refused."""

    item: str
    name: str
    run: Callable[[Sweep], tuple[int, str | None, list[str]]]


@dataclass
class Outcome:
    item: str
    name: str
    status: int
    code: str | None
    seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


class Sweep:
    """Clients for the two tenants and the operator, and the app's limits."""

    def __init__(self, url: str, key_a: str, key_b: str, operator_key: str) -> None:
        def client(key: str) -> httpx.Client:
            auth = {"Authorization": f"Bearer {key}"}
            return httpx.Client(base_url=url, timeout=60.0, headers=auth)

        self.url, self.key_a = url, key_a
        self.a, self.b, self.ops = client(key_a), client(key_b), client(operator_key)
        self.settings: dict[str, Any] = self.ops.get("/config").json()["settings"]

    def limit(self, name: str) -> int:
        return int(float(self.settings[name]))

    def paused_job(self) -> str:
        r = self.a.post(LONG, json={"input": TEXT})
        _expect(r, 200)
        job = str(r.json()["job_id"])
        _expect(self.a.put(f"{LONG}/{job}/pause"), 200)
        return job

    def b_voice(self) -> None:
        """B's own voice, uploaded once."""
        if self.b.get("/voices/sweep-b-voice").status_code == 200:
            return
        from tools.hostile_sweep import _wav

        r = self.b.post(
            "/voices",
            data={"voice_name": "sweep-b-voice"},
            files={"voice_file": ("b.wav", _wav(3.0))},
        )
        _expect(r, 201)

    def clear_a(self) -> None:
        """Cancel and delete every job of A, so each attack starts from nothing."""
        for job in self.a.get(LONG, params={"limit": 100}).json()["jobs"]:
            self.a.delete(f"{LONG}/{job['job_id']}")
            self.a.delete(f"{LONG}/{job['job_id']}", params={"action": "delete"})


def _expect(r: httpx.Response, status: int) -> None:
    if r.status_code != status:
        raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}")


def _refusal(r: httpx.Response, status: int, code: str) -> tuple[int, str | None, list[str]]:
    """The attack passes when `r` is `status` with the envelope's `code`."""
    problems: list[str] = []
    got: str | None = None
    try:
        error = r.json()["error"]
        got = error.get("code")
        if set(error) != {"message", "type", "param", "code"}:
            problems.append("not the OpenAI envelope")
    except (ValueError, KeyError, TypeError):
        problems.append("not the OpenAI envelope")
    if r.status_code != status or got != code:
        problems.append(f"expected {status} {code}")
    return r.status_code, got, problems


# -- the attacks -----------------------------------------------------------------------


def lift_timeout(s: Sweep) -> tuple[int, str | None, list[str]]:
    """SSE on a paused job with Ray's `x-request-timeout-seconds: 0`: must still end."""
    job, idle = s.paused_job(), float(s.settings["CHATTERBOX_SSE_IDLE_TIMEOUT_S"])
    headers = {"x-request-timeout-seconds": "0", "x-request-disconnect-disabled": "?1"}
    began, events = time.monotonic(), []
    with s.a.stream("GET", f"{LONG}/{job}/sse", headers=headers, timeout=idle + 30) as r:
        events = [ln.split(":", 1)[1].strip() for ln in r.iter_lines() if ln.startswith("event:")]
    took = time.monotonic() - began
    problems = [] if events[-1:] == ["idle"] and took < idle + 10 else [f"ran {took:.1f} s"]
    return r.status_code, "idle" if events[-1:] == ["idle"] else None, problems


def hold_streams(s: Sweep) -> tuple[int, str | None, list[str]]:
    """Open one more progress stream than the per-key cap allows."""
    job, cap = s.paused_job(), s.limit("CHATTERBOX_MAX_SSE_STREAMS_PER_KEY")
    held = [s.a.stream("GET", f"{LONG}/{job}/sse") for _ in range(cap)]
    lines = []
    try:
        for ctx in held:
            lines.append(ctx.__enter__().iter_lines())
            next(lines[-1])  # open and streaming
        return _refusal(s.a.get(f"{LONG}/{job}/sse"), 429, "too_many_streams")
    finally:
        for ctx in held:
            ctx.__exit__(None, None, None)


def stalled_downloads(s: Sweep) -> tuple[int, str | None, list[str]]:
    """Downloads of a finished job by clients that never read, up to the per-key cap.

    Each must hold at most its window plus what the sockets buffer (the ingress waits
    for the client instead of pushing the file into Ray's queues: `/status` shows what
    it sent), and one more download past the cap is refused.
    """
    s.clear_a()
    job = s.a.post(LONG, json={"input": TEXT, "response_format": "wav"}).json()["job_id"]
    deadline = time.monotonic() + 300
    while (state := s.a.get(f"{LONG}/{job}").json())["status"] != "completed":
        if time.monotonic() > deadline or state["status"] in ("failed", "cancelled"):
            return 0, None, [f"the job ended {state['status']}"]
        time.sleep(1.0)
    with s.a.stream("GET", f"{LONG}/{job}/download") as whole:
        size = int(whole.headers["content-length"])
    cap = s.limit("CHATTERBOX_MAX_DOWNLOADS_PER_KEY")
    window = s.limit("CHATTERBOX_STREAM_WINDOW_BYTES")
    sockets = [_stalled_download(s, f"{LONG}/{job}/download") for _ in range(cap)]
    try:
        deadline, streams = time.monotonic() + 60, dict[str, int]()
        while streams.get("waiting_for_client", 0) < cap and time.monotonic() < deadline:
            time.sleep(1.0)
            streams = _ingress_streams(s)
        r = s.a.get(f"{LONG}/{job}/download")
        status, code, problems = _refusal(r, 429, "too_many_streams")
        time.sleep(3.0)
        later = _ingress_streams(s)
    finally:
        for sock in sockets:
            sock.close()
    print(
        f"      {cap} stalled downloads of {size} bytes each: ingress sent "
        f"{later.get('sent_bytes')}"
        f" bytes, {later.get('unacknowledged_bytes')} not yet delivered (window {window})",
        file=sys.stderr,
    )
    if streams.get("waiting_for_client", 0) < cap:
        problems.append(f"only {streams.get('waiting_for_client')} of {cap} downloads paced")
    if later.get("sent_bytes") != streams.get("sent_bytes"):
        problems.append(f"kept sending to stalled clients: {streams} then {later}")
    if int(later.get("sent_bytes", 0)) >= cap * size // 2:
        problems.append(f"sent {later.get('sent_bytes')} bytes of {cap} x {size}")
    if int(later.get("unacknowledged_bytes", 0)) > cap * (window + READ_BLOCK):
        problems.append(f"{later.get('unacknowledged_bytes')} bytes past {cap} windows")
    return status, code, problems


READ_BLOCK = 1 << 20  # the job store's read block: one more can be in flight per window


def _stalled_download(s: Sweep, path: str) -> socket.socket:
    """A client that asks for a file, reads its status line, and never reads again."""
    url = httpx.URL(s.url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.connect((url.host, url.port or 80))
    request = f"GET {path} HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {s.key_a}\r\n\r\n"
    sock.sendall(request.encode())
    sock.recv(1024)
    return sock


def _ingress_streams(s: Sweep) -> dict[str, int]:
    """The paced responses of every ingress replica, summed (an operator's /status)."""
    replicas = s.ops.get("/status").json()["deployments"]["SpeechIngress"]["replicas"]
    total: dict[str, int] = {}
    for replica in replicas:
        for name, value in (replica.get("streams") or {}).items():
            total[name] = total.get(name, 0) + int(value)
    return total


def two_authorizations(first: bytes) -> Callable[[Sweep], tuple[int, str | None, list[str]]]:
    def attack(s: Sweep) -> tuple[int, str | None, list[str]]:
        headers = [(b"authorization", first), (b"authorization", f"Bearer {s.key_a}".encode())]
        r = httpx.post(s.url + LONG, json={"input": TEXT}, headers=headers, timeout=30)
        return _refusal(r, 400, "duplicate_authorization")

    return attack


def racing_creates(s: Sweep) -> tuple[int, str | None, list[str]]:
    """Twice the cap of creates at once: no more than the cap may be unfinished."""
    s.clear_a()
    cap = s.limit("CHATTERBOX_MAX_JOBS_PER_KEY")
    with ThreadPoolExecutor(2 * cap) as pool:
        answers = list(pool.map(lambda _: s.a.post(LONG, json={"input": TEXT}), range(2 * cap)))
    active = s.a.get(LONG, params={"limit": 100}).json()["active_jobs"]
    refused = [r for r in answers if r.status_code == 429]
    status, code, problems = (
        _refusal(refused[0], 429, "too_many_jobs") if refused else (200, None, ["none refused"])
    )
    paused = s.a.get(LONG, params={"limit": 100, "status": "paused"}).json()["jobs"]
    if active + len(paused) > cap:
        problems.append(f"{active + len(paused)} unfinished past a cap of {cap}")
    return status, code, problems


def retry_past_cap(bulk: bool) -> Callable[[Sweep], tuple[int, str | None, list[str]]]:
    def attack(s: Sweep) -> tuple[int, str | None, list[str]]:
        s.clear_a()
        cap = s.limit("CHATTERBOX_MAX_JOBS_PER_KEY")
        ids = [s.a.post(LONG, json={"input": TEXT}).json()["job_id"] for _ in range(cap)]
        for job in ids:
            s.a.delete(f"{LONG}/{job}")  # cancelled: retryable, not counted
        for _ in range(cap):
            _expect(s.a.post(LONG, json={"input": TEXT}), 200)
        if bulk:
            r = s.a.post(f"{LONG}/bulk", json={"job_ids": ids, "action": "retry", "confirm": True})
            failed = r.json().get("failed_count")
            problems = [] if failed == len(ids) else [f"{len(ids) - failed} retried past the cap"]
            return r.status_code, None, problems
        return _refusal(s.a.post(f"{LONG}/{ids[0]}/retry"), 429, "too_many_jobs")

    return attack


def fill_storage(s: Sweep) -> tuple[int, str | None, list[str]]:
    """A create-cancel loop: finished jobs count against the key's stored-jobs quota."""
    s.clear_a()
    quota = s.limit("CHATTERBOX_MAX_STORED_JOBS_PER_KEY")
    for _ in range(quota):
        r = s.a.post(LONG, json={"input": TEXT})
        _expect(r, 200)
        s.a.delete(f"{LONG}/{r.json()['job_id']}")
    return _refusal(s.a.post(LONG, json={"input": TEXT}), 429, "stored_jobs_quota_exceeded")


def operator_only(method: str, path: str) -> Callable[[Sweep], tuple[int, str | None, list[str]]]:
    def attack(s: Sweep) -> tuple[int, str | None, list[str]]:
        status, code, problems = _refusal(s.a.request(method, path), 403, "operator_only")
        if s.ops.request(method, path).status_code != 200:
            problems.append("the operator key was refused too")
        return status, code, problems

    return attack


def read_others_requests(s: Sweep) -> tuple[int, str | None, list[str]]:
    r = s.a.get("/info")
    body = r.json()
    problems = ["memory_info shown"] if "memory_info" in body else []
    history = s.a.get("/status/history", params={"limit": 50}).json()["request_history"]
    everyone = s.ops.get("/status/history", params={"limit": 50}).json()["request_history"]
    if len(history) >= len(everyone) and everyone:
        problems.append("A sees every tenant's requests")
    return r.status_code, None, problems


def others_voice(
    method: str, path: str, **kw: Any
) -> Callable[[Sweep], tuple[int, str | None, list[str]]]:
    """A touches the voice B uploaded: it must be as unknown to A as a missing one."""

    def attack(s: Sweep) -> tuple[int, str | None, list[str]]:
        s.b_voice()
        status, code, problems = _refusal(s.a.request(method, path, **kw), 404, "voice_not_found")
        if s.b.get("/voices/sweep-b-voice/download").status_code != 200:
            problems.append("B lost its voice")
        return status, code, problems

    return attack


def set_default(s: Sweep) -> tuple[int, str | None, list[str]]:
    s.b_voice()
    r = s.a.post("/voices/default", data={"voice_name": "sweep-b-voice"})
    return _refusal(r, 403, "operator_only")


def docs_scripts(s: Sweep) -> tuple[int, str | None, list[str]]:
    r = httpx.get(s.url + "/docs", timeout=30)
    problems = ["a script on the docs page"] if "<script" in r.text.lower() else []
    return r.status_code, None, problems


ATTACKS = [
    Attack(
        "1", "SSE on a paused job, x-request-timeout-seconds: 0 + disconnect-disabled", lift_timeout
    ),
    Attack("1", "progress streams past the per-key cap", hold_streams),
    Attack(
        "2", "Authorization twice: junk, then a valid key", two_authorizations(b"Bearer junk-1")
    ),
    Attack("2", "Authorization twice: Basic, then a valid key", two_authorizations(b"Basic eDp4")),
    Attack("3", "2x the cap of creates at once", racing_creates),
    Attack("3", "retry past the cap", retry_past_cap(bulk=False)),
    Attack("3", "bulk retry past the cap", retry_past_cap(bulk=True)),
    Attack("3", "create-cancel loop to fill storage", fill_storage),
    Attack("4", "POST /voices/cleanup", operator_only("POST", "/voices/cleanup")),
    Attack("9", "downloads past the per-key cap, none of them read", stalled_downloads),
    Attack("8", "download B's voice", others_voice("GET", "/voices/sweep-b-voice/download")),
    Attack(
        "8",
        "rename B's voice",
        others_voice("PUT", "/voices/sweep-b-voice", data={"new_name": "taken"}),
    ),
    Attack("8", "delete B's voice", others_voice("DELETE", "/voices/sweep-b-voice")),
    Attack(
        "8",
        "speak with B's voice",
        others_voice("POST", "/v1/audio/speech", json={"input": "Hi.", "voice": "sweep-b-voice"}),
    ),
    Attack("8", "make B's voice the default", set_default),
    Attack("10", "POST /memory/reset", operator_only("POST", "/memory/reset?confirm=true")),
    Attack(
        "10",
        "POST /status/history/clear",
        operator_only("POST", "/status/history/clear?confirm=true"),
    ),
    Attack(
        "10", "POST /memory/config", operator_only("POST", "/memory/config?cpu_memory_percent=60")
    ),
    Attack("10", "GET /status (node IPs, PIDs)", operator_only("GET", "/status")),
    Attack("10", "GET /memory", operator_only("GET", "/memory")),
    Attack("10", "other tenants' requests in /info, /status/history", read_others_requests),
    Attack("12", "third-party scripts on /docs", docs_scripts),
]


# -- the other tenant's speech -----------------------------------------------------------


class Bystander:
    """Tenant B's speech requests, one after another, timed, until stopped."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.samples: list[tuple[float, float, int]] = []  # (start, seconds, status)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = {"input": "Tenant B is still being served.", "response_format": "wav"}
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                status = self.client.post("/v1/audio/speech", json=body).status_code
            except httpx.HTTPError:
                status = 0
            self.samples.append((began, time.monotonic() - began, status))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> list[tuple[float, float, int]]:
        return [s for s in self.samples if start <= s[0] < end]


def p95(samples: list[tuple[float, float, int]]) -> float:
    seconds = sorted(s[1] for s in samples)
    return statistics.quantiles(seconds, n=20)[-1] if len(seconds) >= 2 else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="base URL of the running app")
    parser.add_argument("--key-a", required=True, help="the attacking tenant's key")
    parser.add_argument("--key-b", required=True, help="the bystander tenant's key")
    parser.add_argument("--operator-key", required=True, help="a key of ADMIN_API_KEYS")
    parser.add_argument("--baseline-s", type=float, default=20.0)
    parser.add_argument("--json", help="also write the outcomes and latencies here")
    args = parser.parse_args(argv)
    sweep = Sweep(args.url, args.key_a, args.key_b, args.operator_key)
    bystander = Bystander(sweep.b)
    bystander.start()
    time.sleep(args.baseline_s)
    attack_start = time.monotonic()
    outcomes = []
    for attack in ATTACKS:
        began = time.monotonic()
        try:
            status, code, problems = attack.run(sweep)
        except Exception as exc:  # a broken attack is a failed row, not a crash
            status, code, problems = 0, None, [f"{type(exc).__name__}: {exc}"]
        outcome = Outcome(
            attack.item, attack.name, status, code, time.monotonic() - began, problems
        )
        print(f"{'pass' if outcome.passed else 'FAIL'}  {attack.name}", file=sys.stderr)
        outcomes.append(outcome)
    attack_end = time.monotonic()
    time.sleep(2.0)
    bystander.stop()
    sweep.clear_a()
    before = bystander.between(0.0, attack_start)
    during = bystander.between(attack_start, attack_end)
    failed_b = [s for s in before + during if s[2] != 200]
    print(table(outcomes))
    verdict = {
        "b_requests_before": len(before),
        "b_requests_during": len(during),
        "b_failed": len(failed_b),
        "b_p95_before_s": round(p95(before), 3),
        "b_p95_during_s": round(p95(during), 3),
    }
    ok_latency = verdict["b_p95_during_s"] <= 2 * verdict["b_p95_before_s"]
    print(
        f"\nTenant B: {len(before)} requests before, {len(during)} during the attacks, "
        f"{len(failed_b)} failed; p95 {verdict['b_p95_before_s']} s before, "
        f"{verdict['b_p95_during_s']} s during ({'within' if ok_latency else 'OVER'} 2x)."
    )
    bad = [o for o in outcomes if not o.passed]
    print(f"{len(outcomes) - len(bad)} of {len(outcomes)} attacks refused as documented.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"outcomes": [asdict(o) for o in outcomes], **verdict}, f, indent=2)
    return 0 if not bad and not failed_b and ok_latency and during else 1


def table(outcomes: list[Outcome]) -> str:
    rows = [
        "| Item | Attack by tenant A | Status | Code | Seconds | Result |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        result = "refused" if o.passed else "FAIL: " + "; ".join(o.problems)
        rows.append(
            f"| {o.item} | {o.name} | {o.status} | {o.code or ''} | {o.seconds:.2f} | {result} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
