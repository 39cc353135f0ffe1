"""The browser playground: its page at `/` and `/ui/`, its static files under `/ui/`.

The files ship in the package (`chatterbox_serve/web/`) and are read once, when the
router is built, so a request never touches the disk and no path from a URL ever
reaches the file system: only names found at build time are served.
"""

from __future__ import annotations

import html
from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

WEB_DIR = "web"  # inside the chatterbox_serve package
UI_PREFIX = "/ui"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# Everything the page needs comes from its own origin; audio plays from blob: URLs.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": _CSP,
}
_BASE_TAG = '<base href="/ui/">'


def wants_html(accept: str | None) -> bool:
    """Whether a request's Accept header asks for a web page (a browser navigating)."""
    return accept is not None and "text/html" in accept.lower()


def load_web_files() -> dict[str, bytes]:
    """Every servable file of the playground, keyed by its path below `/ui/`."""
    files: dict[str, bytes] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = prefix + child.name
            if child.is_dir():
                walk(child, name + "/")
            elif any(name.endswith(ext) for ext in _MEDIA_TYPES):
                files[name] = child.read_bytes()

    walk(resources.files("chatterbox_serve") / WEB_DIR, "")
    if "index.html" not in files:
        raise FileNotFoundError("chatterbox_serve/web has no index.html: an incomplete install")
    return files


def build_web_router(files: dict[str, bytes] | None = None) -> APIRouter:
    """Routes for the page and its files; none of them needs an API key (see auth)."""
    files = load_web_files() if files is None else files
    index = files["index.html"].decode()
    if _BASE_TAG not in index:
        raise ValueError(f"index.html must contain {_BASE_TAG!r}, rewritten per request")
    router = APIRouter(include_in_schema=False)

    def page(request: Request) -> Response:
        # Serve mounts the app under its route prefix; the page's URLs follow it.
        base = html.escape(request.scope.get("root_path", "").rstrip("/") + UI_PREFIX + "/")
        body = index.replace(_BASE_TAG, f'<base href="{base}">', 1)
        return Response(body, media_type=_MEDIA_TYPES[".html"], headers=_HEADERS)

    @router.get("/")
    def root(request: Request) -> Response:
        if not wants_html(request.headers.get("accept")):
            raise StarletteHTTPException(404)  # what API clients of `/` always got
        return page(request)

    router.add_api_route(UI_PREFIX, page, methods=["GET"])
    router.add_api_route(UI_PREFIX + "/", page, methods=["GET"])

    @router.get(UI_PREFIX + "/{name:path}")
    def asset(name: str, request: Request) -> Response:
        if name == "index.html":
            return page(request)
        data = files.get(name)
        if data is None:
            raise StarletteHTTPException(404)
        suffix = name[name.rfind(".") :]
        return Response(data, media_type=_MEDIA_TYPES[suffix], headers=_HEADERS)

    return router
