"""The browser playground: its page at `/` and `/ui/`, its static files under `/ui/`.

The files ship in the package (`chatterbox_serve/web/`) and are read once, on first
use, so no path from a URL ever reaches the file system: only names found in the
package are served.
"""

from __future__ import annotations

import functools
import html
from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

router = APIRouter(include_in_schema=False)

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


@functools.cache
def web_files() -> dict[str, bytes]:
    """Every servable file of the playground, keyed by its path below `/ui/`.

    Raises:
        FileNotFoundError: the package has no `web/index.html` (an incomplete install).
        ValueError: `index.html` lacks the `<base>` tag each response rewrites.
    """
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
    if _BASE_TAG.encode() not in files["index.html"]:
        raise ValueError(f"index.html must contain {_BASE_TAG!r}, rewritten per request")
    return files


def _page(request: Request) -> Response:
    # Serve mounts the app under its route prefix; the page's URLs follow it.
    base = html.escape(request.scope.get("root_path", "").rstrip("/") + UI_PREFIX + "/")
    index = web_files()["index.html"].decode()
    body = index.replace(_BASE_TAG, f'<base href="{base}">', 1)
    return Response(body, media_type=_MEDIA_TYPES[".html"], headers=_HEADERS)


@router.get("/")
def root(request: Request) -> Response:
    """The page, for browsers; API clients of `/` get the 404 they always got."""
    if not wants_html(request.headers.get("accept")):
        raise StarletteHTTPException(404)
    return _page(request)


@router.get(UI_PREFIX)
@router.get(UI_PREFIX + "/")
def page(request: Request) -> Response:
    return _page(request)


@router.get(UI_PREFIX + "/{name:path}")
def asset(name: str, request: Request) -> Response:
    """A file of the playground; unknown names are 404 in the error envelope."""
    if name == "index.html":
        return _page(request)
    data = web_files().get(name)
    if data is None:
        raise StarletteHTTPException(404)
    return Response(data, media_type=_MEDIA_TYPES[name[name.rfind(".") :]], headers=_HEADERS)
