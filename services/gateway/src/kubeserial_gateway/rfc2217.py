"""RFC 2217 (Telnet Com Port Control Option), sans-I/O: the gateway's server and the bridge's client.

Neither side touches a socket or a device. The server turns client bytes into data for the device
plus `PortRequest`s that the I/O shell applies to the port and answers with `reply()`; the client
turns server bytes into data for the application plus reports of the port's settings.
"""

from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Generic, TypeVar, cast

from kubeserial_gateway import telnet
from kubeserial_gateway.telnet import (
    BINARY,
    BRK,
    COM_PORT_OPTION,
    SGA,
    Command,
    Data,
    Negotiation,
    OptionNegotiator,
    ProtocolError,
    TelnetParser,
)

SERVER_OFFSET: Final = 100  # the server answers command N with N + 100


class Cmd(IntEnum):
    SIGNATURE = 0
    SET_BAUDRATE = 1
    SET_DATASIZE = 2
    SET_PARITY = 3
    SET_STOPSIZE = 4
    SET_CONTROL = 5
    NOTIFY_LINESTATE = 6
    NOTIFY_MODEMSTATE = 7
    FLOWCONTROL_SUSPEND = 8
    FLOWCONTROL_RESUME = 9
    SET_LINESTATE_MASK = 10
    SET_MODEMSTATE_MASK = 11
    PURGE_DATA = 12


class Parity(IntEnum):
    NONE = 1
    ODD = 2
    EVEN = 3
    MARK = 4
    SPACE = 5


class StopBits(IntEnum):
    ONE = 1
    TWO = 2
    ONE_POINT_FIVE = 3


class Control(IntEnum):
    """SET-CONTROL values; the ..._QUERY ones ask for the current state."""

    FLOW_QUERY = 0
    FLOW_NONE = 1
    FLOW_XONXOFF = 2
    FLOW_HARDWARE = 3
    BREAK_QUERY = 4
    BREAK_ON = 5
    BREAK_OFF = 6
    DTR_QUERY = 7
    DTR_ON = 8
    DTR_OFF = 9
    RTS_QUERY = 10
    RTS_ON = 11
    RTS_OFF = 12
    INBOUND_FLOW_QUERY = 13
    INBOUND_FLOW_NONE = 14
    INBOUND_FLOW_XONXOFF = 15
    INBOUND_FLOW_HARDWARE = 16
    INBOUND_FLOW_DCD = 17
    INBOUND_FLOW_DTR = 18
    INBOUND_FLOW_DSR = 19


class Purge(IntEnum):
    RECEIVE = 1  # data from the device not yet sent to the client
    TRANSMIT = 2  # data from the client not yet written to the device
    BOTH = 3


# Modem state bits (NOTIFY-MODEMSTATE): lines in the high nibble, their deltas in the low one.
MODEM_CD: Final = 0x80
MODEM_RI: Final = 0x40
MODEM_DSR: Final = 0x20
MODEM_CTS: Final = 0x10
_DELTA_CD: Final = 0x08
_TRAILING_EDGE_RI: Final = 0x04
_DELTA_DSR: Final = 0x02
_DELTA_CTS: Final = 0x01

_PORT_COMMANDS: Final = frozenset(
    {Cmd.SET_BAUDRATE, Cmd.SET_DATASIZE, Cmd.SET_PARITY, Cmd.SET_STOPSIZE, Cmd.SET_CONTROL, Cmd.PURGE_DATA}
)
_SUPPORTED_OPTIONS: Final = frozenset({BINARY, SGA, COM_PORT_OPTION})


@dataclass(frozen=True)
class SerialSettings:
    """The line settings RFC 2217 can change; also what the gateway opens a port with."""

    baud_rate: int = 115200
    data_bits: int = 8
    parity: Parity = Parity.NONE
    stop_bits: StopBits = StopBits.ONE
    flow_control: Control = Control.FLOW_NONE


def encode_value(command: int, value: int) -> bytes:
    if command == Cmd.SET_BAUDRATE:
        return value.to_bytes(4, "big")
    if command in (Cmd.FLOWCONTROL_SUSPEND, Cmd.FLOWCONTROL_RESUME):
        return b""
    return bytes((value & 0xFF,))


def decode_value(command: int, payload: bytes) -> int | None:
    """The value of a SET/NOTIFY command, or None when the payload has the wrong length."""
    size = 4 if command == Cmd.SET_BAUDRATE else 1
    return int.from_bytes(payload, "big") if len(payload) == size else None


def com_port_message(command: int, value: int) -> bytes:
    return telnet.subnegotiation(COM_PORT_OPTION, bytes((command,)) + encode_value(command % 100, value))


