"""A lean Kubernetes API client: JSON over HTTP/1.1 keep-alive connections, typed errors, no models.

Why not kubernetes_asyncio for everything: importing it costs about 70 MiB of RSS (it loads every
generated model). The processes that run once per node or per device (the monitor, the gateway and
its bridge) and the `kubectl serial` plugin make a handful of requests each, so they use this
instead: stdlib asyncio + ssl, the resource registry for paths, and kubeserial_common.core.errors
for failures (NotFound, Conflict, ...), exactly as runtime.kube raises them.

Auth: in-cluster service-account token (re-read on every request: projected tokens rotate), or a
kubeconfig with a bearer token (token or tokenFile) or client certificates; exec/auth-provider
plugins are not supported. No watch: callers that need one use runtime.watching.
"""

import asyncio
import base64
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from kubeserial_common.core.errors import ApiError as ApiError  # what every call here raises
from kubeserial_common.core.errors import Unreachable, from_status
from kubeserial_common.core.resources import ResourceInfo, custom_by_plural
from kubeserial_common.runtime.tasks import within

SA_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH: Final = "application/merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
MAX_RESPONSE: Final = 4 * 1024 * 1024
TIMEOUT_SECONDS: Final = 15.0


@dataclass(frozen=True)
class Endpoint:
    server: str  # https://host:port
    ca_file: str | None = None
    ca_data: str | None = None  # PEM
    insecure: bool = False
    token: str | None = None
    token_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None


def _resolve(path: str | None, base: Path) -> str | None:
    if not path:
        return None
    return str(Path(path) if os.path.isabs(path) else base / path)


def endpoint_from_kubeconfig(doc: dict[str, Any], *, base_dir: Path) -> Endpoint:
    """The current context's server and credentials; relative paths are relative to the file."""
    contexts = {item["name"]: item.get("context", {}) for item in doc.get("contexts") or []}
    clusters = {item["name"]: item.get("cluster", {}) for item in doc.get("clusters") or []}
    users = {item["name"]: item.get("user") or {} for item in doc.get("users") or []}
    context_name = doc.get("current-context") or next(iter(contexts), None)
    if context_name not in contexts:
        raise ValueError(f"kubeconfig has no context {context_name!r}")
    context = contexts[context_name]
    if context.get("cluster") not in clusters:
        raise ValueError(f"kubeconfig context {context_name!r} names an unknown cluster")
    cluster = clusters[context["cluster"]]
    user = users.get(context.get("user", ""), {})
    if "exec" in user or "auth-provider" in user:
        raise ValueError("kubeconfig exec/auth-provider credentials are not supported by the lean client")
    ca_data = cluster.get("certificate-authority-data")
    return Endpoint(
        server=str(cluster["server"]).rstrip("/"),
        ca_file=_resolve(cluster.get("certificate-authority"), base_dir),
        ca_data=base64.b64decode(ca_data).decode() if ca_data else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=user.get("token"),
        token_file=_resolve(user.get("tokenFile"), base_dir),
        cert_file=_resolve(user.get("client-certificate"), base_dir),
        key_file=_resolve(user.get("client-key"), base_dir),
        cert_data=base64.b64decode(user["client-certificate-data"])
        if user.get("client-certificate-data")
        else None,
        key_data=base64.b64decode(user["client-key-data"]) if user.get("client-key-data") else None,
    )


def in_cluster_endpoint(environ: dict[str, str]) -> Endpoint:
    host = environ["KUBERNETES_SERVICE_HOST"]
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    host = f"[{host}]" if ":" in host else host
    return Endpoint(
        server=f"https://{host}:{port}", ca_file=str(SA_DIR / "ca.crt"), token_file=str(SA_DIR / "token")
    )


def load_endpoint(kubeconfig: str | None) -> Endpoint:
    """Like runtime.kube.load_configuration: in a pod the service account, else a kubeconfig."""
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ and (SA_DIR / "token").exists():
        return in_cluster_endpoint(dict(os.environ))
    path = Path(kubeconfig or Path.home() / ".kube" / "config")
    import yaml  # only for a kubeconfig file: in a pod (the gateway, once per device) it is not loaded

    return endpoint_from_kubeconfig(yaml.safe_load(path.read_text()) or {}, base_dir=path.parent)


