"""AdmissionReview v1 parsing and the response written back."""

import base64
import json
from typing import Any

import pytest

from kubeserial_injector.injection import Decision
from kubeserial_injector.review import MAX_BODY_BYTES, BadReview, parse_review, review_response


def review(**request: Any) -> bytes:
    base: dict[str, Any] = {
        "uid": "u-1",
        "operation": "CREATE",
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "apps",
        "object": {"metadata": {"name": "p"}},
    }
    base.update(request)
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": base}
    ).encode()


def test_parse_a_pod_review() -> None:
    parsed = parse_review(review(dryRun=True))
    assert (parsed.uid, parsed.operation, parsed.namespace, parsed.resource) == (
        "u-1",
        "CREATE",
        "apps",
        "pods",
    )
    assert parsed.obj == {"metadata": {"name": "p"}} and parsed.dry_run


@pytest.mark.parametrize(
    ("body", "fragment", "status"),
    [
        (b"", "empty", 400),
        (b"{", "not JSON", 400),
        (b"\xff\xfe", "not JSON", 400),
        (b"[]", "JSON object", 400),
        (
            b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}',
            "admission.k8s.io/v1",
            400,
        ),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "no request", 400),
        (review(uid=""), "uid", 400),
        (review(uid=7), "uid", 400),
        (review(operation=None), "operation", 400),
        (review(resource="pods"), "resource", 400),
        (review(object=None), "object", 400),
        (b"[" * 100_000 + b"]" * 100_000, "", 400),
        (b" " * (MAX_BODY_BYTES + 1), "larger than", 413),
    ],
)
def test_malformed_reviews_are_rejected_with_a_reason(body: bytes, fragment: str, status: int) -> None:
    with pytest.raises(BadReview) as err:
        parse_review(body)
    assert fragment in str(err.value) and err.value.status == status


def test_delete_needs_no_object() -> None:
    assert parse_review(review(operation="DELETE", object=None)).obj == {}


def test_response_for_a_patch_with_warnings() -> None:
    patch = [{"op": "add", "path": "/spec/x", "value": 1}]
    out = review_response("u-1", Decision(allowed=True, patch=patch, warnings=("w" * 300,)))
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    response = out["response"]
    assert response["uid"] == "u-1" and response["allowed"] is True and response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == patch
    assert response["warnings"] == ["w" * 256]
    assert "status" not in response


def test_response_for_a_denial() -> None:
    out = review_response("u-2", Decision(allowed=False, message="no", code=403, reason="Forbidden"))
    assert out["response"] == {
        "uid": "u-2",
        "allowed": False,
        "status": {"code": 403, "reason": "Forbidden", "message": "no"},
    }
