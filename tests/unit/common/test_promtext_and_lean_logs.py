"""The small Prometheus writer reads back through prometheus_client's own parser; lean logs are the
same JSON lines as structlog's."""

import io
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubeserial_common.runtime import logs
from kubeserial_common.runtime.health import exposition
from kubeserial_common.runtime.promtext import Counter, Gauge, Histogram, Registry


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_and_gauges_parse_back() -> None:
    registry = Registry()
    data = Counter("x_bytes", "Bytes\nmoved", ["direction"], registry=registry)
    data.labels("in").inc(3)
    data.labels(direction='we"ird\\').inc()
    sessions = Counter("x_sessions_total", "Sessions", registry=registry)
    sessions.inc()
    open_ = Gauge("x_open", "Open", registry=registry)
    open_.set(1)
    open_.dec()
    content_type, body = exposition(registry)
    assert content_type.startswith("text/plain; version=0.0.4")
    got = samples(body.decode())
    assert got[("x_bytes_total", (("direction", "in"),))] == 3
    assert got[("x_bytes_total", (("direction", 'we"ird\\'),))] == 1
    assert got[("x_sessions_total", ())] == 1
    assert got[("x_open", ())] == 0


def test_prometheus_client_registry_still_served() -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client import Counter as PCounter

    registry = CollectorRegistry()
    PCounter("y_things", "Things", registry=registry).inc(2)
    _, body = exposition(registry)
    assert samples(body.decode())[("y_things_total", ())] == 2


def test_lean_logs_are_json_lines() -> None:
    stream = io.StringIO()
    logs._lean = logs._Lean(20, "json", stream)
    try:
        log = logs.get_logger("t")
        log.debug("hidden")
        log.info("device lost", reason="hangup", count=1)
        try:
            raise ValueError("boom")
        except ValueError as exc:
            log.error("failed", exc_info=exc)
    finally:
        logs._lean = None
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["device lost", "failed"]
    assert lines[0]["reason"] == "hangup" and lines[0]["level"] == "info"
    assert lines[0]["timestamp"].endswith("Z")
    assert "ValueError: boom" in lines[1]["exception"]


def test_histogram_is_cumulative_and_rejects_bad_buckets() -> None:
    registry = Registry()
    latency = Histogram("x_seconds", "Latency", buckets=(0.1, 1.0), registry=registry)
    for value in (0.1, 0.5, 2.0):
        latency.observe(value)
    got = samples(exposition(registry)[1].decode())
    assert [got[("x_seconds_bucket", (("le", le),))] for le in ("0.1", "1.0", "+Inf")] == [1, 2, 3]
    assert got[("x_seconds_count", ())] == 3 and got[("x_seconds_sum", ())] == 2.6
    with pytest.raises(ValueError, match="x_bad: buckets must be distinct"):
        Histogram("x_bad", "Bad", buckets=(1.0, 1.0))
