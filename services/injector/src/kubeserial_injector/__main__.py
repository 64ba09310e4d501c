"""kubeserial-injector: the mutating admission webhook that connects annotated pods to devices.

python -m kubeserial_injector --port 8443                       # self-managed certificates
python -m kubeserial_injector --cert-mode files --tls-cert-file tls.crt --tls-key-file tls.key
"""

import argparse
import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import ssl
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import structlog
import uvicorn
import uvloop
from prometheus_client import CollectorRegistry

from kubeserial_common.core.cli import add_common_arguments
from kubeserial_common.core.constants import DEFAULT_NAMESPACE, SYSTEM_NAMESPACE
from kubeserial_common.core.errors import ApiError
from kubeserial_common.core.podspec import DEFAULT_BRIDGE_IMAGE, BridgeSettings
from kubeserial_common.runtime.health import HealthServer
from kubeserial_common.runtime.lean import LeanClient, lean_client
from kubeserial_common.runtime.logs import configure_logging
from kubeserial_common.runtime.runner import Runner
from kubeserial_injector.app import AdmissionMetrics, create_app
from kubeserial_injector.certs import SelfManagedCerts, TlsBundle, server_context, serving_names, write_files
from kubeserial_injector.devices import DeviceCatalog

log = structlog.get_logger("kubeserial_injector")

SELF_MANAGED = "self-managed"
FILES = "files"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubeserial-injector",
        description="Mutating admission webhook: pods annotated app.kubeserial.com/inject-device=<device>"
        " get the device's URLs in their environment and, in tty mode, a tty backed by a bridge sidecar.",
    )
    add_common_arguments(
        parser,
        health_port=8080,
        namespace=SYSTEM_NAMESPACE,
        namespace_help="the injector's own namespace: its Service's name in the certificate, its Secret",
    )
    env = os.environ.get
    parser.add_argument(
        "--gateway-namespace",
        default=env("KUBESERIAL_GATEWAY_NAMESPACE", DEFAULT_NAMESPACE),
        help="namespace of the gateways' Services, in the URLs a pod gets"
        f" (default $KUBESERIAL_GATEWAY_NAMESPACE, else {DEFAULT_NAMESPACE})",
    )
    parser.add_argument("--host", default=env("KUBESERIAL_INJECTOR_HOST", "0.0.0.0"), help="webhook address")
    parser.add_argument(
        "--port", type=int, default=int(env("KUBESERIAL_INJECTOR_PORT", "8443")), help="webhook HTTPS port"
    )
    parser.add_argument(
        "--bridge-image",
        default=env("KUBESERIAL_BRIDGE_IMAGE", DEFAULT_BRIDGE_IMAGE),
        help=f"image of the tty bridge sidecar (default {DEFAULT_BRIDGE_IMAGE})",
    )
    parser.add_argument(
        "--bridge-image-pull-policy",
        default=env("KUBESERIAL_BRIDGE_IMAGE_PULL_POLICY") or None,
        choices=["Always", "IfNotPresent", "Never"],
        help="imagePullPolicy of the bridge sidecar (default: the cluster's default)",
    )
    parser.add_argument(
        "--cert-mode",
        default=env("KUBESERIAL_INJECTOR_CERT_MODE", SELF_MANAGED),
        choices=[SELF_MANAGED, FILES],
        help="self-managed: keep a CA and certificate in --tls-secret and patch the webhook's caBundle;"
        " files: serve --tls-cert-file/--tls-key-file (e.g. from cert-manager), reloaded on change",
    )
    parser.add_argument("--tls-cert-file", type=Path, help="serving certificate (files mode)")
    parser.add_argument("--tls-key-file", type=Path, help="serving key (files mode)")
    parser.add_argument(
        "--tls-secret",
        default="kubeserial-injector-tls",
        help="Secret holding CA and certificate (self-managed)",
    )
    parser.add_argument(
        "--webhook-config",
        default="kubeserial-injector",
        help="MutatingWebhookConfiguration whose caBundle to keep current (self-managed)",
    )
    parser.add_argument(
        "--service-name",
        default="kubeserial-injector",
        help="Service in front of the webhook (certificate name)",
    )
    parser.add_argument(
        "--extra-san",
        action="append",
        default=[],
        help="additional DNS name or IP address for the self-managed certificate (repeatable)",
    )
    parser.add_argument(
        "--cert-dir",
        type=Path,
        help="where to write the self-managed certificate (default: a temporary folder, removed at exit)",
    )
    parser.add_argument(
        "--cert-check-seconds",
        type=float,
        default=60.0,
        help="how often to re-check the certificate and the caBundle",
    )
    return parser


