"""Condition bookkeeping as pure functions over the wire form (lists of dicts).

Semantics follow Kubernetes conventions: lastTransitionTime moves only when status changes;
lastHeartbeatTime moves whenever the writer re-confirms the condition.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def now_rfc3339() -> str:
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ConditionUpdate:
    type: str
    status: str
    reason: str
    message: str = ""
    observed_generation: int | None = None


def find_condition(conditions: Iterable[Mapping[str, Any]], condition_type: str) -> Mapping[str, Any] | None:
    return next((cond for cond in conditions if cond.get("type") == condition_type), None)


def get_condition(obj: Mapping[str, Any] | None, condition_type: str) -> Mapping[str, Any] | None:
    """The condition of `condition_type` on an API object (any kind: a SerialDevice, a Deployment),
    or None when it has none. Tolerates a missing or malformed status (objects from admission
    requests are not schema-checked)."""
    status = (obj or {}).get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    if not isinstance(conditions, list):
        return None
    return find_condition((cond for cond in conditions if isinstance(cond, Mapping)), condition_type)


def condition_status(obj: Mapping[str, Any] | None, condition_type: str) -> str | None:
    """Status ("True"/"False"/"Unknown") of a condition on an API object, or None when absent."""
    cond = get_condition(obj, condition_type)
    return None if cond is None else str(cond.get("status"))


def apply_condition(
    conditions: Iterable[Mapping[str, Any]], update: ConditionUpdate, *, now: str
) -> list[dict[str, Any]]:
    """Return a new condition list with `update` applied; other conditions are untouched."""
    result: list[dict[str, Any]] = []
    replaced = False
    for cond in conditions:
        if cond.get("type") != update.type:
            result.append(dict(cond))
            continue
        replaced = True
        transitioned = cond.get("status") != update.status
        result.append(
            _condition(
                update,
                transition=now if transitioned else str(cond.get("lastTransitionTime") or now),
                now=now,
            )
        )
    if not replaced:
        result.append(_condition(update, transition=now, now=now))
    return result


def apply_conditions(
    conditions: Iterable[Mapping[str, Any]], updates: Iterable[ConditionUpdate], *, now: str
) -> list[dict[str, Any]]:
    result = [dict(cond) for cond in conditions]
    for update in updates:
        result = apply_condition(result, update, now=now)
    return result


def differs(conditions: Iterable[Mapping[str, Any]], update: ConditionUpdate) -> bool:
    """True when writing `update` would change status, reason, message or generation."""
    cond = find_condition(conditions, update.type)
    if cond is None:
        return True
    return (
        cond.get("status") != update.status
        or cond.get("reason") != update.reason
        or (cond.get("message") or "") != update.message
        or (
            update.observed_generation is not None
            and cond.get("observedGeneration") != update.observed_generation
        )
    )


def _condition(update: ConditionUpdate, *, transition: str, now: str) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": update.type,
        "status": update.status,
        "reason": update.reason,
        "message": update.message,
        "lastTransitionTime": transition,
        "lastHeartbeatTime": now,
    }
    if update.observed_generation is not None:
        cond["observedGeneration"] = update.observed_generation
    return cond
