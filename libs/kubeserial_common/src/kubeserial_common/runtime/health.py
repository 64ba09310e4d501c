"""A tiny HTTP server for /healthz, /readyz and /metrics (Prometheus text format).

Each service runs one on its own port; it answers GETs only, and only these three paths.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = structlog.get_logger(__name__)

Check = Callable[[], bool]


@dataclass
class HealthServer:
    host: str = "0.0.0.0"
    port: int = 8080
    registry: CollectorRegistry = REGISTRY
    live_checks: dict[str, Check] = field(default_factory=dict)
    ready_checks: dict[str, Check] = field(default_factory=dict)
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen (once: a service may start it early, before the process runner does)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self._server.sockets or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("health server listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _respond(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path in ("/healthz", "/livez", "/readyz"):
            checks = self.ready_checks if path == "/readyz" else self.live_checks
            failed = [name for name, check in checks.items() if not check()]
            body = ("ok\n" if not failed else "failed: " + ", ".join(failed) + "\n").encode()
            return (200 if not failed else 503), "text/plain; charset=utf-8", body
        return 404, "text/plain; charset=utf-8", b"not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            parts = request.split(b"\r\n", 1)[0].split()
            if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
                status, ctype, body = 405, "text/plain; charset=utf-8", b"method not allowed\n"
            else:
                status, ctype, body = self._respond(parts[1].decode("latin-1").split("?", 1)[0])
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[
                status
            ]
            head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            writer.write(
                (head + "Connection: close\r\n\r\n").encode() + (body if parts[0] != b"HEAD" else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
