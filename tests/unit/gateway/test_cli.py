"""The command line: both subcommands document themselves; bad URLs are refused."""

import pytest

from kubeserial_gateway.__main__ import build_parser, parse_gateway_url


@pytest.mark.parametrize("command", [[], ["serve"], ["bridge"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: kubeserial-gateway" in capsys.readouterr().out


def test_defaults_match_the_contract() -> None:
    args = build_parser().parse_args(["serve", "--device", "/dev/ttyUSB0"])
    assert (args.raw_port, args.rfc2217_port, args.health_port) == (3333, 2217, 8080)
    assert args.allow_takeover is False and args.device_name is None


def test_gateway_url() -> None:
    assert parse_gateway_url("rfc2217://ender3-gateway.kubeserial.svc:2217") == (
        "ender3-gateway.kubeserial.svc",
        2217,
    )
    assert parse_gateway_url("rfc2217://host") == ("host", 2217)
    for bad in ("socket://host:3333", "host:2217", "rfc2217://"):
        with pytest.raises(ValueError):
            parse_gateway_url(bad)
