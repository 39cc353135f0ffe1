"""Live hostile-input sweep: every hostile input against a running app.

    python -m tools.hostile_sweep http://127.0.0.1:8000 --voice-dir /path/to/voices \\
        [--pid <serve run pid>] [--json sweep.json]
    python -m tools.hostile_sweep tenants URL --key-a A --key-b B --operator-key OPS

The second form is the tenant sweep (`tools/tenant_sweep.py`): one key attacking
what the other tenants share.

Each case sends one hostile request and checks what a user (or an operator) would
notice: no 5xx, every refusal in the OpenAI error envelope within 2 s, no file
added to or changed in the voice store, and no UDP socket bound while it ran (the
SDP upload once made FFmpeg bind ports of the uploader's choosing). UDP sockets are
read from /proc/net/udp{,6} every few milliseconds during each request; with
`--pid`, only sockets of that process tree count, so other programs on the machine
do not trip the check. Cases that cannot be sent to a live app (an empty `API_KEYS`
is a startup check; a full disk) are covered by unit tests instead.

Exit status 0 only when every case passes. The table it prints is the one recorded
in docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REFUSAL_LIMIT_S = 2.0
SPEECH = "/v1/audio/speech"
UPLOAD = "/v1/audio/speech/upload"
DETECT = "/v1/audio/watermark/detect"


@dataclass
class Case:
    """One hostile request and the statuses that count as handled."""

    name: str
    send: Callable[[httpx.Client], httpx.Response]
    expect: tuple[int, ...]
    note: str = ""


@dataclass
class Outcome:
    name: str
    status: int
    code: str | None
    seconds: float
    new_udp: list[int] = field(default_factory=list)
    store_changed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


# -- hostile payloads -----------------------------------------------------------------

SDP = (
    b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 22222 RTP/AVP 0\r\n"
)


def _encode(codec: str, fmt: str, seconds: float = 2.0, rate: int = 8000) -> bytes:
    import av
    import numpy as np

    buf = io.BytesIO()
    out: Any
    with av.open(buf, "w", format=fmt) as out:
        stream: Any = out.add_stream(codec, rate=rate, layout="mono")
        sample_fmt = stream.codec_context.format.name
        n = int(seconds * rate)
        tone = (0.3 * np.sin(np.arange(n) / rate * 2 * np.pi * 220) * 32767).astype(np.int16)
        size = stream.codec_context.frame_size or 1024
        for start in range(0, n - size + 1, size):
            chunk = tone[None, start : start + size]
            if sample_fmt.startswith("flt"):
                chunk = (chunk / 32768).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format=sample_fmt, layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _flac_with(total_samples: int) -> bytes:
    """A 2 s FLAC whose STREAMINFO then claims `total_samples` samples."""
    data = bytearray(_encode("flac", "flac"))
    info = 8  # "fLaC" and the metadata block header
    bits = int.from_bytes(data[info + 10 : info + 18], "big")  # rate(20) ch(3) bps(5) n(36)
    bits = (bits & ~((1 << 36) - 1)) | total_samples
    data[info + 10 : info + 18] = bits.to_bytes(8, "big")
    return bytes(data)


def _wav_header(rate: int, channels: int) -> bytes:
    """A PCM WAV header declaring an absurd rate or channel count, over 4 KB of data."""
    fmt = struct.pack(
        "<IHHIIHH", 16, 1, channels, rate, (rate * channels * 2) & 0xFFFFFFFF, channels * 2, 16
    )
    pcm = b"\x01\x00" * 2048
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(pcm))
        + b"WAVEfmt "
        + fmt
        + b"data"
        + (struct.pack("<I", len(pcm)) + pcm)
    )


def _wav(seconds: float) -> bytes:
    rate = 16_000
    n = int(seconds * rate)
    import numpy as np

    pcm = (0.3 * np.sin(np.arange(n) / rate * 2 * np.pi * 220) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(pcm))
        + b"WAVEfmt "
        + fmt
        + b"data"
        + (struct.pack("<I", len(pcm)) + pcm)
    )


def _upload(path: str, data: bytes, name: str, **fields: str) -> Callable[[httpx.Client], Any]:
    def send(c: httpx.Client) -> httpx.Response:
        if path == DETECT:
            return c.post(path, files={"file": (name, data, "audio/wav")})
        if path == UPLOAD:
            form = {"input": "Hello there.", **fields}
            return c.post(path, data=form, files={"voice_file": (name, data, "audio/wav")})
        if path == "/v1/audio/voices":
            form = {"name": fields.get("voice_name", "sweep-voice"), "consent": "yes"}
            return c.post(path, data=form, files={"audio_sample": (name, data, "audio/wav")})
        form = {"voice_name": "sweep-voice", **fields}
        return c.post(path, data=form, files={"voice_file": (name, data, "audio/wav")})

    return send


def _speech(body: dict[str, Any] | bytes, **headers: Any) -> Callable[[httpx.Client], Any]:
    def send(c: httpx.Client) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **headers}
        return c.post(SPEECH, content=content, headers=hdrs)

    return send


def _raw_headers(raw: list[tuple[bytes, bytes]]) -> Callable[[httpx.Client], Any]:
    def send(c: httpx.Client) -> httpx.Response:
        body = json.dumps({"input": "Hi.", "response_format": "wav"}).encode()
        headers = [(b"Content-Type", b"application/json"), *raw]
        return c.post(SPEECH, content=body, headers=headers)

    return send


OWNER = "sweep-owner"


def setup(client: httpx.Client) -> str:
    """Store one voice through OpenAI's upload route; return its id (the takeover target)."""
    files = {"audio_sample": ("owner.wav", _wav(2), "audio/wav")}
    r = client.post("/v1/audio/voices", data={"name": OWNER, "consent": "yes"}, files=files)
    if r.status_code == 409:
        r = client.get(f"/voices/{OWNER}")
        r.raise_for_status()
        return str(r.json()["id"])
    r.raise_for_status()
    return str(r.json()["id"])


