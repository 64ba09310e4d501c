"""kubeserial-gateway: a serial device on the network (serve), and a local tty for its consumers (bridge).

python -m kubeserial_gateway serve --device /dev/ttyUSB0 [--device-name ender3]
python -m kubeserial_gateway bridge --url rfc2217://ender3-gateway.kubeserial.svc:2217 --link /dev/serial/e3

Memory (one gateway per device, one bridge per consumer pod; budgets 30 and 20 MiB): `serve` imports
its device and server modules only when it serves, and the bridge never loads OpenSSL. It speaks
plain TCP, but asyncio (and uvloop) import the ssl module when it exists, about 4.5 MiB resident;
so `python -m kubeserial_gateway bridge` hides ssl before asyncio is imported, and the bridge runs
on asyncio's own loop (uvloop needs ssl).
"""

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["bridge"] and "ssl" not in sys.modules:
    sys.modules["ssl"] = None  # type: ignore[assignment]  # asyncio: `try: import ssl except ImportError`

import argparse
import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from kubeserial_common.core import gatewayargs as ga
from kubeserial_common.core.cli import add_common_arguments
from kubeserial_common.core.constants import DEFAULT_BAUD_RATE, RAW_PORT, RFC2217_PORT
from kubeserial_common.core.devicepaths import device_path_problem
from kubeserial_common.core.gatewayargs import (
    parse_gateway_url as parse_gateway_url,  # the bridge --url contract
)
from kubeserial_common.runtime.health import HealthServer
from kubeserial_common.runtime.logs import configure_logging, get_logger
from kubeserial_common.runtime.promtext import Registry
from kubeserial_common.runtime.runner import Runner
from kubeserial_gateway.metrics import BridgeMetrics, GatewayMetrics

log = get_logger("kubeserial_gateway")

GATEWAY_HEALTH_PORT = 8080
BRIDGE_HEALTH_PORT = 18217  # same base as kubeserial_common.core.podspec gives injected bridges
STATUS_FLUSH_SECONDS = 5.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubeserial-gateway",
        description="Serve a serial device over raw TCP and RFC 2217 (serve), "
        "or give an application a local tty backed by a gateway (bridge).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{serve,bridge}")

    serve = commands.add_parser(
        ga.SERVE,
        help="serve a serial device",
        description="Serve a serial device: raw TCP (socket://) and RFC 2217 (rfc2217://), one session at a "
        "time. Keeps running when the device goes away and reopens it when it comes back.",
    )
    serve.add_argument(
        ga.DEVICE,
        required=True,
        help="path of a USB serial device of this node: /dev/serial/by-id/..., /dev/serial/by-path/...,"
        " /dev/ttyUSB<n> or /dev/ttyACM<n>; anything that is not a USB serial tty in sysfs is refused",
    )
    serve.add_argument(
        ga.TEST_ALLOW_ANY_TTY,
        action="store_true",
        help="TESTS ONLY: serve any tty (e.g. a pty) without the USB check; never set in a cluster",
    )
    serve.add_argument(
        ga.DEVICE_NAME,
        help="SerialDevice whose Free condition this gateway maintains (needs get serialdevices and "
        "get/patch serialdevices/status)",
    )
    serve.add_argument(
        ga.BAUD_RATE,
        type=int,
        default=DEFAULT_BAUD_RATE,
        help=f"baud rate between sessions (default {DEFAULT_BAUD_RATE})",
    )
    serve.add_argument("--raw-port", type=int, default=RAW_PORT, help=f"raw TCP port (default {RAW_PORT})")
    serve.add_argument(
        "--rfc2217-port", type=int, default=RFC2217_PORT, help=f"RFC 2217 port (default {RFC2217_PORT})"
    )
    serve.add_argument("--listen-host", default=None, help="address to listen on (default: all interfaces)")
    serve.add_argument(
        "--allow-takeover",
        action="store_true",
        help="let a new client replace a session that moved no data for --takeover-idle-seconds",
    )
    serve.add_argument(
        "--takeover-idle-seconds",
        type=float,
        default=30.0,
        help="how long a session must be idle (no bytes either way) to be taken over (default 30)",
    )
    add_common_arguments(serve, health_port=GATEWAY_HEALTH_PORT)
    _add_event_loop_argument(serve)

    bridge = commands.add_parser(
        ga.BRIDGE,
        help="give an application a local tty backed by a gateway",
        description="Create a pty, link it at --link and connect it to a gateway over RFC 2217: data both "
        "ways, and the application's termios and DTR/RTS changes forwarded. Reconnects with backoff; the "
        "tty stays open meanwhile. /healthz: the tty exists; /readyz: connected.",
    )
    bridge.add_argument(ga.URL, required=True, help="gateway URL, rfc2217://HOST:PORT")
    bridge.add_argument(ga.LINK, required=True, type=Path, help="path of the symlink to the tty")
    bridge.add_argument(
        ga.VIA_PROC,
        action="store_true",
        help="link to /proc/<pid>/root/dev/pts/N so other containers of the pod (shared PID namespace, "
        "same uid) can open the tty",
    )
    add_common_arguments(bridge, health_port=BRIDGE_HEALTH_PORT)
    _add_event_loop_argument(bridge)
    return parser


