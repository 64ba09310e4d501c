"""The chaos soak's bookkeeping, without I/O: numbered records on both directions of a session, the
invariants, and the report (bench/soak_real.py drives it on real nodes).

Each direction carries RECORD-byte records, a 10-digit sequence number and a newline. The receiver
knows the next number it should see: a higher one is a gap (records lost), a lower one a reorder
or a duplicate (never allowed). A gap is explained when a reconnect happened between the last
record before it and the first after it; any other gap is a violation.
"""

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

RECORD: Final = 11
_RECORD = re.compile(rb"^\d{10}$")


def records(first: int, count: int) -> bytes:
    return b"".join(b"%010d\n" % n for n in range(first, first + count))


@dataclass(frozen=True)
class Gap:
    after: float  # when the last record before the gap arrived
    seen: float  # when the first record after it arrived
    first_missing: int
    count: int


@dataclass
class StreamCheck:
    """The receiving end of one direction of the session."""

    name: str
    expected: int = 0
    delivered: int = 0  # records received in order
    lost: int = 0  # records never received (in gaps)
    partial_bytes: int = 0  # bytes of records cut by a reconnect
    gaps: list[Gap] = field(default_factory=list)
    reorders: list[tuple[float, int, int]] = field(default_factory=list)  # (when, got, expected)
    last_time: float = 0.0
    _buffer: bytes = b""

    def feed(self, data: bytes, now: float) -> None:
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            if not _RECORD.match(line):
                self.partial_bytes += len(line) + 1
                continue
            number = int(line)
            if number < self.expected:
                self.reorders.append((now, number, self.expected))
                continue
            if number > self.expected:
                self.gaps.append(Gap(self.last_time, now, self.expected, number - self.expected))
                self.lost += number - self.expected
            self.delivered += 1
            self.expected = number + 1
            self.last_time = now

    def connection_ended(self) -> None:
        """What is left of a record when a connection ends will never be completed."""
        self.partial_bytes += len(self._buffer)
        self._buffer = b""

    def unexplained_gaps(self, reconnects: Sequence[float]) -> list[Gap]:
        return [g for g in self.gaps if not any(g.after < t <= g.seen for t in reconnects)]


def bound_nodes(serialports: Iterable[Mapping[str, Any]], device: str) -> set[str]:
    """Nodes whose SerialPort is bound to `device` (status.device): more than one is a violation."""
    return {
        str((port.get("spec") or {}).get("nodeName"))
        for port in serialports
        if (port.get("status") or {}).get("device") == device
    }


@dataclass(frozen=True)
class FreeSample:
    at: float
    free: str | None  # the Free condition's status; None: could not be read
    session_up: bool  # what the test knows: its client has a working session
    calm: bool  # no fault active (an apiserver or a node away leaves Free stale by design)


def free_violations(samples: Sequence[FreeSample], *, bound: float) -> list[tuple[float, float]]:
    """Spans longer than `bound` in calm periods where Free said the opposite of the truth (Free
    is True exactly when no session is open). Unreadable and non-calm samples end a span."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    last = 0.0
    for sample in samples:
        wrong = (
            sample.calm and sample.free in ("True", "False") and (sample.free == "True") == sample.session_up
        )
        if wrong and start is None:
            start = sample.at
        if not wrong and start is not None:
            if last - start > bound:
                spans.append((start, last))
            start = None
        last = sample.at
    if start is not None and last - start > bound:
        spans.append((start, last))
    return spans


@dataclass
class FaultRecord:
    kind: str
    detail: str
    at: float
    recovered_at: float  # when the fault was undone (the same as `at` for a kill)
    converged_after: float | None  # seconds from recovered_at to everything working; None: never


@dataclass
class SoakReport:
    seconds: float
    faults: list[FaultRecord]
    directions: list[StreamCheck]
    reconnects: list[float]
    binding_violations: list[tuple[float, list[str]]]
    free_violation_spans: list[tuple[float, float]]
    free_bound: float
    converge_bound: float
    samples: int = 0  # invariant samples taken (binding, Free)
    record_bytes: int = RECORD

    def violations(self) -> list[str]:
        out: list[str] = []
        for fault in self.faults:
            if fault.converged_after is None or fault.converged_after > self.converge_bound:
                out.append(f"{fault.kind} ({fault.detail}): converged after {fault.converged_after}")
        for direction in self.directions:
            for gap in direction.unexplained_gaps(self.reconnects):
                out.append(f"{direction.name}: {gap.count} records lost with no reconnect at {gap.seen:.1f}")
            for when, got, expected in direction.reorders:
                out.append(f"{direction.name}: record {got} after {expected - 1} at {when:.1f}")
        for when, nodes in self.binding_violations:
            out.append(f"bound on {nodes} at once at {when:.1f}")
        for start, end in self.free_violation_spans:
            out.append(f"Free wrong for {end - start:.1f}s from {start:.1f} (bound {self.free_bound}s)")
        return out

    def summary(self) -> dict[str, Any]:
        converged = [f.converged_after for f in self.faults if f.converged_after is not None]
        kinds: dict[str, int] = {}
        for fault in self.faults:
            kinds[fault.kind] = kinds.get(fault.kind, 0) + 1
        return {
            "seconds": round(self.seconds, 1),
            "faults": len(self.faults),
            "faults_by_kind": kinds,
            "reconnects": len(self.reconnects),
            "directions": {
                d.name: {
                    "bytes_delivered": d.delivered * self.record_bytes,
                    "bytes_lost_in_reconnect_windows": d.lost * self.record_bytes + d.partial_bytes,
                    "gaps": len(d.gaps),
                    "reorders": len(d.reorders),
                }
                for d in self.directions
            },
            "converged_after_seconds": {
                "max": round(max(converged), 1) if converged else None,
                "median": round(statistics.median(converged), 1) if converged else None,
                "bound": self.converge_bound,
            },
            "invariant_samples": self.samples,
            "free_bound_seconds": self.free_bound,
            "violations": self.violations(),
        }
