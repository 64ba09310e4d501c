"""kubectl serial: `ls`, `adopt NODE/PORT --name NAME`, `console DEVICE`, `status DEVICE`.

kubectl finds this as `kubectl-serial` on PATH. It talks to the apiserver with the lean client
(kubeserial_common.runtime.lean: your kubeconfig's token or client certificate) and reaches a
device's gateway through `kubectl port-forward` (so RBAC on pods/portforward gates consoles).
"""

import argparse
import asyncio
import os
import re
import select
import socket
import subprocess
import sys
from typing import Any

from kubeserial_common.core import resources as r
from kubeserial_common.core.constants import DEFAULT_NAMESPACE, RAW_PORT, RFC2217_PORT
from kubeserial_common.core.errors import AlreadyExists, ApiError, NotFound, message_of
from kubeserial_common.core.names import gateway_name
from kubeserial_common.runtime.lean import LeanClient, lean_client
from kubeserial_kubectl import terminal, views
from kubeserial_kubectl.views import UserError


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="kubectl serial",
        description="USB serial devices on Kubernetes (KubeSerial): see what is plugged in where, "
        "adopt an adapter as a SerialDevice, open a console to it.",
    )
    top.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or None, help="kubeconfig file")
    top.add_argument(
        "-n", "--namespace", default=DEFAULT_NAMESPACE, help="namespace of the gateways (kubeserial)"
    )
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("ls", help="every USB serial adapter on every node, and the device bound to it")
    adopt = sub.add_parser("adopt", help="create a SerialDevice from a discovered adapter")
    adopt.add_argument(
        "port", metavar="NODE/PORT", help="e.g. node-a/ttyUSB0 (as `kubectl serial ls` prints)"
    )
    adopt.add_argument("--name", required=True, help="the SerialDevice's name, e.g. ender3")
    adopt.add_argument("--manager", help="a Manager to run for the device, e.g. octoprint")
    adopt.add_argument("--baud", type=int, help="baud rate the gateway opens the port at (default 115200)")
    console = sub.add_parser(
        "console",
        help=f"an interactive terminal to a device through its gateway ({terminal.EXIT_KEY_NAME} exits)",
    )
    console.add_argument("device", metavar="DEVICE")
    console.add_argument("--baud", type=int, help="set this baud rate first (RFC 2217)")
    status = sub.add_parser("status", help="where a device is, and whether it is available and free")
    status.add_argument("device", metavar="DEVICE")
    return top


async def _get_device(api: LeanClient, name: str) -> dict[str, Any] | None:
    try:
        return await api.get(r.SERIALDEVICE, name)
    except NotFound:
        return None


async def run(args: argparse.Namespace) -> int:
    async with lean_client(args.kubeconfig, user_agent="kubectl-serial") as api:
        if args.command == "ls":
            ports = (await api.list(r.SERIALPORT)).get("items") or []
            print(views.ls_table(ports))
        elif args.command == "adopt":
            ports = (await api.list(r.SERIALPORT)).get("items") or []
            port = views.find_port(ports, args.port)
            body = views.device_for_port(port, name=args.name, manager=args.manager, baud=args.baud)
            try:
                await api.create(r.SERIALDEVICE, body)
            except AlreadyExists as exc:
                raise UserError(f"SerialDevice {args.name!r} already exists") from exc
            spec = body["spec"]
            print(
                f"serialdevice/{args.name} created for {spec['idVendor']}:{spec['idProduct']}"
                + (f" serial {spec['serialNumber']}" if "serialNumber" in spec else "")
                + f" (now on {port['spec']['nodeName']}/{views.port_short(port)});"
                f" `kubectl serial console {args.name}` opens it"
            )
        elif args.command == "status":
            device = await _get_device(api, args.device)
            if device is None:
                raise UserError(f"unknown device {args.device!r}; `kubectl get serialdevices` lists them")
            print(views.status_text(device))
        elif args.command == "console":
            refusal = views.console_refusal(await _get_device(api, args.device), args.device)
            if refusal:
                raise UserError(refusal)
            return console(args)
    return 0


FORWARDING = re.compile(rb"Forwarding from 127\.0\.0\.1:(\d+)")


def console(args: argparse.Namespace) -> int:
    """`kubectl port-forward svc/<device>-gateway` to a local port, then a raw terminal on it."""
    remote = RFC2217_PORT if args.baud else RAW_PORT
    cmd = ["kubectl", "port-forward", "-n", args.namespace, f"svc/{gateway_name(args.device)}", f":{remote}"]
    if args.kubeconfig:
        cmd[1:1] = ["--kubeconfig", args.kubeconfig]
    forward = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()
        match = FORWARDING.search(line)
        if not match:
            error = (forward.stderr.read() if forward.stderr else b"").decode(errors="replace").strip()
            raise UserError(f"kubectl port-forward failed: {error or line.decode(errors='replace')}")
        sock = socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=10)
        sock.settimeout(None)
        telnet = terminal.TelnetFilter() if args.baud else None
        if args.baud:
            sock.sendall(terminal.set_baud_rate(args.baud))
        print(f"connected to {args.device}; {terminal.EXIT_KEY_NAME} exits\r", file=sys.stderr)
        stdin = sys.stdin.fileno()
        with terminal.raw_terminal(stdin), sock:
            while True:
                ready, _, _ = select.select([stdin, sock], [], [])
                if stdin in ready:
                    data = os.read(stdin, 4096)
                    send, leave = terminal.split_at_exit(data)
                    if send:
                        sock.sendall(terminal.escape_iac(send) if telnet else send)
                    if leave or not data:
                        break
                if sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        print("\r\nconnection closed by the gateway\r", file=sys.stderr)
                        return 1
                    os.write(sys.stdout.fileno(), telnet.feed(data) if telnet else data)
    finally:
        forward.terminate()
        forward.wait(timeout=5)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"error: the apiserver said: {message_of(exc)}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
