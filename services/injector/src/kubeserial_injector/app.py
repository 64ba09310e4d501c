"""The FastAPI application: POST /mutate answers AdmissionReview v1 requests for pods.

A thin shell: read the body (bounded), parse it (review.py), look the devices up, decide
(injection.py), answer. Malformed input gets a 400 with the reason; nothing here raises to the
server, so a bad request can neither crash the process nor turn into a 500.
"""

import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram

from kubeserial_common.core.podspec import BridgeSettings
from kubeserial_injector.injection import (
    Decision,
    InjectionError,
    annotations_of,
    decide,
    requested_devices,
)
from kubeserial_injector.review import (
    MAX_BODY_BYTES,
    AdmissionRequest,
    BadReview,
    parse_review,
    review_response,
)

log = structlog.get_logger(__name__)

DeviceLookup = Callable[[Iterable[str]], Awaitable[Mapping[str, Mapping[str, Any] | None]]]
OUTCOMES = ("mutated", "unchanged", "denied", "invalid", "error")


@dataclass
class AdmissionMetrics:
    admissions: Counter
    latency: Histogram

    @classmethod
    def register(cls, registry: CollectorRegistry) -> "AdmissionMetrics":
        admissions = Counter(
            "kubeserial_injector_admissions",
            "Admission requests answered, by outcome (mutated, unchanged, denied, invalid, error).",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            admissions.labels(outcome)  # export zeroes so rates work from the first scrape
        latency = Histogram(
            "kubeserial_injector_admission_duration_seconds",
            "Time from request received to answer ready.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        return cls(admissions=admissions, latency=latency)


def create_app(*, lookup: DeviceLookup, settings: BridgeSettings, metrics: AdmissionMetrics) -> FastAPI:
    app = FastAPI(title="kubeserial-injector", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        started = time.perf_counter()
        outcome, status, body = await _answer(request, lookup=lookup, settings=settings)
        metrics.admissions.labels(outcome).inc()
        metrics.latency.observe(time.perf_counter() - started)
        return Response(content=body, status_code=status, media_type="application/json")

    return app


async def _answer(
    request: Request, *, lookup: DeviceLookup, settings: BridgeSettings
) -> tuple[str, int, bytes]:
    """(outcome, HTTP status, body) for one HTTP request."""
    try:
        review = parse_review(await _read_body(request))
    except BadReview as exc:
        log.info("malformed admission request", reason=str(exc), status=exc.status)
        return "invalid", exc.status, _problem(str(exc), exc.status)
    try:
        decision = await _decide(review, lookup=lookup, settings=settings)
    except Exception as exc:  # a bug or an unreachable apiserver: deny this pod, keep serving
        log.exception("admission failed", uid=review.uid)
        decision = Decision(
            allowed=False,
            message=f"kubeserial injector could not decide: {exc!r}"[:1024],
            code=500,
            reason="InternalError",
            outcome="error",
        )
    _log_decision(review, decision)
    return decision.outcome, 200, json.dumps(review_response(review.uid, decision)).encode()


async def _read_body(request: Request) -> bytes:
    """The body, refusing to buffer more than MAX_BODY_BYTES."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadReview(f"request body larger than {MAX_BODY_BYTES} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadReview(f"request body larger than {MAX_BODY_BYTES} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _decide(review: AdmissionRequest, *, lookup: DeviceLookup, settings: BridgeSettings) -> Decision:
    if review.resource != "pods":
        return Decision(
            allowed=True, warnings=(f"kubeserial injector ignores {review.resource or 'objects'}",)
        )
    try:
        names = requested_devices(annotations_of(review.obj))
    except InjectionError:
        names = []  # decide() reports the annotation's problem; nothing to look up
    known = await lookup(names) if names and review.operation == "CREATE" else {}
    return decide(operation=review.operation, pod=review.obj, known_devices=known, settings=settings)


def _log_decision(review: AdmissionRequest, decision: Decision) -> None:
    meta = review.obj.get("metadata")
    pod = review.name or (str(meta.get("generateName", "")) if isinstance(meta, dict) else "") + "*"
    fields = {"object": f"{review.namespace}/{pod}", "uid": review.uid, "dry_run": review.dry_run}
    if decision.outcome == "mutated":
        log.info("pod connected", devices=list(decision.devices), warnings=list(decision.warnings), **fields)
    elif decision.outcome in ("denied", "error"):
        log.info("pod refused", message=decision.message, **fields)
    else:
        log.debug("pod unchanged", **fields)


def _problem(reason: str, status: int) -> bytes:
    return json.dumps({"status": status, "reason": reason}).encode()