def _add_event_loop_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--event-loop",
        choices=["auto", "uvloop", "asyncio"],
        default=os.environ.get("KUBESERIAL_EVENT_LOOP", "auto"),
        help="auto: uvloop when installed (about a quarter less CPU per round trip), else asyncio",
    )


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


async def serve(args: argparse.Namespace) -> int:
    from kubeserial_gateway.device import DevicePort
    from kubeserial_gateway.rfc2217 import SerialSettings
    from kubeserial_gateway.server import Gateway, GatewayOptions
    from kubeserial_gateway.usbtty import FIELD, check_usb_tty

    admit = None
    if args.test_allow_any_tty:
        log.warning(f"{ga.TEST_ALLOW_ANY_TTY}: serving a tty without checking that it is a USB serial device")
    else:
        problem = device_path_problem(args.device, field=FIELD)
        if problem:
            log.error("refusing to serve the device", error=problem)
            return 2
        admit = check_usb_tty
    registry = Registry()
    metrics = GatewayMetrics(registry)
    device = DevicePort(
        args.device, defaults=SerialSettings(baud_rate=args.baud_rate), metrics=metrics, admit=admit
    )
    writer = None
    if args.device_name:
        # Imported only when needed: the API client and YAML add memory a plain gateway does not need.
        from kubeserial_gateway.freestatus import FreeStatusWriter
        from kubeserial_gateway.kubeapi import SlimCustomObjects, load_endpoint

        try:
            endpoint = load_endpoint(args.kubeconfig)
        except Exception as exc:  # unreadable, malformed or unsupported kubeconfig alike: exit 2, say why
            log.error("cannot load Kubernetes credentials", error=repr(exc))
            return 2
        writer = FreeStatusWriter(SlimCustomObjects(endpoint), device_name=args.device_name, metrics=metrics)
    gateway = Gateway(
        device=device,
        metrics=metrics,
        options=GatewayOptions(
            allow_takeover=args.allow_takeover, takeover_idle_seconds=args.takeover_idle_seconds
        ),
        on_session_change=None if writer is None else writer.set,
    )
    health = HealthServer(
        host=args.health_host,
        port=args.health_port,
        registry=registry,
        live_checks={"running": lambda: True},
        ready_checks={"device_open": lambda: device.is_open},
    )
    try:
        await health.start()
        await gateway.listen(host=args.listen_host, raw_port=args.raw_port, rfc2217_port=args.rfc2217_port)
    except OSError as exc:
        log.error("cannot listen", error=repr(exc))
        await health.stop()
        return 1
    runner = Runner(health=health)
    runner.add("keep_device_open", gateway.keep_device_open)
    runner.add("poll_modem_lines", gateway.poll_modem_lines)
    if writer is not None:
        runner.add("free_status", writer.run)

    async def end_sessions() -> None:
        log.info("stopping")
        await gateway.stop()
        if writer is not None and not await writer.flush(within=STATUS_FLUSH_SECONDS):
            log.warning("the Free condition could not be written before exit")

    runner.on_stopping("sessions", end_sessions)
    return await runner.run()


async def bridge(args: argparse.Namespace) -> int:
    try:
        host, port = parse_gateway_url(args.url)
    except ValueError as exc:
        log.error("bad --url", error=str(exc))
        return 2
    from kubeserial_gateway.bridge import Bridge

    registry = Registry()
    the_bridge = Bridge(
        host=host, port=port, link=args.link, via_proc=args.via_proc, metrics=BridgeMetrics(registry)
    )
    health = HealthServer(
        host=args.health_host,
        port=args.health_port,
        registry=registry,
        live_checks={"tty": lambda: the_bridge.link_published},
        ready_checks={"connected": lambda: the_bridge.is_connected},
    )
    try:
        the_bridge.open_pty()
        await health.start()
    except OSError as exc:
        log.error("cannot start the bridge", error=repr(exc))
        the_bridge.close()
        return 1
    runner = Runner(health=health)
    runner.add("watch_tty", the_bridge.watch_tty)
    runner.add("connect", the_bridge.connect_forever)

    async def close_tty() -> None:
        the_bridge.close()

    runner.on_shutdown("tty", close_tty)
    return await runner.run()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(level=args.log_level, fmt=args.log_format, lean=True)
    command = serve if args.command == ga.SERVE else bridge
    with asyncio.Runner(loop_factory=event_loop_factory(args.event_loop)) as runner:
        return runner.run(command(args))


if __name__ == "__main__":
    sys.exit(main())
