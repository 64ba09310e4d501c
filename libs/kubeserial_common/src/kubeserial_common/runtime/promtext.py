"""A small Prometheus text-format (0.0.4) writer: counters, gauges and histograms.

For the processes that run once per node, per device or per consumer (the monitor, the gateway and
its bridge), where prometheus_client's import (http.server, email, urllib, threads: about 4.5 MiB of
resident memory) costs more than the rest of the metrics together. Same shape as prometheus_client's
API for what they use (`Counter(name, doc, labelnames, registry=)`, `.labels(...)`, `.inc()`,
`Gauge.set()`, `Histogram(name, doc, buckets=, registry=).observe()`), and the same exposition:
counters as `<name>_total`, histograms as cumulative `_bucket{le=...}` with `+Inf`, `_sum` and
`_count`, label values escaped, HELP and TYPE lines. Scrapers and prometheus_client's own parser
read it unchanged. The controller and the injector keep prometheus_client; the HealthServer serves
either kind of registry.
"""

from collections.abc import Iterator, Sequence
from typing import Final

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    if value != value:  # NaN
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Child:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class _Metric:
    kind: str = ""
    suffix: str = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: "Registry | None" = None,
    ) -> None:
        self.name = name.removesuffix("_total") if self.kind == "counter" else name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _Child] = {}
        self._unlabelled = _Child() if not self.labelnames else None
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str, **by_name: str) -> _Child:
        if by_name:
            values = tuple(by_name[n] for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = _Child()
        return child

    def _only(self) -> _Child:
        if self._unlabelled is None:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use .labels(...)")
        return self._unlabelled

    def inc(self, amount: float = 1.0) -> None:
        self._only().inc(amount)

    def samples(self) -> Iterator[tuple[tuple[str, ...], float]]:
        if self._unlabelled is not None:
            yield (), self._unlabelled.value
        else:
            yield from ((key, child.value) for key, child in self._children.items())

    def expose(self) -> str:
        lines = [
            f"# HELP {self.name}{self.suffix} {_escape_help(self.documentation)}",
            f"# TYPE {self.name}{self.suffix} {self.kind}",
        ]
        for key, value in self.samples():
            labels = ""
            if key:
                pairs = ",".join(
                    f'{n}="{_escape_value(v)}"' for n, v in zip(self.labelnames, key, strict=True)
                )
                labels = "{" + pairs + "}"
            lines.append(f"{self.name}{self.suffix}{labels} {_number(value)}")
        return "\n".join(lines) + "\n"


class Counter(_Metric):
    kind = "counter"
    suffix = "_total"

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        super().inc(amount)


class Gauge(_Metric):
    kind = "gauge"

    def set(self, value: float) -> None:
        self._only().set(value)

    def dec(self, amount: float = 1.0) -> None:
        self._only().dec(amount)


class Histogram:
    """Observations into fixed buckets (upper bounds, ascending; +Inf is added), no labels."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Sequence[float],
        registry: "Registry | None" = None,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must be distinct upper bounds, got {tuple(buckets)}")
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self.sum = 0.0
        if registry is not None:
            registry.register(self)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        self.sum += value

    def expose(self) -> str:
        lines = [f"# HELP {self.name} {_escape_help(self.documentation)}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            cumulative += count
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {_number(cumulative)}')
        lines.append(f"{self.name}_sum {_number(self.sum)}")
        lines.append(f"{self.name}_count {_number(cumulative)}")
        return "\n".join(lines) + "\n"


class Registry:
    """What one HealthServer serves at /metrics."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric | Histogram] = {}

    def register(self, metric: "_Metric | Histogram") -> None:
        if metric.name in self._metrics:
            raise ValueError(f"duplicate metric {metric.name}")
        self._metrics[metric.name] = metric

    content_type: Final = CONTENT_TYPE

    def expose(self) -> bytes:
        return "".join(m.expose() for m in self._metrics.values()).encode()