def cases(owner_id: str) -> list[Case]:
    good_text = {"model": "tts-1", "input": "Hello there.", "response_format": "wav"}
    out: list[Case] = []
    for path in ("/voices", UPLOAD, DETECT):
        out.append(Case(f"SDP file (82 B) to {path}", _upload(path, SDP, "x.sdp"), (400,)))
    out += [
        Case(
            "FLAC claiming 2^36 samples to the watermark check",
            _upload(DETECT, _flac_with((1 << 36) - 1), "h.flac"),
            (400,),
        ),
        Case(
            "WAV header: 200 channels to the watermark check",
            _upload(DETECT, _wav_header(8000, 200), "c.wav"),
            (400,),
        ),
    ]
    for codec in ("adpcm_ima_wav", "adpcm_ms", "g726"):
        out.append(
            Case(
                f"{codec} WAV to /voices",
                _upload("/voices", _encode(codec, "wav"), "a.wav"),
                (400,),
            )
        )
    try:
        realaudio = _encode("real_144", "matroska")
        out.append(
            Case("RealAudio in Matroska to /voices", _upload("/voices", realaudio, "r.mka"), (400,))
        )
    except Exception as exc:  # an FFmpeg build without the encoder
        print(f"skipping RealAudio case: {exc}", file=sys.stderr)
    out += [
        Case(
            "FLAC claiming 2^36 samples",
            _upload("/voices", _flac_with((1 << 36) - 1), "h.flac"),
            (400,),
        ),
        Case(
            "WAV header: 2^31 Hz",
            _upload("/voices", _wav_header(2**31 - 1, 1), "r.wav"),
            (400,),
        ),
        Case(
            "WAV header: 200 channels",
            _upload("/voices", _wav_header(8000, 200), "c.wav"),
            (400,),
        ),
        Case(
            "text file as voice",
            _upload("/voices", b"hello, I am not audio\n" * 50, "t.txt"),
            (400,),
        ),
        Case(
            "upload over 10 MiB",
            _upload("/voices", b"\0" * (10 * 1_048_576 + 1), "big.wav"),
            (413,),
        ),
        Case(
            "name shaped like a voice id",
            _upload("/voices", _wav(2), "v.wav", voice_name="voice_0123abcd"),
            (400,),
        ),
        Case(
            "OpenAI upload, name like an id",
            _upload("/v1/audio/voices", _wav(2), "v.wav", voice_name="voice_9f9f9f9f"),
            (400,),
        ),
        Case(
            "path-like name ../x", _upload("/voices", _wav(2), "v.wav", voice_name="../x"), (400,)
        ),
        Case(
            "takeover: a name equal to a stored voice's id",
            _upload("/v1/audio/voices", _wav(2), "v.wav", voice_name=owner_id),
            (400,),
        ),
        Case(
            "takeover: {voice: {id}} of the stored voice",
            _speech({**good_text, "voice": {"id": owner_id}}),
            (200,),
        ),
        Case(
            "non-UTF-8 X-Request-Id",
            _raw_headers([(b"X-Request-Id", b"caf\xe9\xff")]),
            (200,),
            "id replaced",
        ),
        Case(
            "{voice: {id}} of no voice",
            _speech({**good_text, "voice": {"id": "voice_0123abcd"}}),
            (404,),
        ),
        Case("non-UTF-8 byte in a header", _raw_headers([(b"X-Note", b"caf\xe9 \xff")]), (200,)),
        Case(
            "non-UTF-8 Authorization",
            _raw_headers([(b"Authorization", b"Bearer sk-\xff\xfe")]),
            (200, 401),
        ),
        Case(
            "lone surrogate in input",
            _speech(b'{"input": "a\\ud800b", "response_format": "wav"}'),
            (400,),
        ),
        Case("lone surrogate in voice", _speech(b'{"input": "Hi.", "voice": "\\udfff"}'), (400,)),
        Case("voice of 5,000 characters", _speech({**good_text, "voice": "v" * 5000}), (400,)),
        Case(
            "combining marks: a + 406 x U+0301",
            _speech({**good_text, "input": "a" + "\u0301" * 406}),
            (400,),
        ),
        Case(
            "X-Request-Id of 10,000 characters",
            _speech(good_text, **{"X-Request-Id": "r" * 10_000}),
            (200,),
            "id replaced",
        ),
        Case("657 KB unknown field", _speech({**good_text, "junk": "x" * 657_000}), (200,)),
        Case("JSON body over 1 MiB", _speech({**good_text, "junk": "x" * 1_100_000}), (413,)),
        Case("empty JSON object", _speech({}), (400,)),
        Case("empty body", _speech(b""), (400,)),
        Case(
            "input over MAX_TOTAL_LENGTH", _speech({**good_text, "input": "word " * 1000}), (400,)
        ),
        Case("speed 100", _speech({**good_text, "speed": 100}), (400,)),
    ]
    return out


