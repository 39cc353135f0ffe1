import pickle

import pytest

from chatterbox_serve.errors import (
    EngineError,
    EngineOverloadedError,
    InvalidRequestError,
    PayloadTooLargeError,
    VoiceNotFoundError,
    error_payload,
)


def test_client_error_keeps_message_and_param():
    p = error_payload(InvalidRequestError("speed too high", param="speed"))
    assert p.status_code == 400
    assert p.body == {
        "error": {
            "message": "speed too high",
            "type": "invalid_request_error",
            "param": "speed",
            "code": "invalid_value",
        }
    }


def test_server_error_hides_internal_text_and_carries_request_id():
    p = error_payload(EngineError("CUDA OOM at 0xdeadbeef"), request_id="req-42")
    assert p.status_code == 500
    assert "0xdeadbeef" not in p.body["error"]["message"]
    assert "req-42" in p.body["error"]["message"]


def test_unexpected_exception_becomes_500_without_leaking():
    p = error_payload(KeyError("secret"), request_id="r")
    assert p.status_code == 500 and "secret" not in str(p.body)


def test_overload_is_503_with_retry_after():
    p = error_payload(EngineOverloadedError(retry_after_s=2))
    assert p.status_code == 503 and p.headers == {"Retry-After": "2"}


@pytest.mark.parametrize(
    "err",
    [
        InvalidRequestError("x", param="input"),
        VoiceNotFoundError("v", param="voice"),
        PayloadTooLargeError("big"),
        EngineOverloadedError(retry_after_s=5),
    ],
)
def test_errors_survive_pickling_across_handles(err):
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err)
    assert error_payload(copy) == error_payload(err)


def test_storage_failures_are_not_called_synthesis_failures() -> None:
    import errno

    full = error_payload(OSError(errno.ENOSPC, "No space left on device"), "rid-1")
    assert full.status_code == 507 and full.body["error"]["code"] == "insufficient_storage"
    read_only = error_payload(OSError(errno.EROFS, "Read-only file system"), "rid-1")
    assert read_only.status_code == 500 and read_only.body["error"]["code"] == "storage_error"
    for payload in (full, read_only):
        assert "Speech synthesis" not in payload.body["error"]["message"]
        assert "No space" not in payload.body["error"]["message"]
