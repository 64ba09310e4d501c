"""A small Prometheus text-format (0.0.4) writer: counters and gauges, with or without labels.

For the processes that run once per device or per consumer (the gateway and its bridge), where
prometheus_client's import (http.server, email, urllib, threads: about 4.5 MiB of resident memory)
costs more than the rest of the metrics together. Same shape as prometheus_client's API for what
they use (`Counter(name, doc, labelnames, registry=)`, `.labels(...)`, `.inc()`, `Gauge.set()`),
and the same exposition: counters as `<name>_total`, label values escaped, HELP and TYPE lines.
Scrapers and prometheus_client's own parser read it unchanged. The other services keep
prometheus_client; the HealthServer serves either kind of registry.
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


class Registry:
    """What one HealthServer serves at /metrics."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def register(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"duplicate metric {metric.name}")
        self._metrics[metric.name] = metric

    content_type: Final = CONTENT_TYPE

    def expose(self) -> bytes:
        return "".join(m.expose() for m in self._metrics.values()).encode()
