"""The playground's page and files as the ingress serves them, keys on."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from chatterbox_serve.engines.simulated import SimulatedEngine
from deployments.ingress import build_api
from deployments.routes import web
from tests.component.conftest import make_settings
from tests.local_backend import LocalBackend

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture
async def keyed() -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(API_KEYS="k1")
    app = build_api(
        settings, LocalBackend(settings, SimulatedEngine(settings.simulated)), "simulated"
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.mark.parametrize("path", ["/", "/ui", "/ui/", "/ui/index.html"])
async def test_browsers_get_the_page_without_a_key(keyed, path):
    r = await keyed.get(path, headers=BROWSER)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<base href="/ui/">' in r.text and 'src="js/app.js"' in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp


async def test_api_clients_of_root_see_what_they_always_saw(keyed):
    assert (await keyed.get("/")).status_code == 401  # no key: refused before routing
    r = await keyed.get("/", headers={"Authorization": "Bearer k1"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "http_404"


async def test_static_files_have_their_types_and_the_api_still_needs_a_key(keyed):
    js = await keyed.get("/ui/js/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    css = await keyed.get("/ui/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (await keyed.get("/config")).status_code == 401
    assert (await keyed.get("/ui/../config")).status_code in (401, 404)


@pytest.mark.parametrize(
    "path", ["/ui/missing.js", "/ui/js%2F..%2F..%2Fauth.py", "/ui/%2e%2e/protocol.py", "/ui/js"]
)
async def test_only_packaged_files_are_served(keyed, path):
    r = await keyed.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "http_404"


def test_every_module_the_page_imports_ships_in_the_package():
    files = web.web_files()
    assert {"index.html", "style.css", "js/app.js", "js/player.js"} <= set(files)
    for name, data in files.items():
        if name.endswith(".js"):
            for line in data.decode().splitlines():
                if line.startswith("import ") and " from " in line:
                    target = line.split(" from ")[1].strip(' ";').removeprefix("./")
                    assert f"js/{target}" in files, f"{name} imports a missing {target}"
                assert "http://" not in line and "https://" not in line, f"{name}: {line}"


async def test_the_page_follows_the_route_prefix():
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(web.router)
    transport = httpx.ASGITransport(app=app, root_path="/tts")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/tts/ui/", headers=BROWSER)
    assert r.status_code == 200
    assert '<base href="/tts/ui/">' in r.text


def test_the_wheel_ships_every_file_of_the_page():
    # A regex, not tomllib, which Python 3.10 (still in requires-python) lacks.
    root = Path(__file__).resolve().parents[2]
    line = re.search(r"^chatterbox_serve = \[(.*)\]$", (root / "pyproject.toml").read_text(), re.M)
    assert line, "pyproject.toml lists no package-data for chatterbox_serve"
    globs = re.findall(r'"([^"]+)"', line.group(1))
    web_dir = root / "chatterbox_serve" / "web"
    files = [p.relative_to(web_dir).as_posix() for p in web_dir.rglob("*") if p.is_file()]
    shipped = [f for f in files if any(fnmatch.fnmatch(f"web/{f}", g) for g in globs)]
    assert sorted(shipped) == sorted(files) == sorted(web.web_files())
