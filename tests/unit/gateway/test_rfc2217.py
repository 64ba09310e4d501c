"""RFC 2217 server and client state machines, without sockets."""

from hypothesis import given, settings
from hypothesis import strategies as st

from kubeserial_gateway.rfc2217 import (
    MODEM_CD,
    MODEM_CTS,
    MODEM_DSR,
    MODEM_RI,
    Cmd,
    Control,
    ModemState,
    ModemStatePoll,
    OutputFlow,
    Parity,
    PortRequest,
    Rfc2217Client,
    Rfc2217Server,
    SendBreak,
    SerialSettings,
    SettingReport,
    StopBits,
    com_port_message,
    decode_value,
    modem_deltas,
    settings_requests,
)
from kubeserial_gateway.telnet import (
    BINARY,
    BRK,
    COM_PORT_OPTION,
    DO,
    IAC,
    SB,
    SE,
    WILL,
    Data,
    ProtocolError,
    Subnegotiation,
    TelnetParser,
)


def subneg(*payload: int) -> bytes:
    return bytes([IAC, SB, COM_PORT_OPTION, *payload, IAC, SE])


def ready_server() -> Rfc2217Server:
    """A server whose client has agreed to COM-PORT-OPTION (its first modem-state report is out)."""
    server = Rfc2217Server(signature="x")
    server.greeting()
    events, _ = server.receive(bytes([IAC, WILL, COM_PORT_OPTION]))
    assert events == [ModemStatePoll()]
    return server


def test_server_greets_with_binary_sga_and_com_port() -> None:
    greeting = Rfc2217Server(signature="x").greeting()
    assert bytes([IAC, WILL, BINARY]) in greeting
    assert bytes([IAC, DO, COM_PORT_OPTION]) in greeting
    assert bytes([IAC, WILL, COM_PORT_OPTION]) in greeting


def test_pyserial_open_sequence_is_accepted() -> None:
    """What pyserial's rfc2217 client sends first: options, then the port settings."""
    server = Rfc2217Server(signature="x")
    server.greeting()
    hello = bytes(
        [IAC, DO, 1, IAC, WILL, 3, IAC, DO, 3, IAC, DO, COM_PORT_OPTION, IAC, WILL, COM_PORT_OPTION]
    )
    events, reply = server.receive(hello)
    assert events == [ModemStatePoll()]  # the first modem-state notification, once COM-PORT is on
    assert bytes([IAC, 252, 1]) in reply  # WONT ECHO: we do not echo
    settings = subneg(1, 0, 0, 0xE1, 0) + subneg(2, 8) + subneg(3, 1) + subneg(4, 1)
    events, reply = server.receive(settings)
    assert reply == b""
    assert events == [
        PortRequest(Cmd.SET_BAUDRATE, 57600),
        PortRequest(Cmd.SET_DATASIZE, 8),
        PortRequest(Cmd.SET_PARITY, Parity.NONE),
        PortRequest(Cmd.SET_STOPSIZE, StopBits.ONE),
    ]


def test_baud_rate_with_0xff_byte_is_escaped_and_decoded() -> None:
    message = com_port_message(Cmd.SET_BAUDRATE, 0x0001FFFF)
    assert b"\xff\xff" in message
    events, _ = ready_server().receive(message)
    assert events == [PortRequest(Cmd.SET_BAUDRATE, 0x0001FFFF)]


def test_first_modem_state_also_when_negotiation_crossed_on_the_wire() -> None:
    """pyserial never answers our WILL/DO if its own request crossed ours: its first command counts."""
    server = Rfc2217Server(signature="x")
    server.greeting()
    events, _ = server.receive(subneg(1, 0, 0, 0x25, 0x80) + subneg(2, 8))
    assert events == [ModemStatePoll(), PortRequest(Cmd.SET_BAUDRATE, 9600), PortRequest(Cmd.SET_DATASIZE, 8)]


def test_server_replies_carry_the_value_in_effect() -> None:
    server = Rfc2217Server(signature="x")
    assert server.reply(Cmd.SET_BAUDRATE, 115200) == subneg(101, 0, 1, 0xC2, 0)
    assert server.reply(Cmd.SET_CONTROL, Control.DTR_ON) == subneg(105, 8)


def test_signature_masks_flow_control_break_and_polls() -> None:
    server = Rfc2217Server(signature="KubeSerial")
    events, reply = server.receive(subneg(0))
    assert reply == subneg(100, *b"KubeSerial")
    events, reply = server.receive(subneg(0, *b"client sig"))
    assert events == [] and reply == b""
    events, reply = server.receive(subneg(11, 0x30))
    assert reply == subneg(111, 0x30) and server.modemstate_mask == 0x30
    events, _ = server.receive(subneg(8) + subneg(9) + subneg(7) + bytes([IAC, BRK]))
    assert events == [OutputFlow(True), OutputFlow(False), ModemStatePoll(), SendBreak()]
    events, _ = server.receive(subneg(12, 3) + subneg(5, 11))
    assert events == [PortRequest(Cmd.PURGE_DATA, 3), PortRequest(Cmd.SET_CONTROL, Control.RTS_ON)]


