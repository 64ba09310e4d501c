"""Command-line options every service shares."""

import argparse
import os

from kubeserial_common.core.constants import DEFAULT_NAMESPACE
from kubeserial_common.core.gatewayargs import HEALTH_PORT


def add_common_arguments(
    parser: argparse.ArgumentParser,
    *,
    health_port: int,
    namespace: str = DEFAULT_NAMESPACE,
    namespace_help: str = "namespace KubeSerial runs in: gateways, leases, events",
) -> None:
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG") or None,
        help="kubeconfig to use outside a cluster (default: in-cluster service account, then ~/.kube/config)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("KUBESERIAL_LOG_LEVEL", "info"),
        help="debug, info, warning, error",
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get("KUBESERIAL_LOG_FORMAT", "auto"),
        choices=["auto", "json", "console"],
        help="auto: console on a terminal, JSON otherwise",
    )
    parser.add_argument(
        HEALTH_PORT,
        type=int,
        default=int(os.environ.get("KUBESERIAL_HEALTH_PORT", health_port)),
        help=f"port for /healthz, /readyz and /metrics (default {health_port}; 0 picks a free port)",
    )
    parser.add_argument(
        "--health-host",
        default=os.environ.get("KUBESERIAL_HEALTH_HOST", "0.0.0.0"),
        help="address for the health/metrics server",
    )
    parser.add_argument(
        "--namespace",
        default=os.environ.get("KUBESERIAL_NAMESPACE") or os.environ.get("POD_NAMESPACE") or namespace,
        help=f"{namespace_help} (default $KUBESERIAL_NAMESPACE, $POD_NAMESPACE, else {namespace})",
    )