def settings_requests(new: SerialSettings, *, old: SerialSettings | None) -> list[tuple[int, int]]:
    """The (command, value) pairs that turn a port set to `old` into one set to `new` (all if old is None)."""
    pairs = [
        (Cmd.SET_BAUDRATE, new.baud_rate, None if old is None else old.baud_rate),
        (Cmd.SET_DATASIZE, new.data_bits, None if old is None else old.data_bits),
        (Cmd.SET_PARITY, int(new.parity), None if old is None else int(old.parity)),
        (Cmd.SET_STOPSIZE, int(new.stop_bits), None if old is None else int(old.stop_bits)),
        (Cmd.SET_CONTROL, int(new.flow_control), None if old is None else int(old.flow_control)),
    ]
    return [(int(command), value) for command, value, before in pairs if value != before]


@dataclass(frozen=True, slots=True)
class PortRequest:
    """A SET-BAUDRATE/DATASIZE/PARITY/STOPSIZE/CONTROL or PURGE-DATA to apply; 0 usually means query."""

    command: int
    value: int


@dataclass(frozen=True, slots=True)
class ModemStatePoll:
    """The client asks for the modem lines now (pyserial polls this way)."""


@dataclass(frozen=True, slots=True)
class OutputFlow:
    """The peer asks us to stop (suspended=True) or resume sending data."""

    suspended: bool


@dataclass(frozen=True, slots=True)
class SendBreak:
    """Telnet BRK: send a break on the line."""


@dataclass(frozen=True, slots=True)
class SettingReport:
    """The server's answer to a SET command: the value now in effect."""

    command: int
    value: int


@dataclass(frozen=True, slots=True)
class ModemState:
    value: int


ServerEvent = Data | PortRequest | ModemStatePoll | OutputFlow | SendBreak | ProtocolError
ClientEvent = Data | SettingReport | ModemState | OutputFlow | ProtocolError
E = TypeVar("E", ServerEvent, ClientEvent)


def modem_deltas(state: int, previous: int) -> int:
    """The delta bits for a change of modem lines from `previous` to `state` (RFC 2217 section 3)."""
    changed = state ^ previous
    deltas = 0
    if changed & MODEM_CTS:
        deltas |= _DELTA_CTS
    if changed & MODEM_DSR:
        deltas |= _DELTA_DSR
    if changed & MODEM_CD:
        deltas |= _DELTA_CD
    if previous & MODEM_RI and not state & MODEM_RI:
        deltas |= _TRAILING_EDGE_RI
    return deltas


class _Endpoint(Generic[E]):
    """What both ends share: telnet framing, option negotiation, escaping. Subclasses read COM-PORT."""

    def __init__(self) -> None:
        self._parser = TelnetParser()
        self._options = OptionNegotiator(local=_SUPPORTED_OPTIONS, remote=_SUPPORTED_OPTIONS)
        self.subnegotiations = 0  # received so far, of any option (the I/O shell budgets them)

    def greeting(self) -> bytes:
        return self._options.request_all()

    def receive(self, data: bytes) -> tuple[list[E], bytes]:
        """Peer bytes -> events for the I/O shell, and bytes to send straight back."""
        events: list[E] = []
        out = bytearray()
        for event in self._parser.feed(data):
            if isinstance(event, Data | ProtocolError):
                events.append(cast(E, event))
            elif isinstance(event, Negotiation):
                out += self._options.receive(event.verb, event.option)
                self._negotiated(events)
            elif isinstance(event, Command):
                self._command(event.code, events)
            elif event.option == COM_PORT_OPTION:
                self.subnegotiations += 1
                if event.payload:
                    self._com_port(event.payload[0], event.payload[1:], events, out)
                else:
                    events.append(cast(E, ProtocolError("COM-PORT-OPTION subnegotiation without a command")))
            else:
                self.subnegotiations += 1  # for options we refused: ignored, as RFC 855 allows
        return events, bytes(out)

    def _negotiated(self, events: list[E]) -> None:
        """Called after each option change."""

    def _command(self, code: int, events: list[E]) -> None:
        """A two-byte telnet command (NOP, BRK, ...)."""

    def _com_port(self, command: int, payload: bytes, events: list[E], out: bytearray) -> None:
        raise NotImplementedError

    @staticmethod
    def encode(data: bytes) -> bytes:
        return telnet.escape(data)

    @property
    def buffered(self) -> int:
        return self._parser.buffered


