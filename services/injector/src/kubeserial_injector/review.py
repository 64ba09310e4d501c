"""AdmissionReview v1 on the wire: parsing a request body and writing the answer (pure functions).

Anything that is not a well-formed AdmissionReview v1 raises BadReview; the HTTP layer turns that
into a 400 with the reason, so a malformed request can never become a 500.
"""

import base64
import json
from dataclasses import dataclass
from typing import Any, Final

from kubeserial_injector.injection import Decision

API_VERSION: Final = "admission.k8s.io/v1"
KIND: Final = "AdmissionReview"
MAX_BODY_BYTES: Final = 8 * 1024 * 1024  # the apiserver caps objects at ~3 MiB; a review holds one
MAX_WARNING_CHARS: Final = 256  # the apiserver may truncate longer warnings


class BadReview(ValueError):
    """The request body is not an AdmissionReview v1 we can answer; `status` is the HTTP status."""

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class AdmissionRequest:
    uid: str
    operation: str
    namespace: str
    name: str
    resource: str
    obj: dict[str, Any]
    dry_run: bool


def parse_review(body: bytes) -> AdmissionRequest:
    if len(body) > MAX_BODY_BYTES:
        raise BadReview(f"request body larger than {MAX_BODY_BYTES} bytes", status=413)
    if not body:
        raise BadReview("empty request body; expected an AdmissionReview")
    try:
        review = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadReview(f"request body is not JSON: {exc}") from None
    except RecursionError:
        raise BadReview("request body is nested too deeply") from None
    if not isinstance(review, dict):
        raise BadReview("request body must be a JSON object (an AdmissionReview)")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise BadReview(f"expected apiVersion {API_VERSION} and kind {KIND}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid must be a non-empty string")
    operation = request.get("operation")
    if not isinstance(operation, str) or not operation:
        raise BadReview("request.operation must be a string")
    resource = request.get("resource")
    if not isinstance(resource, dict):
        raise BadReview("request.resource must be an object")
    obj = request.get("object")
    if operation in ("CREATE", "UPDATE") and not isinstance(obj, dict):
        raise BadReview(f"request.object must be an object for {operation}")
    return AdmissionRequest(
        uid=uid,
        operation=operation,
        namespace=_text(request.get("namespace")),
        name=_text(request.get("name")),
        resource=_text(resource.get("resource")),
        obj=obj if isinstance(obj, dict) else {},
        dry_run=request.get("dryRun") is True,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def review_response(uid: str, decision: Decision) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if decision.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(
            json.dumps(decision.patch, separators=(",", ":")).encode()
        ).decode()
    if decision.warnings:
        response["warnings"] = [w[:MAX_WARNING_CHARS] for w in decision.warnings]
    if not decision.allowed:
        response["status"] = {
            "code": decision.code,
            "reason": decision.reason,
            "message": decision.message,
        }
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}
