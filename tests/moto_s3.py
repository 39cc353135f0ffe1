"""A local S3-compatible server for tests: moto in server mode, on a free port."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from chatterbox_serve.voices.store import S3VoiceStore


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """Run moto's S3 server in a thread; yields its endpoint URL."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = DomainDispatcherApplication(create_backend_app)
    # One request at a time: moto checks conditional headers and then writes, which is
    # atomic only when requests do not interleave (real S3 does this server-side).
    server = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


def open_store(endpoint: str, url: str) -> S3VoiceStore:
    """A store on the moto server, with its fake credentials."""
    return S3VoiceStore(
        url, endpoint, key="testing", secret="testing", client_kwargs={"region_name": "us-east-1"}
    )


def new_bucket_store(endpoint: str) -> S3VoiceStore:
    """A store on a fresh bucket of the moto server."""
    bucket = f"voices-{uuid.uuid4().hex[:12]}"
    store = open_store(endpoint, f"s3://{bucket}/library")
    store.fs.call_s3("create_bucket", Bucket=bucket)
    return store