def test_bad_com_port_messages_are_errors_not_requests() -> None:
    server = ready_server()
    for bad in (subneg(1, 0, 0), subneg(2), subneg(3, 1, 2), subneg(99, 1)):
        events, _ = server.receive(bad)
        assert len(events) == 1 and isinstance(events[0], ProtocolError), bad
    events, _ = server.receive(bytes([IAC, SB, COM_PORT_OPTION, IAC, SE]))
    assert isinstance(events[0], ProtocolError)


def test_data_is_separated_from_commands() -> None:
    server = ready_server()
    events, _ = server.receive(b"ab\xff\xffc" + subneg(2, 7) + b"d")
    assert events == [Data(b"ab\xffc"), PortRequest(Cmd.SET_DATASIZE, 7), Data(b"d")]
    assert server.encode(b"\xff") == b"\xff\xff"


def test_modem_state_notifications_follow_changes_and_mask() -> None:
    server = Rfc2217Server(signature="x")
    assert server.modem_state(0, poll=False) == b""  # nothing changed
    assert server.modem_state(0, poll=True) == subneg(107, 0)
    assert server.modem_state(MODEM_CTS | MODEM_DSR, poll=False) == subneg(107, MODEM_CTS | MODEM_DSR | 0x03)
    assert server.modem_state(MODEM_CTS | MODEM_DSR, poll=False) == b""
    server.modemstate_mask = MODEM_CD | 0x08
    assert server.modem_state(MODEM_DSR, poll=False) == b""  # CTS dropped, but it is masked out
    assert server.modem_state(MODEM_DSR | MODEM_CD, poll=False) == subneg(107, MODEM_CD | 0x08)


def test_modem_deltas() -> None:
    assert modem_deltas(MODEM_CTS, 0) == 0x01
    assert modem_deltas(0, MODEM_RI) == 0x04  # trailing edge of RI
    assert modem_deltas(MODEM_RI, 0) == 0  # a leading edge is not reported
    assert modem_deltas(MODEM_CD | MODEM_DSR, MODEM_CD) == 0x02


def test_client_reads_reports_modem_state_and_flow_control() -> None:
    client = Rfc2217Client()
    events, reply = client.receive(
        bytes([IAC, WILL, BINARY]) + b"data" + subneg(101, 0, 0, 0x25, 0x80) + subneg(107, 0x30) + subneg(108)
    )
    assert reply == bytes([IAC, DO, BINARY])
    assert events == [
        Data(b"data"),
        SettingReport(Cmd.SET_BAUDRATE, 9600),
        ModemState(0x30),
        OutputFlow(True),
    ]
    assert client.request(Cmd.SET_PARITY, Parity.ODD) == subneg(3, 2)


def test_settings_requests_only_for_changes() -> None:
    old = SerialSettings()
    new = SerialSettings(baud_rate=57600, parity=Parity.ODD)
    assert settings_requests(new, old=old) == [(Cmd.SET_BAUDRATE, 57600), (Cmd.SET_PARITY, Parity.ODD)]
    assert len(settings_requests(new, old=None)) == 5
    assert settings_requests(old, old=old) == []


def test_decode_value_checks_length() -> None:
    assert decode_value(Cmd.SET_BAUDRATE, b"\x00\x00\x25\x80") == 9600
    assert decode_value(Cmd.SET_BAUDRATE, b"\x25\x80") is None
    assert decode_value(Cmd.SET_PARITY, b"\x02") == 2


@settings(max_examples=300)
@given(st.binary(max_size=3000))
def test_server_survives_garbage_with_bounded_replies(garbage: bytes) -> None:
    server = Rfc2217Server(signature="KubeSerial gateway")
    server.greeting()
    events, reply = server.receive(garbage)
    # Each reply answers a request that took at least 3 input bytes, and is at most ~7 bytes long
    # (the signature answer is the exception, and needs 6 input bytes).
    assert len(reply) <= 8 * len(garbage) + 64
    assert server.buffered <= 256
    for event in events:
        assert isinstance(event, Data | PortRequest | ModemStatePoll | OutputFlow | SendBreak | ProtocolError)


@given(st.lists(st.sampled_from(list(Cmd)), max_size=30), st.integers(0, 2**32 - 1))
def test_every_request_the_client_builds_parses_on_the_server(commands: list[Cmd], value: int) -> None:
    client, server = Rfc2217Client(), Rfc2217Server(signature="x")
    stream = b"".join(client.request(command, value) for command in commands)
    events, _ = server.receive(stream)
    assert not any(isinstance(event, ProtocolError) for event in events)
    parsed = TelnetParser().feed(stream)
    assert all(isinstance(event, Subnegotiation) for event in parsed)
    # The server reads back exactly what was sent: each port command with its value (32 bits for
    # the baud rate, one byte otherwise), in order, and the flow-control commands as such.
    port_commands = {Cmd.SET_BAUDRATE, Cmd.SET_DATASIZE, Cmd.SET_PARITY, Cmd.SET_STOPSIZE}
    port_commands |= {Cmd.SET_CONTROL, Cmd.PURGE_DATA}
    assert [e for e in events if isinstance(e, PortRequest)] == [
        PortRequest(command, value if command == Cmd.SET_BAUDRATE else value & 0xFF)
        for command in commands
        if command in port_commands
    ]
    flow = {Cmd.FLOWCONTROL_SUSPEND: True, Cmd.FLOWCONTROL_RESUME: False}
    assert [e for e in events if isinstance(e, OutputFlow)] == [
        OutputFlow(flow[command]) for command in commands if command in flow
    ]
