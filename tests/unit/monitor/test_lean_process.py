"""The monitor runs once per node on a 30 MiB budget (issue 14): it serves its metrics with the
library's small writer and logs through the lean renderer, so neither prometheus_client, structlog
nor the Kubernetes client is ever loaded into it. Checked in a fresh interpreter, after the paths
that would load them lazily (configure_logging, a log line, /metrics) have run."""

import json
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from kubeserial_common.runtime.health import exposition
from kubeserial_monitor.metrics import LATENCY_BUCKETS, Metrics

HEAVY = ("structlog", "prometheus_client", "kubernetes_asyncio", "aiohttp", "rich", "pydantic")

PROGRAM = f"""
import json, sys
from kubeserial_monitor import __main__ as entry
from kubeserial_monitor.metrics import Metrics
from kubeserial_common.runtime.health import exposition

entry.configure_logging(level="info", fmt="json", lean=True)
entry.log.info("started", node="node-a")
metrics = Metrics()
metrics.plug_to_port.observe(0.01)
exposition(metrics.registry)
print(json.dumps(sorted(name for name in {HEAVY!r} if name in sys.modules)))
"""


def test_monitor_loads_no_heavy_library() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    line = json.loads(done.stderr.splitlines()[-1])  # the lean renderer: one JSON line per event
    assert (line["event"], line["node"], line["level"]) == ("started", "node-a", "info")


def test_metrics_keep_their_names_and_parse_back() -> None:
    metrics = Metrics()
    metrics.udev_events.labels("add").inc()
    metrics.port_writes.labels("created").inc(2)
    metrics.usb_ttys.set(3)
    for seconds in (0.004, 0.04, 0.04, 20.0):
        metrics.plug_to_port.observe(seconds)
    _, body = exposition(metrics.registry)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("kubeserial_monitor_udev_events_total", (("action", "add"),))] == 1
    assert samples[("kubeserial_monitor_serialport_writes_total", (("outcome", "created"),))] == 2
    assert samples[("kubeserial_monitor_usb_ttys", ())] == 3
    assert samples[("kubeserial_monitor_rescans_total", ())] == 0
    name = "kubeserial_monitor_plug_to_port_seconds"
    assert samples[(f"{name}_count", ())] == 4
    assert abs(samples[(f"{name}_sum", ())] - 20.084) < 1e-9
    buckets = {dict(k[1])["le"]: v for k, v in samples.items() if k[0] == f"{name}_bucket"}
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert (buckets["0.005"], buckets["0.035"], buckets["0.05"], buckets["10.0"], buckets["+Inf"]) == (
        1,
        1,
        3,
        3,
        4,
    )
