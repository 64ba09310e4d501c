"""Condition types and reasons: every word KubeSerial writes into a condition, in one place.

The types are the seed contract (`Ready`, `Available`, `Free`). Reasons are grouped by the condition
that carries them and name their writer; `kubectl wait --for=condition=...` and users' alerts read
them, so changing one is a breaking change. Event reasons that carry a permanent outcome are here
too: they are what a user searches `kubectl get events` for.
"""

from typing import Final

# -- condition types -----------------------------------------------------------------------------
READY: Final = "Ready"  # the controller: the device's spec checks out (its Manager exists)
AVAILABLE: Final = "Available"  # the controller: binding to a SerialPort, release, NodeLost
FREE: Final = "Free"  # the gateway while it runs, the controller at bind and release (see free.py)
CONDITION_TYPES: Final = (READY, AVAILABLE, FREE)

# -- Ready (controller) --------------------------------------------------------------------------
ALL_CHECKS_PASSED: Final = "AllChecksPassed"
MANAGER_NOT_AVAILABLE: Final = "ManagerNotAvailable"

# -- Available (controller) ----------------------------------------------------------------------
DEVICE_AVAILABLE: Final = "DeviceAvailable"  # bound to a SerialPort (the adapter is plugged in)
DEVICE_UNAVAILABLE: Final = "DeviceUnavailable"  # its SerialPort went away (also a Free reason)
NODE_LOST: Final = "NodeLost"  # the node's monitor Lease expired

# -- Free (gateway; monitor at claim and release) ------------------------------------------------
NO_SESSION: Final = "NoSession"
IN_USE: Final = "InUse"

# -- Warning Events for input the controller cannot act on (permanent outcomes) ------------------
INVALID_SPEC: Final = "InvalidSpec"  # a KubeSerial the models refuse
INVALID_MANAGER: Final = "InvalidManager"
MANAGER_NOT_CONNECTABLE: Final = "ManagerNotConnectable"
RECONCILE_FAILED: Final = "ReconcileFailed"  # a temporary failure, retried with backoff

# -- Events about binding (controller) -----------------------------------------------------------
AMBIGUOUS_MATCH: Final = "AmbiguousMatch"  # Warning: several SerialPorts fit a device; one was chosen
PORTS_CLEANED_UP: Final = "SerialPortsDeleted"  # Normal: SerialPorts of a Node that is gone
