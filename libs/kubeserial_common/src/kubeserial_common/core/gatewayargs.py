"""The gateway's command lines, typed: built by the producers (the controller's gateway Deployment,
the bridge sidecar the controller and the injector add to pods) and parsed by the gateway with the
same flag names, so the contract between the services lives in one place and is tested both ways.
"""

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from kubeserial_common.core.constants import RFC2217_PORT

SERVE: Final = "serve"
BRIDGE: Final = "bridge"

# serve
DEVICE: Final = "--device"
DEVICE_NAME: Final = "--device-name"
BAUD_RATE: Final = "--baud-rate"
# Tests only: serve a tty that is not a USB serial adapter (a pty). No producer here ever emits it
# (ServeArgs has no field for it) and the shipped manifests never set it; a test checks both.
TEST_ALLOW_ANY_TTY: Final = "--test-allow-any-tty"
# bridge
URL: Final = "--url"
LINK: Final = "--link"
VIA_PROC: Final = "--via-proc"
# both
HEALTH_PORT: Final = "--health-port"


@dataclass(frozen=True)
class ServeArgs:
    device: str  # the tty path on the node
    device_name: str | None = None  # the SerialDevice whose Free condition the gateway keeps
    baud_rate: int | None = None

    def argv(self) -> list[str]:
        args = [SERVE, DEVICE, self.device]
        if self.device_name:
            args += [DEVICE_NAME, self.device_name]
        if self.baud_rate:
            args += [BAUD_RATE, str(self.baud_rate)]
        return args


@dataclass(frozen=True)
class BridgeArgs:
    url: str  # rfc2217://HOST:PORT of the gateway
    link: str  # where the tty's symlink goes
    via_proc: bool = False
    health_port: int | None = None

    def argv(self) -> list[str]:
        args = [BRIDGE, URL, self.url, LINK, self.link]
        if self.via_proc:
            args.append(VIA_PROC)
        if self.health_port is not None:
            args += [HEALTH_PORT, str(self.health_port)]
        return args


def parse_gateway_url(url: str) -> tuple[str, int]:
    """(host, port) of a bridge's --url; ValueError unless it is rfc2217://HOST[:PORT]."""
    parts = urlsplit(url)
    if parts.scheme != "rfc2217" or not parts.hostname:
        raise ValueError(f"expected rfc2217://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port or RFC2217_PORT
