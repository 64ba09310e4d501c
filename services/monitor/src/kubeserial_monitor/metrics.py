"""Prometheus metrics of the monitor, on its own registry (served by the HealthServer).

One monitor runs on every node, so it uses the library's small text writer (runtime.promtext), not
prometheus_client (issue 14: the monitor's budget is 30 MiB). Names and exposition are unchanged.
"""

from dataclasses import dataclass, field

from kubeserial_common.runtime.promtext import Counter, Gauge, Histogram, Registry

# Plug-to-status is a few milliseconds on a healthy apiserver; the upper buckets catch trouble.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Metrics:
    registry: Registry = field(default_factory=Registry)

    def __post_init__(self) -> None:
        self.udev_events = Counter(
            "kubeserial_monitor_udev_events_total",
            "tty uevents received from netlink, by action",
            ["action"],
            registry=self.registry,
        )
        self.rescans = Counter(
            "kubeserial_monitor_rescans_total", "Full udev rescans of the node's ttys", registry=self.registry
        )
        self.usb_ttys = Gauge(
            "kubeserial_monitor_usb_ttys", "USB ttys present on this node", registry=self.registry
        )
        self.port_writes = Counter(
            "kubeserial_monitor_serialport_writes_total",
            "SerialPort writes of this node's monitor, by outcome: created, updated, deleted",
            ["outcome"],
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "kubeserial_monitor_reconcile_errors_total",
            "Failed SerialPort reconciles (retried with backoff)",
            registry=self.registry,
        )
        self.plug_to_port = Histogram(
            "kubeserial_monitor_plug_to_port_seconds",
            "From the udev add event to the node's SerialPort written",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
