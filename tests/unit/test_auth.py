"""API keys: parsing, the constant-time check, and the 401s a client sees."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from chatterbox_serve.auth import ApiKeys, load_api_keys, parse_keys
from chatterbox_serve.config import ConfigError, load_settings
from chatterbox_serve.engines.simulated import SimulatedEngine
from deployments.auth import bearer_token
from deployments.ingress import build_api
from tests.local_backend import LocalBackend

KEYS = "sk-alpha,sk-beta"


def _client(env: dict[str, str]) -> httpx.AsyncClient:
    settings = load_settings({"CHATTERBOX_SIM_BASE_S": "0", **env}, None)
    app = build_api(
        settings, LocalBackend(settings, SimulatedEngine(settings.simulated)), "simulated"
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def test_parse_keys_accepts_commas_newlines_and_comments() -> None:
    assert parse_keys("a, b\n# rotated out\n\nc,a\n") == (b"a", b"b", b"c")


def test_keys_from_a_mounted_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "api-keys"
    secret.write_text("sk-one\nsk-two\n")
    keys = load_api_keys(load_settings({"API_KEYS": str(secret)}, None))
    assert keys.accepts("sk-two") and not keys.accepts(str(secret))


def test_a_missing_secret_file_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_api_keys(load_settings({"API_KEYS": str(tmp_path / "absent")}, None))


def test_accepts_only_exact_keys() -> None:
    keys = ApiKeys(parse_keys(KEYS))
    assert keys.accepts("sk-beta")
    for wrong in ("sk-alph", "sk-alphaa", "SK-ALPHA", "", None, "sk-alpha,sk-beta", "ü"):
        assert not keys.accepts(wrong), wrong
    assert not ApiKeys().accepts("anything")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer sk-1", "sk-1"),
        ("bearer  sk-1 ", "sk-1"),
        ("Basic sk-1", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_config_endpoint_and_repr_never_show_keys() -> None:
    settings = load_settings({"API_KEYS": KEYS}, None)
    assert settings.env_view()["API_KEYS"] == "<redacted>"
    assert "sk-alpha" not in repr(settings) and "sk-alpha" not in str(settings.env_view())
    with pytest.raises(ConfigError) as info:
        load_settings({"API_KEYS": KEYS, "MAX_CHUNK_LENGTH": "1"}, None)
    assert "sk-alpha" not in str(info.value)


async def test_protected_routes_need_a_valid_key() -> None:
    async with _client({"API_KEYS": KEYS}) as c:
        missing = await c.post("/v1/audio/speech", json={"input": "hi"})
        wrong = await c.get("/v1/models", headers={"Authorization": "Bearer sk-gamma"})
        config = await c.get("/config", headers={"Authorization": "Basic sk-alpha"})
        ok = await c.post(
            "/v1/audio/speech", json={"input": "hi"}, headers={"Authorization": "Bearer sk-beta"}
        )
        shown = await c.get("/config", headers={"Authorization": "Bearer sk-alpha"})
    for r in (missing, wrong, config):
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.json()["error"]["code"] == "invalid_api_key"
    assert "Bearer" in missing.json()["error"]["message"]
    assert ok.status_code == 200 and ok.headers["content-type"] == "audio/mpeg"
    assert shown.json()["settings"]["API_KEYS"] == "<redacted>"


@pytest.mark.parametrize("path", ["/health", "/ping", "/docs", "/redoc", "/openapi.json"])
async def test_probes_and_docs_stay_public(path: str) -> None:
    async with _client({"API_KEYS": KEYS}) as c:
        assert (await c.get(path)).status_code == 200


async def test_cors_preflight_and_401_carry_cors_headers() -> None:
    origin = {"Origin": "https://app.example"}
    async with _client({"API_KEYS": KEYS, "CORS_ORIGINS": "https://app.example"}) as c:
        pre = await c.options(
            "/v1/audio/speech",
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        denied = await c.post("/v1/audio/speech", json={"input": "hi"}, headers=origin)
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://app.example"
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == "https://app.example"


@pytest.fixture
def serve_log(caplog: pytest.LogCaptureFixture):
    """Records the `ray.serve` logger, which Ray sets not to propagate to the root."""
    logger = logging.getLogger("ray.serve")
    logger.addHandler(caplog.handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield caplog
    logger.setLevel(level)
    logger.removeHandler(caplog.handler)


def test_open_api_warns_at_startup_and_keys_never_logged(serve_log: pytest.LogCaptureFixture):
    caplog = serve_log
    _client({})
    _client({"API_KEYS": KEYS})
    assert any(r.levelno == logging.WARNING and "OPEN" in r.getMessage() for r in caplog.records)
    assert "2 keys" in caplog.text and "sk-alpha" not in caplog.text


async def test_rejected_keys_are_not_logged(serve_log: pytest.LogCaptureFixture) -> None:
    async with _client({"API_KEYS": KEYS}) as c:
        r = await c.get("/v1/models", headers={"Authorization": "Bearer sk-alpha-typo"})
    assert r.status_code == 401 and serve_log.records
    assert "sk-alpha" not in serve_log.text


async def test_the_key_is_checked_before_any_body_is_read() -> None:
    env = {"API_KEYS": KEYS, "CHATTERBOX_MAX_JSON_BODY_BYTES": "1024"}
    async with _client(env) as c:
        anonymous = await c.post(
            "/v1/audio/speech", content=b"x" * 4096, headers={"content-type": "application/json"}
        )
        keyed = await c.post(
            "/v1/audio/speech",
            content=b"x" * 4096,
            headers={"content-type": "application/json", "Authorization": "Bearer sk-alpha"},
        )
    assert anonymous.status_code == 401  # an unauthenticated body is never buffered
    assert keyed.status_code == 413


@pytest.mark.parametrize("value", [",", " , ", "#x", "\n#only a comment\n"])
def test_api_keys_set_to_no_key_stops_startup(value: str) -> None:
    with pytest.raises(ConfigError, match="API_KEYS"):
        load_api_keys(load_settings({"API_KEYS": value}, None))


def test_non_ascii_keys_are_refused_at_startup() -> None:
    with pytest.raises(ConfigError, match="non-ASCII") as info:
        load_api_keys(load_settings({"API_KEYS": "sk-ok,sk-café"}, None))
    assert "café" not in str(info.value)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_non_utf8_header_bytes_get_no_5xx_and_are_not_logged(
    method: str, serve_log: pytest.LogCaptureFixture
) -> None:
    async with _client({"API_KEYS": KEYS}) as c:
        bad_key = await c.request(
            method,
            "/v1/audio/speech",
            json={"input": "hi"},
            headers={"Authorization": b"Bearer sk-alpha\xff\xfe"},
        )
        odd_header = await c.request(
            method,
            "/v1/audio/speech",
            json={"input": "hi"},
            headers={"Authorization": "Bearer sk-alpha", "X-Odd": b"caf\xe9"},
        )
    assert bad_key.status_code == 401 and bad_key.json()["error"]["code"] == "invalid_api_key"
    assert odd_header.status_code < 500
    assert "sk-alpha" not in serve_log.text


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123.X_y", True), ("x" * 65, False), ("bad id", False), ("a\u00e9", False)],
)
async def test_request_ids_are_echoed_only_when_well_formed(given: str, kept: bool) -> None:
    async with _client({}) as c:
        r = await c.post(
            "/v1/audio/speech", json={}, headers={"X-Request-Id": given.encode("utf-8")}
        )
    assert r.status_code == 400
    echoed = r.headers.get("x-request-id")
    if kept:  # Serve's proxy echoes a well-formed id; the app leaves it alone
        assert echoed is None
    else:
        assert echoed is not None and echoed != given and 1 <= len(echoed) <= 64


async def test_an_empty_json_body_gets_a_readable_message() -> None:
    async with _client({}) as c:
        r = await c.post(
            "/v1/audio/speech", content=b"", headers={"content-type": "application/json"}
        )
    assert r.status_code == 400
    assert "None" not in r.json()["error"]["message"]


def test_unknown_fields_are_logged_by_name_capped(caplog: pytest.LogCaptureFixture) -> None:
    from chatterbox_serve.protocol import SpeechRequest

    caplog.set_level(logging.INFO, logger="chatterbox_serve.protocol")
    fields = {f"field_{i}_" + "x" * 10_000: "v" * 100_000 for i in range(50)}
    SpeechRequest.model_validate({"input": "hi", **fields})
    line = "\n".join(r.getMessage() for r in caplog.records)
    assert "and 40 more" in line and len(line) < 2000 and "vvvv" not in line


class _CountingBackend(LocalBackend):
    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.health_calls = 0

    async def health(self) -> dict[str, object]:
        self.health_calls += 1
        return await super().health()


async def test_health_is_cached_and_shows_internals_only_with_a_key() -> None:
    settings = load_settings({"CHATTERBOX_SIM_BASE_S": "0", "API_KEYS": KEYS}, None)
    backend = _CountingBackend(settings, SimulatedEngine(settings.simulated))
    app = build_api(settings, backend, "simulated")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        anonymous = [await c.get("/health") for _ in range(10)]
        keyed = await c.get("/health", headers={"Authorization": "Bearer sk-alpha"})
    assert backend.health_calls == 1
    assert all(
        r.json() == {"status": "healthy", "model_ready": True, "model_loaded": True}
        for r in anonymous
    )
    assert keyed.json()["engine"] == "simulated" and len(keyed.json()) > 3


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_api_keys_stops_startup_instead_of_opening_the_api(value: str) -> None:
    # An empty Kubernetes Secret gives API_KEYS=""; that must not mean "no keys".
    with pytest.raises(ConfigError, match="API_KEYS is set but empty"):
        load_api_keys(load_settings({"API_KEYS": value}, None))
    assert not load_api_keys(load_settings({}, None)).enabled  # unset: open, as documented


def test_keys_are_compared_as_equal_length_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    lengths: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        lengths.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    keys = ApiKeys(parse_keys("short,a-much-longer-key-than-the-other-one"))
    assert keys.accepts("short") and not keys.accepts("x" * 500)
    # compare_digest's time depends on the lengths it is given: only digests reach it.
    assert lengths and set(lengths) == {(32, 32)}


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_api_docs_load_no_script_at_all(path: str) -> None:
    # The playground keeps the key in this origin's storage: no third-party (or any) script.
    async with _client({"API_KEYS": KEYS}) as c:
        r = await c.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<script" not in r.text.lower() and "cdn" not in r.text.lower()
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert "/v1/audio/speech" in r.text and "/openapi.json" in r.text
