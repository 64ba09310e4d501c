"""kubeserial-controller: KubeSerial, SerialDevice, ManagerScheduleRequest and node-liveness reconcilers.

Only the holder of the leader Lease reconciles; a replica that loses it exits so its pod restarts
clean, and a standby takes over once the Lease expires (at once when the old leader released it).
"""

import argparse
import asyncio
import os
import socket
import sys
import uuid
from datetime import timedelta

import structlog
from prometheus_client import CollectorRegistry

from kubeserial_common.core.cli import add_common_arguments
from kubeserial_common.core.constants import SYSTEM_NAMESPACE
from kubeserial_common.runtime.health import HealthServer
from kubeserial_common.runtime.lean import lean_client
from kubeserial_common.runtime.leases import LeaseHolder
from kubeserial_common.runtime.logs import configure_logging
from kubeserial_common.runtime.runner import Runner
from kubeserial_controller.controller import Controller
from kubeserial_controller.desired import DEFAULT_SCRAPER_LABELS, Images, parse_label_map
from kubeserial_controller.metrics import ControllerMetrics
from kubeserial_controller.reconcilers import Settings

log = structlog.get_logger("kubeserial_controller")

DEFAULT_GATEWAY_IMAGE = "kubeserial/gateway:latest"
EXIT_LOST_LEADERSHIP = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubeserial-controller",
        description="Reconcile KubeSerials into SerialDevices, available SerialDevices into gateways and "
        "ManagerScheduleRequests, and requests into manager workloads. Leader-elected.",
    )
    add_common_arguments(
        parser,
        health_port=8080,
        namespace_help="namespace of the gateways, manager workloads and monitor Leases (privileged)",
    )
    parser.add_argument(
        "--gateway-image",
        default=os.environ.get("KUBESERIAL_GATEWAY_IMAGE", DEFAULT_GATEWAY_IMAGE),
        help=f"image of the per-device gateway and the tty bridge (default {DEFAULT_GATEWAY_IMAGE})",
    )
    parser.add_argument(
        "--image-pull-policy",
        default=os.environ.get("KUBESERIAL_IMAGE_PULL_POLICY", "IfNotPresent"),
        choices=["Always", "IfNotPresent", "Never"],
        help="pull policy for the gateway image (default IfNotPresent, so locally loaded images work)",
    )
    default_scrapers = ",".join(f"{k}={v}" for k, v in DEFAULT_SCRAPER_LABELS.items())
    parser.add_argument(
        "--scraper-labels",
        default=default_scrapers,
        help="labels (k=v,...) of the pods, in any namespace, that each gateway's NetworkPolicy lets read its"
        f" /metrics and health port 8080 (default {default_scrapers}: the Prometheus of the Prometheus"
        " Operator and of the prometheus-community charts)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=4,
        help="concurrent reconciles per kind (default 4; a key never runs twice at once)",
    )
    parser.add_argument(
        "--binding-workers",
        type=int,
        default=16,
        help="concurrent binding decisions (default 16): each waits on two or three apiserver writes, so"
        " a cold start with thousands of SerialDevices is bound by how many run at once",
    )
    parser.add_argument(
        "--api-connections",
        type=int,
        default=16,
        help="kept-alive connections to the apiserver shared by every reconcile and Event (default 16);"
        " watches and the leader Lease have their own",
    )
    parser.add_argument(
        "--node-grace-seconds",
        type=float,
        default=10.0,
        help="how long after a monitor Lease expires (or a claim was last confirmed) the node counts as lost "
        "and its devices get Available=Unknown/NodeLost (default 10)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=300.0,
        help="re-reconcile everything this often: the informers replay their caches, with no LIST "
        "(default 300)",
    )
    parser.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hold a coordination Lease before reconciling, so two replicas never both act (default on)",
    )
    parser.add_argument(
        "--leader-election-id",
        default="kubeserial-controller",
        help="name of the leader Lease (kubeserial-controller)",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("POD_NAMESPACE") or SYSTEM_NAMESPACE,
        help="namespace of the leader Lease, the controller's own"
        f" (default $POD_NAMESPACE, else {SYSTEM_NAMESPACE})",
    )
    parser.add_argument(
        "--lease-duration", type=int, default=15, help="leader Lease duration in seconds (15)"
    )
    parser.add_argument(
        "--renew-interval", type=float, default=5.0, help="leader Lease renewal period in seconds (5)"
    )
    args = parser.parse_args(argv)
    for flag in ("workers", "binding_workers", "api_connections"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.renew_interval >= args.lease_duration:
        parser.error("--renew-interval must be shorter than --lease-duration")
    try:
        args.scraper_labels = parse_label_map(args.scraper_labels, what="--scraper-labels")
    except ValueError as exc:
        parser.error(str(exc))
    return args


async def serve(args: argparse.Namespace) -> int:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    settings = Settings(
        namespace=args.namespace,
        images=Images(gateway=args.gateway_image, pull_policy=args.image_pull_policy),
        node_grace=timedelta(seconds=args.node_grace_seconds),
        scraper_labels=args.scraper_labels,
    )
    # The lean client (runtime.lean), not kubernetes_asyncio (~45 MiB with aiohttp): the controller's
    # budget is 100 MiB with 1,000 devices. Its connections bound how many requests are in flight:
    # with 5 (as before), a cold start at 10,000 devices bound 10-15 devices/s, waiting on them.
    async with (
        lean_client(
            args.kubeconfig, connections=args.api_connections, user_agent="kubeserial-controller"
        ) as api,
        # The leader Lease has a connection of its own: a renewal never queues behind the workers'
        # writes on a busy apiserver (a late renewal would cost the leadership and restart us).
        lean_client(args.kubeconfig, connections=1, user_agent="kubeserial-controller") as lease_api,
    ):
        controller = Controller(
            api,
            settings=settings,
            metrics=metrics,
            workers=args.workers,
            binding_workers=args.binding_workers,
            resync_seconds=args.resync_seconds,
        )
        health = HealthServer(
            host=args.health_host,
            port=args.health_port,
            registry=registry,
            ready_checks={"caches-synced": controller.world.synced},
        )
        runner = Runner(health=health)

        async def acquired() -> None:
            metrics.leader.set(1)
            runner.add("workers", controller.run_workers)

        async def lost_leadership() -> None:
            metrics.leader.set(0)
            runner.stop(
                code=EXIT_LOST_LEADERSHIP,
                reason="lost the leader Lease; exiting so a fresh replica can take over",
            )

        runner.add("informers", controller.run_informers)
        if args.leader_election:
            holder = LeaseHolder(
                lease_api,
                name=args.leader_election_id,
                namespace=args.leader_election_namespace,
                identity=f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}",
                duration_seconds=args.lease_duration,
                renew_seconds=args.renew_interval,
            )
            runner.add("leader-election", lambda: holder.run(on_acquired=acquired, on_lost=lost_leadership))
            runner.on_shutdown("release-lease", holder.release)
        else:
            await acquired()
        code = await runner.run()
    log.info("stopped", exit_code=code)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(level=args.log_level, fmt=args.log_format)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
