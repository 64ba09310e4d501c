"""Prometheus metrics of the monitor, on its own registry (served by the HealthServer)."""

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Plug-to-status is a few milliseconds on a healthy apiserver; the upper buckets catch trouble.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

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
        self.devices_matched = Gauge(
            "kubeserial_monitor_devices_matched",
            "SerialDevices that match a tty present on this node",
            registry=self.registry,
        )
        self.devices_owned = Gauge(
            "kubeserial_monitor_devices_owned",
            "SerialDevices this node holds (Available=True, status.nodeName = this node)",
            registry=self.registry,
        )
        self.claims = Counter(
            "kubeserial_monitor_claims_total",
            "Status writes by outcome: claimed, updated, released, lost (another node won the race)",
            ["outcome"],
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "kubeserial_monitor_reconcile_errors_total",
            "Failed reconciles (retried with backoff), by kind",
            ["kind"],
            registry=self.registry,
        )
        self.plug_to_status = Histogram(
            "kubeserial_monitor_plug_to_status_seconds",
            "From the udev add event to Available=True written on the SerialDevice",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.node_patches = Counter(
            "kubeserial_monitor_node_resource_patches_total",
            "JSON patches of kubeserial.com/* extended resources on this node's status",
            registry=self.registry,
        )
