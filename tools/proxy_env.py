"""Start a local Ray cluster as production runs: with the proxy middleware installed.

Ray's proxy reads `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` from the environment of
the process that starts Ray, and the ingress refuses to start without it. Tools and
tests that call `ray.init` themselves wrap it in `proxy_envelopes()`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from deployments.proxy_errors import CALLBACK_ENV, CALLBACK_PATH


@contextmanager
def proxy_envelopes() -> Iterator[None]:
    """Set the callback (and a PYTHONPATH that finds it) for the Ray processes started inside."""
    saved = {k: os.environ.get(k) for k in (CALLBACK_ENV, "PYTHONPATH")}
    os.environ[CALLBACK_ENV] = CALLBACK_PATH
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), saved["PYTHONPATH"]]))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