def parse_http_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of a complete HTTP/1.1 response."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise Unreachable("truncated HTTP response")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise Unreachable(f"bad HTTP status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return int(parts[1]), headers, body


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        line_end = body.find(b"\r\n", pos)
        if line_end < 0:
            raise Unreachable("truncated chunked body")
        size = int(body[pos:line_end].split(b";", 1)[0] or b"0", 16)
        if size == 0:
            return bytes(out)
        start = line_end + 2
        if start + size > len(body):
            raise Unreachable("truncated chunked body")
        out += body[start : start + size]
        pos = start + size + 2


def api_error(status: int, body: bytes) -> ApiError:
    """The typed error (NotFound, Conflict, ...) for a failed response, as runtime.kube raises."""
    return from_status(status, body)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes, bool]:
    """One HTTP/1.1 response from a kept-alive connection: status, headers, body, and whether the
    server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise Unreachable(f"bad HTTP status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = bytearray()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
            if len(body) > MAX_RESPONSE:
                raise Unreachable(f"response larger than {MAX_RESPONSE} bytes")
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_RESPONSE:
            raise Unreachable(f"response larger than {MAX_RESPONSE} bytes")
        body += await reader.readexactly(length)
    else:
        body += await reader.read(MAX_RESPONSE)
        return int(parts[1]), headers, bytes(body), False
    keep = headers.get("connection", "").lower() != "close"
    return int(parts[1]), headers, bytes(body), keep


class LeanClient:
    """JSON requests to the apiserver over at most `connections` kept-alive HTTP/1.1 connections.

    Every failure is a kubeserial_common.core.errors.ApiError: the apiserver's Status as NotFound,
    Conflict, ...; no answer, a refused or broken connection as Unreachable.
    """

    def __init__(self, endpoint: Endpoint, *, connections: int = 1, user_agent: str = "kubeserial") -> None:
        self.endpoint = endpoint
        url = urlsplit(endpoint.server)
        self._tls = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port or (443 if self._tls else 80)
        self._host_header = url.netloc
        self._ssl = self._ssl_context() if self._tls else None
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max(1, connections))
        self.user_agent = user_agent
        self.requests = 0

    def _ssl_context(self) -> ssl.SSLContext:
        ep = self.endpoint
        if ep.insecure and not (ep.ca_file or ep.ca_data):
            # Nothing is verified: do not parse the system's CA store (~1 MiB resident) for nothing.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        else:
            context = ssl.create_default_context(cafile=ep.ca_file, cadata=ep.ca_data)
        if ep.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if ep.cert_file and ep.key_file:
            context.load_cert_chain(ep.cert_file, ep.key_file)
        elif ep.cert_data and ep.key_data:
            # ssl only loads certificates from files: write them to a private temporary directory.
            import tempfile  # rare (client certificates inline in a kubeconfig): imported when needed

            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
                cert.write_bytes(ep.cert_data)
                key.touch(mode=0o600)
                key.write_bytes(ep.key_data)
                context.load_cert_chain(str(cert), str(key))
        return context

    def _token(self) -> str | None:
        if self.endpoint.token_file:
            # Projected service-account tokens rotate: read the file on every request.
            return Path(self.endpoint.token_file).read_text().strip()
        return self.endpoint.token

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def __aenter__(self) -> "LeanClient":
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        timeout: float = TIMEOUT_SECONDS,  # noqa: ASYNC109 (per request, not a cancel scope)
    ) -> dict[str, Any]:
        data = await self.request_bytes(
            method, path, body=body, content_type=content_type, params=params, timeout=timeout
        )
        result: dict[str, Any] = json.loads(data) if data else {}
        return result

    async def request_text(self, method: str, path: str, *, timeout: float = TIMEOUT_SECONDS) -> str:  # noqa: ASYNC109
        """A non-JSON answer, e.g. the apiserver's /metrics."""
        return (await self.request_bytes(method, path, timeout=timeout)).decode()

    async def request_bytes(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        timeout: float = TIMEOUT_SECONDS,  # noqa: ASYNC109 (per request, not a cancel scope)
    ) -> bytes:
        return (
            await self.request_with_status(
                method, path, body=body, content_type=content_type, params=params, timeout=timeout
            )
        )[1]

    async def request_with_status(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        timeout: float = TIMEOUT_SECONDS,  # noqa: ASYNC109 (per request, not a cancel scope)
    ) -> tuple[int, bytes]:
        """The HTTP status of a successful answer too (server-side apply: 201 created, 200 updated)."""
        if params:
            path = f"{path}?{urlencode(params)}"
        try:
            return await within(self._request(method, path, body=body, content_type=content_type), timeout)
        except TimeoutError as exc:
            raise Unreachable(f"{method} {path}: no answer within {timeout}s") from exc
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise Unreachable(f"{method} {path}: {exc!r}") from exc

    async def _request(self, method: str, path: str, *, body: Any, content_type: str) -> tuple[int, bytes]:
        payload = b"" if body is None else json.dumps(body).encode()
        headers = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self._host_header}",
            "Accept: application/json",
            f"User-Agent: {self.user_agent}",
        ]
        token = self._token()
        if token:
            headers.append(f"Authorization: Bearer {token}")
        if body is not None:
            headers.append(f"Content-Type: {content_type}")
        headers.append(f"Content-Length: {len(payload)}")
        message = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + payload
        async with self._slots:
            # A kept-alive connection the server closed meanwhile fails before any answer: once.
            for reused in (True, False):
                conn = self._idle.pop() if reused and self._idle else None
                if conn is None:
                    reused = False
                    reader, writer = await asyncio.open_connection(
                        self._host,
                        self._port,
                        ssl=self._ssl,
                        server_hostname=self._host if self._ssl else None,
                    )
                    conn = _Connection(reader, writer)
                try:
                    conn.writer.write(message)
                    await conn.writer.drain()
                    status, _, data, keep = await _read_response(conn.reader)
                except (OSError, asyncio.IncompleteReadError):
                    conn.close()
                    if reused:
                        continue
                    raise
                except BaseException:
                    conn.close()
                    raise
                if keep:
                    self._idle.append(conn)
                else:
                    conn.close()
                break
        self.requests += 1
        if status >= 400:
            raise api_error(status, data)
        return status, data

    # -- by resource -----------------------------------------------------------------------------

    async def get(self, resource: ResourceInfo, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        return await self.request("GET", resource.path(name, namespace=namespace))

    async def list(
        self,
        resource: ResourceInfo,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> dict[str, Any]:
        params = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        return await self.request("GET", resource.path(namespace=namespace), params=params)

    async def create(
        self, resource: ResourceInfo, body: dict[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        return await self.request("POST", resource.path(namespace=namespace), body=body)

    async def replace(
        self, resource: ResourceInfo, name: str, body: dict[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        return await self.request("PUT", resource.path(name, namespace=namespace), body=body)

    async def patch(
        self,
        resource: ResourceInfo,
        name: str,
        body: Any,
        *,
        namespace: str | None = None,
        subresource: str = "",
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        path = resource.path(name, namespace=namespace, subresource=subresource)
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(
        self, resource: ResourceInfo, name: str, *, namespace: str | None = None
    ) -> dict[str, Any]:
        return await self.request("DELETE", resource.path(name, namespace=namespace))


class LeanCustomObjects:
    """KubeSerial's own resources by plural, as kubeserial_common.core.status.write_status needs them
    (the same calls as runtime.kube.CustomObjects)."""

    def __init__(self, client: LeanClient) -> None:
        self.client = client

    @staticmethod
    def _path(plural: str, name: str, *, namespace: str | None, status: bool = False) -> str:
        resource = custom_by_plural(plural)
        return resource.path(name, namespace=namespace, subresource="status" if status else "")

    async def get(self, plural: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        return await self.client.get(custom_by_plural(plural), name, namespace=namespace)

    async def patch_status(
        self, plural: str, name: str, body: Any, *, namespace: str | None = None
    ) -> dict[str, Any]:
        return await self.client.patch(
            custom_by_plural(plural), name, body, namespace=namespace, subresource="status"
        )


def lean_client(
    kubeconfig: str | None = None, *, connections: int = 1, user_agent: str = "kubeserial"
) -> LeanClient:
    return LeanClient(load_endpoint(kubeconfig), connections=connections, user_agent=user_agent)
