"""Which device paths KubeSerial may serve: the shape of a USB serial tty's path on a node.

One rule for the CRDs (a SerialPort's devnode/devicePath/byIdPath, a SerialDevice's
status.devicePath), the monitor (it publishes nothing else) and the gateway (it refuses anything
else before it even looks at sysfs, where it then checks that the tty really has a USB parent).

What real USB serial adapters are called by Linux:
- `ttyUSB<n>`: every driver of the usb-serial core (FTDI, CP210x, CH341, PL2303, the in-tree
  Exar xr_serial, option/qcserial modems, ...);
- `ttyACM<n>`: cdc-acm (Arduinos, most microcontroller boards, Zigbee/Z-Wave sticks with CDC
  firmware, 3D printer boards);
- `ttyCH343USB<n>`, `ttyCH341USB<n>`: WinChipHead's out-of-tree vendor drivers (ch343ser, ch341ser),
  installed where the in-tree ch341 lacks a chip; `ttyXRUSB<n>`: Exar's out-of-tree
  xr_usb_serial_common. Accepted because people do install them for those chips.
- `/dev/serial/by-id/...` and `/dev/serial/by-path/...`: the links udev's 60-serial.rules makes for
  every serial tty with a bus parent; the gateway resolves them and checks what they point at.
Not accepted: `ttyS*` (8250 UARTs on the mainboard), `ttyAMA*`/`ttyTHS*`/`ttymxc*` (SoC UARTs), `hvc*`,
`ttyGS*` (the USB *gadget* side: a board acting as a device), `/dev/pts/*`, and any other path.
Paths are checked as strings here: no `..`, no extra `/`, nothing but these prefixes.

Pure: no I/O; RE2-compatible patterns (the CRDs' CEL uses them).
"""

import re
from typing import Final

# Kernel names of USB serial ttys (see the module docstring for the drivers).
USB_TTY_NAME: Final = r"tty(USB|ACM|CH34[13]USB|XRUSB)[0-9]{1,4}"
# udev's link names: its safe characters (udev replaces others with '_'); never '.' or '..' alone.
# Unbounded here, bounded by NAME_MAX through the path's length (`_longest`, the CEL rule's size()):
# the apiserver compiles a CEL rule's regex at every evaluation (every status write), and a counted
# repetition like {0,254} made that compile 7.6 % of kube-apiserver's CPU during a 10,000-device
# cold start (bench_scale --profile-apiserver).
_LINK_NAME: Final = r"[A-Za-z0-9_][-A-Za-z0-9_.:+@=#,]*"

DEVNODE: Final = rf"^/dev/{USB_TTY_NAME}$"
BY_ID: Final = rf"^/dev/serial/by-id/{_LINK_NAME}$"
DEVICE_PATH: Final = rf"^/dev/(serial/by-(id|path)/{_LINK_NAME}|{USB_TTY_NAME})$"
BY_ID_PREFIX: Final = "/dev/serial/by-id/"
BY_PATH_PREFIX: Final = "/dev/serial/by-path/"
NAME_MAX: Final = 255  # the longest file name Linux allows, so the longest link name
# The longest path that can exist under each prefix (the fields' maxLength and the CEL size checks).
DEVICE_PATH_MAX: Final = len(BY_PATH_PREFIX) + NAME_MAX
BY_ID_MAX: Final = len(BY_ID_PREFIX) + NAME_MAX

ALLOWED: Final = (
    "/dev/serial/by-id/<link>, /dev/serial/by-path/<link>, /dev/ttyUSB<n>, /dev/ttyACM<n>"
    " (or the vendor drivers' /dev/ttyCH341USB<n>, /dev/ttyCH343USB<n>, /dev/ttyXRUSB<n>)"
)

_DEVNODE_RE: Final = re.compile(DEVNODE)
_DEVICE_PATH_RE: Final = re.compile(DEVICE_PATH)
_USB_TTY_NAME_RE: Final = re.compile(rf"^{USB_TTY_NAME}$")


def _longest(path: str) -> int:
    """How long a path starting like `path` can be: a by-path link may be longer than a by-id one."""
    return DEVICE_PATH_MAX if path.startswith(BY_PATH_PREFIX) else BY_ID_MAX


def device_path_problem(path: str, *, field: str) -> str | None:
    """None when `path` is a path KubeSerial may serve; otherwise a message that names `field`."""
    if len(path) <= _longest(path) and _DEVICE_PATH_RE.fullmatch(path):
        return None
    return f"{field}: {path!r} is not a USB serial device path; use {ALLOWED}"


def devnode_problem(path: str, *, field: str) -> str | None:
    if _DEVNODE_RE.fullmatch(path):
        return None
    return (
        f"{field}: {path!r} is not the device node of a USB serial tty;"
        " use /dev/ttyUSB<n>, /dev/ttyACM<n> (or /dev/ttyCH341USB<n>, /dev/ttyCH343USB<n>, /dev/ttyXRUSB<n>)"
    )


def is_usb_tty_name(name: str) -> bool:
    """`ttyUSB0` yes, `ttyS0` no: the kernel name (no /dev/) of a tty the drivers above make."""
    return bool(_USB_TTY_NAME_RE.fullmatch(name))


def cel_rule(field: str, pattern: str, *, guards: tuple[str, ...] = (), message: str) -> dict[str, str]:
    """An x-kubernetes-validations rule at the resource's root: `self.<field>` matches `pattern`
    (and, as `device_path_problem`, is no longer than its prefix allows) unless a guard (`has(...)`
    of it or a parent) says it is absent."""
    unless = "".join(f"!has(self.{guard}) || " for guard in guards)
    value = f"self.{field}"
    length = ""
    if pattern == DEVICE_PATH:  # devnodes are bounded by their pattern
        length = f" && (size({value}) <= {BY_ID_MAX} || {value}.startsWith('{BY_PATH_PREFIX}'))"
    return {
        "rule": f"{unless}({value}.matches('{pattern}'){length})",
        "message": message,
        "fieldPath": f".{field}",
    }
