"""What an application did to its tty, in RFC 2217 terms. Pure functions over termios attribute lists.

The bridge polls the pty's termios; these functions turn what it sees into SerialSettings and the
RFC 2217 requests that reproduce it on the real port, and the gateway's settings back into termios.
Modem lines follow the kernel's own rules for a real tty: DTR and RTS go up when the tty is opened
and when the speed leaves B0, and down at speed B0 and on the last close when HUPCL is set.

A Linux pty has no hardware, and its set_termios forces CS8 and clears PARENB (a tcsetattr that
changes nothing else fails with EINVAL). PARODD and CMSPAR survive, so odd, mark and space parity
are still visible and forwarded; even parity and 5-7 data bits cannot be expressed through a pty.
Applications that need them use the rfc2217:// URL instead of the tty.
"""

import struct
import termios
from dataclasses import dataclass, replace
from typing import Any, Final

from kubeserial_gateway.rfc2217 import Cmd, Control, Parity, SerialSettings, StopBits, settings_requests

# termios attribute list indexes
IFLAG, OFLAG, CFLAG, LFLAG, ISPEED, OSPEED, CC = range(7)

CMSPAR: Final = 0o10000000000  # Linux; not exported by Python's termios
BOTHER: Final = 0o010000  # Linux: speed given in c_ispeed/c_ospeed (termios2)

SPEEDS: Final[dict[int, int]] = {
    getattr(termios, name): int(name[1:])
    for name in dir(termios)
    if name.startswith("B") and name[1:].isdigit()
}
SPEED_CONSTANTS: Final[dict[int, int]] = {baud: constant for constant, baud in SPEEDS.items()}
_DATA_BITS: Final = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}
_CSIZE_FOR_BITS: Final = {bits: flag for flag, bits in _DATA_BITS.items()}

# struct termios2 (asm-generic): 4 flags, c_line, c_cc[19], c_ispeed, c_ospeed
TERMIOS2: Final = struct.Struct("4I B 19s 2I")


def speed_from_termios2(raw: bytes) -> int:
    """c_ospeed of a TCGETS2 result: the real rate behind BOTHER."""
    return int(TERMIOS2.unpack(raw)[-1])


def termios2_with_speed(raw: bytes, baud: int) -> bytes:
    iflag, oflag, cflag, lflag, line, cc, _, _ = TERMIOS2.unpack(raw)
    cbaud = 0o010017  # CBAUD | CBAUDEX
    cflag = (cflag & ~cbaud) | BOTHER
    return TERMIOS2.pack(iflag, oflag, cflag, lflag, line, cc, baud, baud)


def settings_from_termios(attrs: list[Any], *, custom_speed: int = 0) -> SerialSettings:
    """SerialSettings for a termios list; baud_rate 0 means B0 (hang up), custom_speed backs BOTHER."""
    iflag, cflag, ospeed = int(attrs[IFLAG]), int(attrs[CFLAG]), int(attrs[OSPEED])
    baud = custom_speed if ospeed == BOTHER else SPEEDS.get(ospeed, 0)
    # PARENB is read when present (a kernel that keeps it); on a Linux pty only PARODD/CMSPAR remain.
    if cflag & CMSPAR:
        parity = Parity.MARK if cflag & termios.PARODD else Parity.SPACE
    elif cflag & termios.PARODD:
        parity = Parity.ODD
    elif cflag & termios.PARENB:
        parity = Parity.EVEN
    else:
        parity = Parity.NONE
    if cflag & termios.CRTSCTS:
        flow = Control.FLOW_HARDWARE
    elif iflag & (termios.IXON | termios.IXOFF):
        flow = Control.FLOW_XONXOFF
    else:
        flow = Control.FLOW_NONE
    return SerialSettings(
        baud_rate=baud,
        data_bits=_DATA_BITS[cflag & termios.CSIZE],
        parity=parity,
        stop_bits=StopBits.TWO if cflag & termios.CSTOPB else StopBits.ONE,
        flow_control=flow,
    )


