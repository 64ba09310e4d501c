"""The `Free` condition has two writers; this module is the rule that divides it, written once.

- The **controller** (its binder) writes Free only when it changes Available: when it binds the device
  to a SerialPort, Free=True/NoSession (a new port, no session yet); when it releases it,
  Free=False/DeviceUnavailable (nothing to connect to).
- The **gateway** writes Free for sessions while it runs: False/InUse with the peer while one is
  open, True/NoSession after it, but only while Available is True (or not written yet): a device
  the controller released keeps the controller's False/DeviceUnavailable. An InUse of its own is never
  left behind: with the device unavailable it becomes False/DeviceUnavailable.

So a released device never reads Free=True, and a session never outlives its InUse.
"""

from collections.abc import Mapping
from typing import Any

from kubeserial_common.core.conditions import ConditionUpdate, condition_status, get_condition
from kubeserial_common.core.vocabulary import AVAILABLE, DEVICE_UNAVAILABLE, FREE, IN_USE, NO_SESSION


def free_at_claim() -> ConditionUpdate:
    """The controller's Free when it binds a device to a SerialPort."""
    return ConditionUpdate(FREE, "True", NO_SESSION, "no client session")


def free_at_release() -> ConditionUpdate:
    """The controller's Free when the device loses its SerialPort."""
    return ConditionUpdate(FREE, "False", DEVICE_UNAVAILABLE, "device unavailable")


def free_for_session(obj: Mapping[str, Any], *, peer: str | None) -> ConditionUpdate | None:
    """The gateway's Free given the object as it is now and its session (`peer`, None when there is
    none); None means leave Free alone."""
    generation = (obj.get("metadata") or {}).get("generation")
    if peer is not None:
        return ConditionUpdate(FREE, "False", IN_USE, f"session open from {peer}", generation)
    if condition_status(obj, AVAILABLE) in (None, "True"):
        return ConditionUpdate(FREE, "True", NO_SESSION, "no client session is open", generation)
    current = get_condition(obj, FREE)
    if current is not None and current.get("reason") == IN_USE:
        return ConditionUpdate(
            FREE, "False", DEVICE_UNAVAILABLE, "session ended; the device is not available", generation
        )
    return None
