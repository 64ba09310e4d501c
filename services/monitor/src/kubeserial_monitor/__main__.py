"""kubeserial-monitor: one per node (DaemonSet). Finds USB serial adapters with udev, publishes each as
a SerialPort of its node and renews the node's Lease. It reads no SerialDevice (the controller binds)
and uses the lean client (kubeserial_common.runtime.lean), not kubernetes_asyncio."""

import argparse
import asyncio
import os
import sys

from kubeserial_common.core.cli import add_common_arguments
from kubeserial_common.runtime.health import HealthServer
from kubeserial_common.runtime.lean import lean_client
from kubeserial_common.runtime.logs import configure_logging, get_logger
from kubeserial_common.runtime.runner import Runner
from kubeserial_monitor.metrics import Metrics
from kubeserial_monitor.monitor import Monitor, Settings

HEALTH_PORT = 8095  # hostNetwork: keep clear of the usual 8080

log = get_logger("kubeserial_monitor")


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog="kubeserial-monitor",
        description="Watch this node's USB serial adapters (udev hot-plug) and publish each one as a "
        "SerialPort of this node; renew the node's monitor Lease.",
    )
    add_common_arguments(result, health_port=HEALTH_PORT)
    result.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME") or None,
        help="the Node this monitor runs on (default $NODE_NAME, from the downward API)",
    )
    result.add_argument(
        "--rescan-seconds",
        type=float,
        default=30.0,
        help="full udev rescan interval; repairs any missed hot-plug event (default 30)",
    )
    result.add_argument(
        "--resync-seconds",
        type=float,
        default=0.0,
        help="re-list this node's SerialPorts this often, repairing a hand-deleted one (default 0: "
        "only at start; the monitor keeps what it wrote)",
    )
    result.add_argument(
        "--lease-duration-seconds",
        type=int,
        default=40,
        help="duration of the node Lease; the controller declares the node lost after it (default 40)",
    )
    result.add_argument(
        "--lease-renew-seconds", type=float, default=10.0, help="node Lease renewal interval (default 10)"
    )
    return result


async def serve(args: argparse.Namespace) -> int:
    settings = Settings(
        node=args.node_name,
        namespace=args.namespace,
        rescan_seconds=args.rescan_seconds,
        resync_seconds=args.resync_seconds,
        lease_duration_seconds=args.lease_duration_seconds,
        lease_renew_seconds=args.lease_renew_seconds,
    )
    log.info("starting", node=settings.node, namespace=settings.namespace)
    try:
        api = lean_client(args.kubeconfig, user_agent=f"kubeserial-monitor/{settings.node}")
    except (OSError, ValueError, KeyError) as exc:  # unreadable or unsupported kubeconfig: say why
        log.error("cannot load Kubernetes credentials", error=repr(exc))
        return 2
    async with api:
        metrics = Metrics()
        health = HealthServer(host=args.health_host, port=args.health_port, registry=metrics.registry)
        monitor = Monitor(api, settings, metrics=metrics, health=health)
        runner = Runner(health=health)
        monitor.register(runner)
        await monitor.start()
        code = await runner.run()
    log.info("stopped", node=settings.node, exit_code=code)
    return code


def main(argv: list[str] | None = None) -> int:
    arg_parser = parser()
    args = arg_parser.parse_args(argv)
    if not args.node_name:
        arg_parser.error("--node-name (or $NODE_NAME) is required")
    configure_logging(level=args.log_level, fmt=args.log_format, lean=True)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
