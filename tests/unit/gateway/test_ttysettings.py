"""termios <-> RFC 2217 for the bridge, and the kernel's DTR/RTS rules."""

import termios
from typing import Any

from kubeserial_gateway.rfc2217 import Cmd, Control, Parity, SerialSettings, StopBits
from kubeserial_gateway.ttysettings import (
    BOTHER,
    CMSPAR,
    TERMIOS2,
    TtyView,
    adopt_report,
    lines_up,
    settings_from_termios,
    speed_from_termios2,
    sync_requests,
    termios2_with_speed,
    termios_with_settings,
)

RAW_CC = [b"\x00"] * 32


def attrs(
    *, cflag: int = termios.CS8 | termios.CREAD, iflag: int = 0, speed: int = termios.B115200
) -> list[Any]:
    return [iflag, 0, cflag, 0, speed, speed, list(RAW_CC)]


def test_plain_8n1() -> None:
    assert settings_from_termios(attrs()) == SerialSettings(
        115200, 8, Parity.NONE, StopBits.ONE, Control.FLOW_NONE
    )


def test_flags_map_to_settings() -> None:
    cflag = termios.CS7 | termios.PARENB | termios.CSTOPB | termios.CRTSCTS
    settings = settings_from_termios(attrs(cflag=cflag, speed=termios.B57600))
    assert settings == SerialSettings(57600, 7, Parity.EVEN, StopBits.TWO, Control.FLOW_HARDWARE)
    assert (
        settings_from_termios(attrs(iflag=termios.IXON | termios.IXOFF)).flow_control == Control.FLOW_XONXOFF
    )


def test_parity_as_a_linux_pty_keeps_it() -> None:
    """A pty clears PARENB but keeps PARODD and CMSPAR: odd, mark and space stay visible."""
    cs8 = termios.CS8
    assert settings_from_termios(attrs(cflag=cs8 | termios.PARODD)).parity == Parity.ODD
    assert settings_from_termios(attrs(cflag=cs8 | termios.PARODD | CMSPAR)).parity == Parity.MARK
    assert settings_from_termios(attrs(cflag=cs8 | CMSPAR)).parity == Parity.SPACE
    assert settings_from_termios(attrs(cflag=cs8 | termios.PARENB | termios.PARODD)).parity == Parity.ODD


def test_b0_and_custom_speeds() -> None:
    assert settings_from_termios(attrs(speed=termios.B0)).baud_rate == 0
    assert settings_from_termios(attrs(speed=BOTHER), custom_speed=250000).baud_rate == 250000


def test_termios_with_settings_round_trips() -> None:
    for settings in (
        SerialSettings(9600, 7, Parity.EVEN, StopBits.TWO, Control.FLOW_XONXOFF),
        SerialSettings(230400, 8, Parity.MARK, StopBits.ONE, Control.FLOW_HARDWARE),
        SerialSettings(57600, 5, Parity.SPACE, StopBits.TWO, Control.FLOW_NONE),
    ):
        assert settings_from_termios(termios_with_settings(attrs(), settings)) == settings


def test_termios2_speed_packing() -> None:
    raw = TERMIOS2.pack(0, 0, termios.CS8 | termios.B9600, 0, 0, bytes(19), 9600, 9600)
    changed = termios2_with_speed(raw, 250000)
    assert speed_from_termios2(changed) == 250000
    assert TERMIOS2.unpack(changed)[2] & BOTHER


def test_adopt_report_ignores_nonsense() -> None:
    base = SerialSettings()
    assert adopt_report(base, Cmd.SET_BAUDRATE, 9600).baud_rate == 9600
    assert adopt_report(base, Cmd.SET_BAUDRATE, 0) == base
    assert adopt_report(base, Cmd.SET_PARITY, 9) == base
    assert adopt_report(base, Cmd.SET_CONTROL, Control.DTR_ON) == base
    assert adopt_report(base, Cmd.SET_CONTROL, Control.FLOW_HARDWARE).flow_control == Control.FLOW_HARDWARE


def view(
    *, baud: int = 115200, attached: bool = True, hupcl: bool = True, flow: Control = Control.FLOW_NONE
) -> TtyView:
    return TtyView(SerialSettings(baud_rate=baud, flow_control=flow), attached=attached, hupcl=hupcl)


def test_lines_follow_the_kernel_rules() -> None:
    assert lines_up(view(), previous=False)  # open raises DTR/RTS
    assert not lines_up(view(baud=0), previous=True)  # B0 drops them
    assert not lines_up(view(attached=False), previous=True)  # last close with HUPCL drops them
    assert lines_up(view(attached=False, hupcl=False), previous=True)  # without HUPCL they stay
    assert not lines_up(view(attached=False, hupcl=False), previous=False)


def test_first_sync_pushes_everything_then_only_changes() -> None:
    requests, sent, lines = sync_requests(view(baud=57600), sent=None, lines_sent=None)
    assert (Cmd.SET_BAUDRATE, 57600) in requests
    assert (Cmd.SET_CONTROL, Control.DTR_ON) in requests and (Cmd.SET_CONTROL, Control.RTS_ON) in requests
    assert len(requests) == 7
    again, sent2, lines2 = sync_requests(view(baud=57600), sent=sent, lines_sent=lines)
    assert again == [] and sent2 == sent and lines2 is True
    changed, _, _ = sync_requests(view(baud=9600), sent=sent, lines_sent=lines)
    assert changed == [(Cmd.SET_BAUDRATE, 9600)]


def test_b0_drops_lines_without_sending_a_speed() -> None:
    _, sent, lines = sync_requests(view(baud=57600), sent=None, lines_sent=None)
    requests, sent_after, lines_after = sync_requests(view(baud=0), sent=sent, lines_sent=lines)
    assert requests == [(Cmd.SET_CONTROL, Control.DTR_OFF), (Cmd.SET_CONTROL, Control.RTS_OFF)]
    assert sent_after.baud_rate == 57600 and lines_after is False
    requests, _, _ = sync_requests(view(baud=57600), sent=sent_after, lines_sent=lines_after)
    assert requests == [(Cmd.SET_CONTROL, Control.DTR_ON), (Cmd.SET_CONTROL, Control.RTS_ON)]


def test_hardware_flow_control_leaves_rts_alone() -> None:
    requests, _, _ = sync_requests(view(flow=Control.FLOW_HARDWARE), sent=None, lines_sent=None)
    assert (Cmd.SET_CONTROL, Control.DTR_ON) in requests
    assert not any(
        value in (Control.RTS_ON, Control.RTS_OFF)
        for command, value in requests
        if command == Cmd.SET_CONTROL
    )
