"""Exponential backoff, capped. A module of its own so that processes which must stay small (the
gateway) can use it without importing the work queue and, through it, the Kubernetes client."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base: float = 0.05
    cap: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.base * (2 ** max(0, failures - 1))))
