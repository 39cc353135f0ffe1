"""The API docs at `/docs` (and `/redoc`): one server-rendered page, no script at all.

FastAPI's Swagger UI and ReDoc pages load their scripts from a CDN at a floating
version, on the same origin where the playground keeps the API key in the browser's
storage: whoever serves those scripts could read it. This page lists every operation
of the OpenAPI schema as plain HTML, under a policy that allows no script; tools
that want the whole schema read `/openapi.json`.
"""

from __future__ import annotations

import functools
import html
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;"
    "padding:.35rem .5rem;text-align:left;vertical-align:top}code{font-size:.95em}"
    ".m{font-weight:600;text-transform:uppercase}"
)


@router.get("/docs")
@router.get("/redoc")
def api_docs(request: Request) -> HTMLResponse:
    """Every documented operation: method, path, summary, and its first description line."""
    page = _render(request.app.title, request.app.version, request.app.openapi())
    return HTMLResponse(
        page,
        headers={
            "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


@functools.lru_cache(maxsize=4)
def _cached(title: str, version: str, rows: str) -> str:
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(title)} API</title><style>{_STYLE}</style>"
        f"<h1>{html.escape(title)} <small>{html.escape(version)}</small></h1>"
        '<p>The full schema: <a href="openapi.json"><code>/openapi.json</code></a>. '
        "Every route but the probes needs <code>Authorization: Bearer &lt;key&gt;</code>."
        "<table><tr><th>Method<th>Path<th>What it does</tr>"
        f"{rows}</table></html>"
    )


def _render(title: str, version: str, schema: dict[str, Any]) -> str:
    rows = []
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            description = (op.get("description") or "").strip().splitlines()
            text = op.get("summary") or ""
            if description:
                text = f"{text}: {description[0]}" if text else description[0]
            rows.append(
                f"<tr><td class=m>{html.escape(method)}<td><code>{html.escape(path)}</code>"
                f"<td>{html.escape(text)}</tr>"
            )
    return _cached(title, version, "".join(rows))
