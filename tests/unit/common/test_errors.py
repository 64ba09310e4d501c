"""Typed API errors: one class per answer a caller acts on, the apiserver's Status kept."""

import json

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from kubeserial_common.core import errors as e
from kubeserial_common.runtime.kube import translate, translated


def status(code: int, reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "code": code, "reason": reason, "message": message}).encode()


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (400, "BadRequest", e.BadRequest),
        (401, "Unauthorized", e.Unauthorized),
        (403, "Forbidden", e.Forbidden),
        (404, "NotFound", e.NotFound),
        (409, "Conflict", e.Conflict),
        (409, "AlreadyExists", e.AlreadyExists),
        (410, "Expired", e.Gone),
        (422, "Invalid", e.Invalid),
        (429, "TooManyRequests", e.TooManyRequests),
        (500, "InternalError", e.ServerError),
        (503, "ServiceUnavailable", e.ServerError),
    ],
)
def test_each_status_has_its_class_and_keeps_the_status(
    code: int, reason: str, cls: type[e.ApiError]
) -> None:
    error = e.from_status(code, status(code, reason, "it says why"))
    assert type(error) is cls
    assert (error.status, error.reason, error.message) == (code, reason, "it says why")
    assert error.status_obj["kind"] == "Status"


def test_already_exists_is_a_conflict_but_not_the_reverse() -> None:
    assert isinstance(e.from_status(409, status(409, "AlreadyExists", "x")), e.Conflict)
    assert not isinstance(e.from_status(409, status(409, "Conflict", "x")), e.AlreadyExists)


def test_a_body_that_is_not_a_status_is_kept_as_the_message() -> None:
    error = e.from_status(502, b"<html>bad gateway</html>")
    assert isinstance(error, e.ServerError) and error.message == "<html>bad gateway</html>"
    assert error.status_obj == {}
    assert e.from_status(418).message == "HTTP 418" and type(e.from_status(418)) is e.ApiError


def test_translate_client_exceptions() -> None:
    exc = ApiException(status=404, reason="Not Found")
    exc.body = status(404, "NotFound", 'serialdevices "x" not found')
    error = translate(exc)
    assert isinstance(error, e.NotFound) and error.message == 'serialdevices "x" not found'
    # A watch ERROR event: code and "reason: message", no body.
    gone = translate(ApiException(status=410, reason="Expired: too old resource version"))
    assert isinstance(gone, e.Gone) and "too old" in gone.message
    assert isinstance(translate(ApiException(status=0, reason="timeout")), e.Unreachable)
    assert isinstance(translate(aiohttp.ClientConnectionError("refused")), e.Unreachable)
    assert isinstance(translate(TimeoutError()), e.Unreachable)
    assert translate(KeyError("a bug")) is None


def test_translated_raises_typed_errors_and_leaves_bugs_alone() -> None:
    with pytest.raises(e.Conflict) as raised, translated():
        raise ApiException(status=409, reason="Conflict")
    assert isinstance(raised.value.__cause__, ApiException)
    with pytest.raises(KeyError), translated():
        raise KeyError("a bug stays a bug")


def test_message_and_status_of_any_exception() -> None:
    assert e.message_of(e.from_status(422, status(422, "Invalid", "spec.x: Required value"))) == (
        "spec.x: Required value"
    )
    assert e.message_of(ValueError("plain")) == "plain"
    assert e.status_of(e.NotFound(404, "x")) == 404 and e.status_of(ValueError()) is None
