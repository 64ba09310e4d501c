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

Pure: no I/O; RE2-compatible patterns: the CRDs carry them as OpenAPI `pattern`s, which
kube-apiserver compiles once, not as CEL rules, whose regexes it compiles again at every evaluation
(every status write: 7.6 % of its CPU in a 10,000-device cold start with a {0,254} in a CEL rule).
"""

import re
from typing import Final

# Kernel names of USB serial ttys (see the module docstring for the drivers).
USB_TTY_NAME: Final = r"tty(USB|ACM|CH34[13]USB|XRUSB)[0-9]{1,4}"
# udev's link names: its safe characters (udev replaces others with '_'); never '.' or '..' alone;
# at most NAME_MAX (255) characters, the longest file name Linux allows.
_LINK_NAME: Final = r"[A-Za-z0-9_][-A-Za-z0-9_.:+@=#,]{0,254}"

BY_ID_PREFIX: Final = "/dev/serial/by-id/"
BY_PATH_PREFIX: Final = "/dev/serial/by-path/"
DEVNODE: Final = rf"^/dev/{USB_TTY_NAME}$"
BY_ID: Final = rf"^{BY_ID_PREFIX}{_LINK_NAME}$"
DEVICE_PATH: Final = rf"^/dev/(serial/by-(id|path)/{_LINK_NAME}|{USB_TTY_NAME})$"
# The longest path that can exist (the fields' maxLength): /dev/serial/by-path/ and NAME_MAX.
DEVICE_PATH_MAX: Final = len(BY_PATH_PREFIX) + 255

ALLOWED: Final = (
    "/dev/serial/by-id/<link>, /dev/serial/by-path/<link>, /dev/ttyUSB<n>, /dev/ttyACM<n>"
    " (or the vendor drivers' /dev/ttyCH341USB<n>, /dev/ttyCH343USB<n>, /dev/ttyXRUSB<n>)"
)

_DEVNODE_RE: Final = re.compile(DEVNODE)
_DEVICE_PATH_RE: Final = re.compile(DEVICE_PATH)
_USB_TTY_NAME_RE: Final = re.compile(rf"^{USB_TTY_NAME}$")


def device_path_problem(path: str, *, field: str) -> str | None:
    """None when `path` is a path KubeSerial may serve; otherwise a message that names `field`."""
    if _DEVICE_PATH_RE.fullmatch(path):
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
