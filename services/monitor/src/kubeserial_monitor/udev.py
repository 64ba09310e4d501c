"""The udev side of the monitor: enumerate USB ttys, and receive hot-plug events from netlink.

Events are read on the event loop (`add_reader` on the netlink socket), never by a polling thread.
A full rescan at start and periodically repairs anything an event could not tell us (a dropped
netlink message, a `move`), so the inventory is level-triggered like the API side.
"""

import asyncio
import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyudev

from kubeserial_common.runtime.logs import get_logger
from kubeserial_monitor.usb import UsbTty, usb_tty

log = get_logger(__name__)

SUBSYSTEM = "tty"
REMOVE_ACTIONS = frozenset({"remove", "unbind"})
RESCAN_ACTIONS = frozenset({"move"})  # the old path is gone; only a rescan tells us what is left


def tty_from_device(device: Any) -> UsbTty | None:
    """A pyudev tty Device as a UsbTty, or None when it has no USB ancestor we can identify."""
    parent = device.find_parent("usb", "usb_device")
    attributes: dict[str, str | bytes | None] = {}
    if parent is not None:
        for name in ("idVendor", "idProduct", "serial", "manufacturer", "product"):
            attributes[name] = parent.attributes.get(name)
    return usb_tty(
        sys_path=str(device.sys_path),
        devnode=device.device_node,
        usb_attributes=attributes,
        properties=dict(device.properties),
        links=list(device.device_links),
    )


def scan(context: Any) -> dict[str, UsbTty]:
    """Every USB tty on this node, by sysfs path."""
    found: dict[str, UsbTty] = {}
    for device in context.list_devices(subsystem=SUBSYSTEM):
        try:
            tty = tty_from_device(device)
        except (OSError, pyudev.DeviceNotFoundError) as exc:  # unplugged while we looked
            log.debug("tty vanished during scan", sys_path=str(device.sys_path), error=repr(exc))
            continue
        except Exception as exc:  # one odd device must not hide the others
            log.warning("cannot read tty", sys_path=str(device.sys_path), error=repr(exc))
            continue
        if tty is not None:
            found[tty.sys_path] = tty
    return found


@dataclass
class UdevEvent:
    action: str
    sys_path: str
    tty: UsbTty | None  # None for removals and for ttys that are not USB
    received: float  # loop time when we read it


@dataclass
class UdevWatcher:
    """Netlink listener for tty uevents: `on_event` for each one, `on_missed` when some were lost
    or could not be read (the caller rescans)."""

    on_event: Callable[[UdevEvent], None]
    on_missed: Callable[[], None]
    context: Any = field(default_factory=pyudev.Context)
    _monitor: Any = None
    _loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._monitor = pyudev.Monitor.from_netlink(self.context)
        self._monitor.filter_by(SUBSYSTEM)
        self._monitor.start()
        self._loop.add_reader(self._monitor.fileno(), self._readable)

    def stop(self) -> None:
        if self._loop is not None and self._monitor is not None:
            self._loop.remove_reader(self._monitor.fileno())
        self._monitor = None

    @property
    def running(self) -> bool:
        return self._monitor is not None

    def _readable(self) -> None:
        assert self._loop is not None
        while self._monitor is not None:
            try:
                device = self._monitor.poll(timeout=0)
            except OSError as exc:
                # ENOBUFS: the kernel dropped messages for us; a rescan finds what we missed.
                log.warning(
                    "udev netlink receive failed", error=repr(exc), overflow=exc.errno == errno.ENOBUFS
                )
                self.on_missed()
                return
            if device is None:
                return
            try:
                self._dispatch(device, received=self._loop.time())
            except Exception as exc:  # a malformed event: the rescan will tell us the truth
                log.warning("cannot handle udev event", error=repr(exc))
                self.on_missed()

    def _dispatch(self, device: Any, *, received: float) -> None:
        action = str(device.action or "change")
        sys_path = str(device.sys_path)
        tty: UsbTty | None = None
        if action not in REMOVE_ACTIONS:
            try:
                tty = tty_from_device(device)
            except (OSError, pyudev.DeviceNotFoundError) as exc:  # already gone again
                log.debug("tty vanished before we read it", sys_path=sys_path, error=repr(exc))
                action = "remove"
        self.on_event(UdevEvent(action=action, sys_path=sys_path, tty=tty, received=received))
