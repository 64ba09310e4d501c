"""Typed Kubernetes API errors, each carrying the apiserver's Status object.

Callers write `except NotFound:` rather than `except Exception` plus a status-code predicate. The
classes are pure (no client library): the runtime (`kubeserial_common.runtime.kube`) translates
kubernetes_asyncio and aiohttp failures into them, and the gateway's small HTTPS client raises them
directly, so both clients fail the same way.
"""

import json
from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """A failed API call. `status` is the HTTP status (0 when no valid answer came); `status_obj`
    the apiserver's Status dict (`{}` when the answer was not one)."""

    def __init__(self, status: int, message: str, *, status_obj: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.status_obj: dict[str, Any] = dict(status_obj or {})

    @property
    def reason(self) -> str:
        """The Status reason (NotFound, AlreadyExists, Invalid, Conflict, Expired, ...), or ""."""
        return str(self.status_obj.get("reason") or "")


class Unreachable(ApiError):
    """No valid answer: connection refused or reset, timeout, TLS failure, a malformed response."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class BadRequest(ApiError):  # 400
    pass


class Unauthorized(ApiError):  # 401
    pass


class Forbidden(ApiError):  # 403
    pass


class NotFound(ApiError):  # 404
    pass


class Conflict(ApiError):  # 409: a stale resourceVersion, or a uid precondition that failed
    pass


class AlreadyExists(Conflict):  # 409 with reason AlreadyExists: a create lost to an existing object
    pass


class Gone(ApiError):  # 410: the watch's resourceVersion is too old; LIST again
    pass


class Invalid(ApiError):  # 422: the object fails validation (the message names the field)
    pass


class TooManyRequests(ApiError):  # 429
    pass


class ServerError(ApiError):  # 5xx
    pass


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}


def _status_object(body: bytes | str | Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The Status dict in `body` (or {}) and the text to fall back on."""
    if body is None:
        return {}, ""
    if isinstance(body, Mapping):
        return dict(body), ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}, text[:300]
    return (parsed, "") if isinstance(parsed, dict) else ({}, text[:300])


def from_status(
    status: int, body: bytes | str | Mapping[str, Any] | None = None, *, reason: str = ""
) -> ApiError:
    """The typed error for an HTTP status and the body the apiserver sent with it."""
    status_obj, text = _status_object(body)
    message = str(status_obj.get("message") or text or reason or f"HTTP {status}")
    if status == 0:
        return Unreachable(message)
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    if cls is Conflict and status_obj.get("reason") == "AlreadyExists":
        cls = AlreadyExists
    if cls is Gone or (status == 410 and not status_obj):
        # A watch's ERROR event says only code and "reason: message"; keep both readable.
        status_obj = status_obj or {"kind": "Status", "code": status, "reason": "Expired", "message": message}
    return cls(status, message, status_obj=status_obj)


def message_of(exc: BaseException) -> str:
    """What to tell a user about a failure: the apiserver's message (it names the offending field)."""
    if isinstance(exc, ApiError):
        return exc.message or str(exc)
    return str(exc) or repr(exc)


def status_of(exc: BaseException) -> int | None:
    return exc.status if isinstance(exc, ApiError) else None


class PermanentError(Exception):
    """Raised by a reconciler for input it cannot act on (an invalid Manager, a pod spec that cannot
    be connected). The work queue does not retry it: the object's next change queues it again. The
    reconciler has already reported it (condition or status message) and kept what exists; `reason`
    is the Warning Event's reason, in CamelCase."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
