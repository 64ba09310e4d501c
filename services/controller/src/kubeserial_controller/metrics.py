"""Prometheus metrics of the controller, on the HealthServer's registry."""

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubeserial_common.core import constants as c
from kubeserial_controller.decisions import Obj, condition_state


class SerialDeviceStates(Collector):
    """kubeserial_controller_serialdevices{condition,status}: counted from the cache at scrape time."""

    def __init__(self, devices: Callable[[], Iterable[Obj]]) -> None:
        self.devices = devices

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "kubeserial_controller_serialdevices",
            "SerialDevices by condition and status (None: condition not written yet).",
            labels=["condition", "status"],
        )
        tally = Tally(
            (condition_type, condition_state(device, condition_type))
            for device in self.devices()
            for condition_type in c.CONDITION_TYPES
        )
        for (condition_type, status), count in sorted(tally.items()):
            family.add_metric([condition_type, status], count)
        yield family


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.reconciles = Counter(
            "kubeserial_controller_reconciles",
            "Reconciles by kind and result (success, error).",
            ["kind", "result"],
            registry=registry,
        )
        self.reconcile_seconds = Histogram(
            "kubeserial_controller_reconcile_duration_seconds",
            "Time spent in one reconcile.",
            ["kind"],
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.queue_depth = Gauge(
            "kubeserial_controller_queue_depth",
            "Keys waiting in each work queue.",
            ["kind"],
            registry=registry,
        )
        self.events_dropped = Gauge(
            "kubeserial_controller_events_dropped",
            "Events dropped since the start because too many were waiting to be posted (the status"
            " is the record; a cold start of thousands of devices drops most of its Events).",
            registry=registry,
        )
        self.leader = Gauge(
            "kubeserial_controller_leader", "1 while this replica holds the leader Lease.", registry=registry
        )

    def track_dropped_events(self, dropped: Callable[[], int]) -> None:
        """kubeserial_controller_events_dropped: Events not posted because too many were unsent."""
        self.events_dropped.set_function(lambda: float(dropped()))

    def track_queue(self, kind: str, depth: Callable[[], int]) -> None:
        self.queue_depth.labels(kind=kind).set_function(lambda: float(depth()))

    def track_devices(self, devices: Callable[[], Iterable[Obj]]) -> None:
        self.registry.register(SerialDeviceStates(devices))