class WebhookServer(uvicorn.Server):
    """uvicorn without its own signal handling: Injector stops it, then cleans up the rest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Injector:
    """Wires the pieces: device cache, TLS, webhook server, health server."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.registry = CollectorRegistry()
        self.health = HealthServer(host=args.health_host, port=args.health_port, registry=self.registry)
        self.metrics = AdmissionMetrics.register(self.registry)
        self.settings = BridgeSettings(
            image=args.bridge_image,
            namespace=args.gateway_namespace,
            image_pull_policy=args.bridge_image_pull_policy,
        )
        self.server: uvicorn.Server | None = None
        self.runner = Runner(health=self.health)
        self._cleanup = contextlib.ExitStack()

    async def run(self) -> int:
        self.health.live_checks["process"] = lambda: True
        # The lean client (runtime.lean): kubernetes_asyncio and aiohttp would cost ~45 MiB here.
        # Two kept-alive connections: device GETs on a cache miss and the certificate checks.
        with self._cleanup:  # the self-managed certificate's folder, if one was made
            return await self._run()

    async def _run(self) -> int:
        async with lean_client(self.args.kubeconfig, connections=2, user_agent="kubeserial-injector") as api:
            catalog = DeviceCatalog(api)
            self.health.ready_checks["devices-synced"] = lambda: catalog.synced
            self.health.ready_checks["serving"] = lambda: self.server is not None and self.server.started
            self.runner.add("devices", catalog.run)
            self.runner.add("webhook", lambda: self._serve(api, catalog), graceful_stop=self._drain)
            return await self.runner.run()

    async def _serve(self, api: LeanClient, catalog: DeviceCatalog) -> None:
        context = await self._tls(api)
        app = create_app(lookup=catalog.lookup, settings=self.settings, metrics=self.metrics)
        config = uvicorn.Config(
            app,
            host=self.args.host,
            port=self.args.port,
            ssl_context_factory=lambda _config, _default: context,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,  # the apiserver reuses connections; do not make it reconnect
        )
        self.server = WebhookServer(config)
        # uvicorn's own lifecycle lines are plain text; ours below are structured.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        log.info("serving webhook", host=self.args.host, port=self.args.port, path="/mutate")
        # Everything loaded so far (the Kubernetes client's models above all) lives for the whole
        # process; a full collection scanning it took ~25 ms here, a stall for admissions.
        gc.collect()
        gc.freeze()
        await self.server.serve()
        if not self.server.should_exit:
            raise RuntimeError("the webhook server stopped by itself (could it bind its port?)")

    def _drain(self) -> bool:
        """At SIGTERM: finish in-flight admissions, then end; still starting up: nothing to drain."""
        if self.server is None:
            return False
        self.server.should_exit = True
        return True

    async def _tls(self, api: LeanClient) -> ssl.SSLContext:
        args = self.args
        if args.cert_mode == FILES:
            if args.tls_cert_file is None or args.tls_key_file is None:
                raise SystemExit("--cert-mode files needs --tls-cert-file and --tls-key-file")
            context = server_context(args.tls_cert_file, args.tls_key_file)
            self.runner.add("tls-files", lambda: self._watch_files(context))
            return context
        certs = SelfManagedCerts(
            api,
            namespace=args.namespace,
            secret_name=args.tls_secret,
            webhook_config=args.webhook_config,
            names=serving_names(args.service_name, args.namespace) + list(args.extra_san),
        )
        # The TLS context loads the certificate from files: a folder of our own, removed at exit,
        # unless --cert-dir names one. Files mode needs none (read-only root, no writable /tmp).
        cert_dir = args.cert_dir or Path(
            self._cleanup.enter_context(tempfile.TemporaryDirectory(prefix="kubeserial-injector-"))
        )
        bundle = await self._settle(certs)
        context = server_context(*write_files(bundle, cert_dir))
        self.runner.add("tls-self-managed", lambda: self._keep_certs(certs, context, bundle, cert_dir))
        return context

    async def _settle(self, certs: SelfManagedCerts) -> TlsBundle:
        """The first certificate; the apiserver may not answer yet, so retry with backoff."""
        delay = 0.2
        while True:
            try:
                bundle = await certs.ensure_secret()
                await certs.ensure_ca_bundle(bundle.ca_pem)
                return bundle
            except (ApiError, RuntimeError) as exc:  # RuntimeError: the Secret did not settle
                log.warning("certificate setup failed; retrying", error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _keep_certs(
        self, certs: SelfManagedCerts, context: ssl.SSLContext, bundle: TlsBundle, cert_dir: Path
    ) -> None:
        """Follow the Secret (another replica may rotate it) and keep the caBundle current."""
        while True:
            await asyncio.sleep(self.args.cert_check_seconds)
            try:
                fresh = await certs.ensure_secret()
                if fresh.fingerprint() != bundle.fingerprint():
                    # Trust first, then serve: the bundle holds old and new CA during rotation.
                    await certs.ensure_ca_bundle(fresh.ca_pem)
                    context.load_cert_chain(*map(str, write_files(fresh, cert_dir)))
                    bundle = fresh
                    log.info("serving a new certificate", fingerprint=fresh.fingerprint())
                else:
                    await certs.ensure_ca_bundle(fresh.ca_pem)
            except (ApiError, RuntimeError, OSError, ssl.SSLError) as exc:  # a bad bundle: keep the old one
                log.warning("certificate check failed", error=repr(exc))

    async def _watch_files(self, context: ssl.SSLContext) -> None:
        """Reload the certificate files when their contents change (cert-manager renews in place)."""
        cert_file, key_file = self.args.tls_cert_file, self.args.tls_key_file
        seen = _digest(cert_file, key_file)
        while True:
            await asyncio.sleep(self.args.cert_check_seconds)
            try:
                current = _digest(cert_file, key_file)
                if current != seen:
                    context.load_cert_chain(str(cert_file), str(key_file))
                    seen = current
                    log.info("reloaded certificate files", cert=str(cert_file))
            except (OSError, ssl.SSLError) as exc:
                log.warning("could not reload certificate files", error=repr(exc))


def _digest(*paths: Path) -> str:
    return hashlib.sha256(b"".join(path.read_bytes() for path in paths)).hexdigest()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(level=args.log_level, fmt=args.log_format)
    log.info("starting", port=args.port, cert_mode=args.cert_mode, bridge_image=args.bridge_image)
    # uvloop (with httptools, which uvicorn picks up itself): ~25% less CPU per admission (bench).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        code = runner.run(Injector(args).run())
    log.info("stopped", exit_code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