def termios_with_settings(attrs: list[Any], settings: SerialSettings) -> list[Any]:
    """A copy of `attrs` changed to `settings` (standard speeds only; others keep the old speed)."""
    result = list(attrs)
    iflag, cflag = int(result[IFLAG]), int(result[CFLAG])
    cflag &= ~(termios.CSIZE | termios.PARENB | termios.PARODD | CMSPAR | termios.CSTOPB | termios.CRTSCTS)
    cflag |= _CSIZE_FOR_BITS.get(settings.data_bits, termios.CS8)
    if settings.parity is not Parity.NONE:
        cflag |= termios.PARENB
    if settings.parity in (Parity.ODD, Parity.MARK):
        cflag |= termios.PARODD
    if settings.parity in (Parity.MARK, Parity.SPACE):
        cflag |= CMSPAR
    if settings.stop_bits is not StopBits.ONE:
        cflag |= termios.CSTOPB
    iflag &= ~(termios.IXON | termios.IXOFF)
    if settings.flow_control == Control.FLOW_HARDWARE:
        cflag |= termios.CRTSCTS
    elif settings.flow_control == Control.FLOW_XONXOFF:
        iflag |= termios.IXON | termios.IXOFF
    result[IFLAG], result[CFLAG] = iflag, cflag
    if settings.baud_rate in SPEED_CONSTANTS:
        result[ISPEED] = result[OSPEED] = SPEED_CONSTANTS[settings.baud_rate]
    return result


def adopt_report(settings: SerialSettings, command: int, value: int) -> SerialSettings:
    """`settings` with one value the gateway reported (an answer to SET-BAUDRATE etc.)."""
    if command == Cmd.SET_BAUDRATE and value > 0:
        return replace(settings, baud_rate=value)
    if command == Cmd.SET_DATASIZE and value in _CSIZE_FOR_BITS:
        return replace(settings, data_bits=value)
    if command == Cmd.SET_PARITY and value in Parity._value2member_map_:
        return replace(settings, parity=Parity(value))
    if command == Cmd.SET_STOPSIZE and value in StopBits._value2member_map_:
        return replace(settings, stop_bits=StopBits(value))
    if command == Cmd.SET_CONTROL and value in (
        Control.FLOW_NONE,
        Control.FLOW_XONXOFF,
        Control.FLOW_HARDWARE,
    ):
        return replace(settings, flow_control=Control(value))
    return settings


QUERIES: Final = (
    (int(Cmd.SET_BAUDRATE), 0),
    (int(Cmd.SET_DATASIZE), 0),
    (int(Cmd.SET_PARITY), 0),
    (int(Cmd.SET_STOPSIZE), 0),
    (int(Cmd.SET_CONTROL), int(Control.FLOW_QUERY)),
)


@dataclass(frozen=True)
class TtyView:
    """What the bridge knows about the application's side of the pty at one moment."""

    settings: SerialSettings  # baud_rate 0: the app set B0
    attached: bool  # some process has the tty open
    hupcl: bool  # drop the lines on last close


def lines_up(view: TtyView, *, previous: bool) -> bool:
    """Whether DTR/RTS should be asserted, by the rules a real Linux tty follows."""
    if view.settings.baud_rate == 0:
        return False
    if view.attached:
        return True
    return previous and not view.hupcl


def sync_requests(
    view: TtyView, *, sent: SerialSettings | None, lines_sent: bool | None
) -> tuple[list[tuple[int, int]], SerialSettings, bool]:
    """The requests that make the remote port match `view`, and what will have been sent after them.

    `sent`/`lines_sent` are what the gateway last got from us (None: nothing yet). B0 is not a
    speed: the previous speed stays, and the lines drop.
    """
    settings = view.settings
    if settings.baud_rate == 0:
        settings = replace(settings, baud_rate=sent.baud_rate if sent is not None else 0)
    requests = settings_requests(settings, old=sent) if settings.baud_rate else []
    new_sent = settings if settings.baud_rate else sent or settings
    lines = lines_up(view, previous=bool(lines_sent))
    if lines != lines_sent:
        requests.append((int(Cmd.SET_CONTROL), int(Control.DTR_ON if lines else Control.DTR_OFF)))
        if settings.flow_control != Control.FLOW_HARDWARE:  # with RTS/CTS flow control RTS is not ours
            requests.append((int(Cmd.SET_CONTROL), int(Control.RTS_ON if lines else Control.RTS_OFF)))
    return requests, new_sent, lines