# -- observation ------------------------------------------------------------------------


def _tree(pid: int | None) -> set[int] | None:
    if pid is None:
        return None
    import psutil

    try:
        root = psutil.Process(pid)
        return {root.pid, *(p.pid for p in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def _socket_owners(pids: set[int]) -> set[str]:
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    return inodes


def udp_ports(pids: set[int] | None) -> set[int]:
    """UDP ports bound on this machine (of the process tree `pids`, when given)."""
    owned = _socket_owners(pids) if pids is not None else None
    ports: set[int] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if owned is not None and cols[9] not in owned:
                continue
            ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def store_files(root: Path) -> dict[str, tuple[int, float]]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime)
        for p in root.rglob("*")
        if p.is_file()
    }


class UdpWatch:
    """Samples bound UDP ports every 5 ms while a request runs."""

    def __init__(self, pids: set[int] | None) -> None:
        self.pids = pids
        self.baseline = udp_ports(pids)
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen |= udp_ports(self.pids) - self.baseline
            time.sleep(0.005)

    def __enter__(self) -> UdpWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.seen |= udp_ports(self.pids) - self.baseline


def run_case(client: httpx.Client, case: Case, voice_dir: Path, pid: int | None) -> Outcome:
    before = store_files(voice_dir)
    with UdpWatch(_tree(pid)) as watch:
        began = time.monotonic()
        try:
            response = case.send(client)
            status, body = response.status_code, response.content
            headers = response.headers
        except httpx.HTTPError as exc:
            status, body, headers = 0, repr(exc).encode(), httpx.Headers()
        seconds = time.monotonic() - began
    after = store_files(voice_dir)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    code = None
    problems: list[str] = []
    if status >= 400:
        try:
            error = json.loads(body)["error"]
            code = error.get("code")
            if set(error) != {"message", "type", "param", "code"}:
                problems.append("error is not the OpenAI envelope")
        except (ValueError, KeyError, TypeError):
            problems.append("error body is not the OpenAI envelope")
        if seconds >= REFUSAL_LIMIT_S:
            problems.append(f"refusal took {seconds:.2f} s")
    if status == 0 or status >= 500:
        problems.append(f"status {status}")
    elif status not in case.expect:
        problems.append(f"status {status}, expected {'/'.join(map(str, case.expect))}")
    rid = headers.get("x-request-id", "")
    if case.note == "id replaced" and not (0 < len(rid) <= 64):
        problems.append(f"X-Request-Id echoed with {len(rid)} characters")
    if watch.seen:
        problems.append(f"UDP ports bound: {sorted(watch.seen)}")
    if changed:
        problems.append(f"voice store changed: {changed[:3]}")
    return Outcome(case.name, status, code, seconds, sorted(watch.seen), changed, problems)


def table(outcomes: list[Outcome]) -> str:
    rows = [
        "| Input | Status | Code | Seconds | UDP bound | Store changed | Result |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        rows.append(
            f"| {o.name} | {o.status} | {o.code or ''} | {o.seconds:.3f} | "
            f"{', '.join(map(str, o.new_udp)) or 'none'} | {len(o.store_changed) or 'no'} | "
            f"{'pass' if o.passed else 'FAIL: ' + '; '.join(o.problems)} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tenants"]:  # the tenant sweep: tools/tenant_sweep.py
        from tools import tenant_sweep

        return tenant_sweep.main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="base URL of the running app, e.g. http://127.0.0.1:8000")
    parser.add_argument("--voice-dir", type=Path, required=True, help="the app's VOICE_LIBRARY_DIR")
    parser.add_argument("--pid", type=int, help="count only UDP sockets of this process tree")
    parser.add_argument("--api-key", help="Bearer key, when the app has API_KEYS set")
    parser.add_argument("--json", type=Path, help="also write the outcomes here")
    args = parser.parse_args(argv)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    outcomes = []
    with httpx.Client(base_url=args.url, timeout=30.0, headers=headers) as client:
        owner_id = setup(client)
        for case in cases(owner_id):
            outcome = run_case(client, case, args.voice_dir, args.pid)
            print(f"{'pass' if outcome.passed else 'FAIL'}  {outcome.name}", file=sys.stderr)
            outcomes.append(outcome)
    print(table(outcomes))
    failed = [o for o in outcomes if not o.passed]
    print(f"\n{len(outcomes) - len(failed)} of {len(outcomes)} cases passed.")
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