class Rfc2217Server(_Endpoint[ServerEvent]):
    """The access-server side of one client connection."""

    def __init__(self, *, signature: str) -> None:
        super().__init__()
        self.signature = signature.encode("utf-8", "replace")[: telnet.MAX_SUBNEGOTIATION - 2]
        self.modemstate_mask = 0xFF  # RFC 2217 default
        self.linestate_mask = 0
        self._reported_modem = 0
        self._com_port_announced = False

    def _negotiated(self, events: list[ServerEvent]) -> None:
        if self._options.enabled(COM_PORT_OPTION, local=False) or self._options.enabled(
            COM_PORT_OPTION, local=True
        ):
            self._announce(events)

    def _announce(self, events: list[ServerEvent]) -> None:
        """Send the first NOTIFY-MODEMSTATE once the client speaks COM-PORT-OPTION.

        Clients (pyserial) read modem lines from notifications only. pyserial may also never answer
        our WILL/DO when its own request crossed ours on the wire, so its first COM-PORT command
        counts as agreement too.
        """
        if not self._com_port_announced:
            self._com_port_announced = True
            events.append(ModemStatePoll())

    def _command(self, code: int, events: list[ServerEvent]) -> None:
        if code == BRK:
            events.append(SendBreak())

    def _com_port(self, command: int, payload: bytes, events: list[ServerEvent], out: bytearray) -> None:
        self._announce(events)
        if command == Cmd.SIGNATURE:
            if not payload:  # a request; a non-empty one is the client's own signature
                out += telnet.subnegotiation(COM_PORT_OPTION, bytes((SERVER_OFFSET,)) + self.signature)
            return
        if command in (Cmd.FLOWCONTROL_SUSPEND, Cmd.FLOWCONTROL_RESUME):
            events.append(OutputFlow(suspended=command == Cmd.FLOWCONTROL_SUSPEND))
            return
        if command == Cmd.NOTIFY_MODEMSTATE:
            events.append(ModemStatePoll())
            return
        if command == Cmd.NOTIFY_LINESTATE:
            out += self.reply(Cmd.NOTIFY_LINESTATE, 0)  # no line errors are tracked
            return
        if command not in _PORT_COMMANDS and command not in (Cmd.SET_LINESTATE_MASK, Cmd.SET_MODEMSTATE_MASK):
            events.append(ProtocolError(f"unknown COM-PORT-OPTION command {command}"))
            return
        value = decode_value(command, payload)
        if value is None:
            events.append(ProtocolError(f"COM-PORT-OPTION command {command} with {len(payload)} value bytes"))
        elif command == Cmd.SET_LINESTATE_MASK:
            self.linestate_mask = value
            out += self.reply(command, value)
        elif command == Cmd.SET_MODEMSTATE_MASK:
            self.modemstate_mask = value
            out += self.reply(command, value)
        else:
            events.append(PortRequest(command, value))

    def reply(self, command: int, value: int) -> bytes:
        """The server's answer to `command`: the value in effect now."""
        return com_port_message(command + SERVER_OFFSET, value)

    def modem_state(self, lines: int, *, poll: bool) -> bytes:
        """NOTIFY-MODEMSTATE for the lines now (0 when the device cannot tell).

        On a poll it is always sent; otherwise only when a line under the mask changed.
        """
        lines &= 0xF0
        deltas = modem_deltas(lines, self._reported_modem)
        if not poll and not (deltas & self.modemstate_mask):
            return b""
        self._reported_modem = lines
        return self.reply(Cmd.NOTIFY_MODEMSTATE, (lines | deltas) & self.modemstate_mask)


class Rfc2217Client(_Endpoint[ClientEvent]):
    """The client side: what the bridge speaks to the gateway."""

    def _com_port(self, command: int, payload: bytes, events: list[ClientEvent], out: bytearray) -> None:
        if command >= SERVER_OFFSET:
            command -= SERVER_OFFSET
        if command == Cmd.SIGNATURE:
            return
        if command in (Cmd.FLOWCONTROL_SUSPEND, Cmd.FLOWCONTROL_RESUME):
            events.append(OutputFlow(suspended=command == Cmd.FLOWCONTROL_SUSPEND))
            return
        value = decode_value(command, payload)
        if value is None or command > Cmd.PURGE_DATA:
            events.append(ProtocolError(f"bad COM-PORT-OPTION reply {command}: {payload[:8]!r}"))
        elif command == Cmd.NOTIFY_MODEMSTATE:
            events.append(ModemState(value))
        elif command != Cmd.NOTIFY_LINESTATE:
            events.append(SettingReport(command, value))

    @staticmethod
    def request(command: int, value: int) -> bytes:
        return com_port_message(command, value)
