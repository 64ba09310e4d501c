"""TLS for the webhook.

Self-managed (the default): the injector keeps a CA and a serving certificate in a Secret it owns,
creates them when absent or close to expiry, and writes the CA into its own
MutatingWebhookConfiguration's caBundle. On rotation the bundle keeps the previous CA next to the
new one, so replicas still serving the old certificate stay trusted until they reload.
Files mode (cert-manager): the certificate comes from mounted files; they are reloaded on change.

The certificate logic is pure (bytes in, bytes out); SelfManagedCerts is the thin shell that talks
to the apiserver.
"""

import base64
import datetime
import hashlib
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeserial_common.core.errors import Conflict, NotFound
from kubeserial_common.core.resources import MUTATINGWEBHOOKCONFIGURATION, SECRET
from kubeserial_common.runtime.lean import JSON_PATCH, LeanClient

log = structlog.get_logger(__name__)

CA_DAYS: Final = 730
SERVING_DAYS: Final = 365
RENEW_BEFORE: Final = datetime.timedelta(days=90)
CA_KEY: Final = "ca.crt"
CERT_KEY: Final = "tls.crt"
PRIVATE_KEY: Final = "tls.key"


@dataclass(frozen=True)
class TlsBundle:
    ca_pem: bytes  # the CAs clients should trust (the current one first)
    cert_pem: bytes
    key_pem: bytes

    def fingerprint(self) -> str:
        return hashlib.sha256(self.ca_pem + self.cert_pem + self.key_pem).hexdigest()[:16]


def serving_names(service: str, namespace: str) -> list[str]:
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _subject_alt_names(names: Sequence[str]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    return sans


def generate_bundle(
    names: Sequence[str], *, now: datetime.datetime, previous_ca_pem: bytes | None = None
) -> TlsBundle:
    """A new CA and a serving certificate for `names` (DNS names or IP addresses)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"kubeserial-injector-ca-{now:%Y%m%d%H%M%S}")]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVING_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_subject_alt_names(names)), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    still_trusted = _valid_cas(previous_ca_pem or b"", now=now)[:1]
    return TlsBundle(
        ca_pem=ca_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in still_trusted),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=_key_pem(key),
    )


def _valid_cas(pem: bytes, *, now: datetime.datetime) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem) if pem else []
    except ValueError:
        return []
    return [cert for cert in certs if cert.not_valid_after_utc > now]


def renewal_reason(bundle: TlsBundle | None, names: Sequence[str], *, now: datetime.datetime) -> str | None:
    """Why `bundle` cannot serve `names` until well after `now`, or None when it can."""
    if bundle is None:
        return "no certificate yet"
    try:
        cert = x509.load_pem_x509_certificate(bundle.cert_pem)
        key = serialization.load_pem_private_key(bundle.key_pem, password=None)
        cas = x509.load_pem_x509_certificates(bundle.ca_pem)
    except ValueError as exc:
        return f"unreadable: {exc}"
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return "key does not match certificate"
    if not any(_signed_by(cert, ca) for ca in cas):
        return "certificate not signed by the bundled CA"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        covered = {str(san.value) for san in sans}
    except x509.ExtensionNotFound:
        covered = set()
    wanted = {str(san.value) for san in _subject_alt_names(names)}
    if not wanted <= covered:
        return f"does not cover {', '.join(sorted(wanted - covered))}"
    return None


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def bundle_from_secret(secret: dict[str, Any]) -> TlsBundle | None:
    data = secret.get("data") or {}
    try:
        return TlsBundle(
            ca_pem=base64.b64decode(data[CA_KEY]),
            cert_pem=base64.b64decode(data[CERT_KEY]),
            key_pem=base64.b64decode(data[PRIVATE_KEY]),
        )
    except (KeyError, ValueError, TypeError):
        return None


def secret_data(bundle: TlsBundle) -> dict[str, str]:
    return {
        CA_KEY: base64.b64encode(bundle.ca_pem).decode(),
        CERT_KEY: base64.b64encode(bundle.cert_pem).decode(),
        PRIVATE_KEY: base64.b64encode(bundle.key_pem).decode(),
    }


def ca_bundle_patch(webhook_config: dict[str, Any], ca_pem: bytes) -> list[dict[str, Any]]:
    """JSONPatch setting caBundle on every webhook that lacks it; [] when all are current.

    Each change is guarded by a `test` of the webhook's name, so a concurrent reorder fails the
    patch instead of writing a CA into someone else's entry.
    """
    wanted = base64.b64encode(ca_pem).decode()
    ops: list[dict[str, Any]] = []
    for index, webhook in enumerate(webhook_config.get("webhooks") or []):
        if (webhook.get("clientConfig") or {}).get("caBundle") == wanted:
            continue
        ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook.get("name")})
        ops.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": wanted})
    return ops


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def write_files(bundle: TlsBundle, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / CERT_KEY, directory / PRIVATE_KEY
    key_file.touch(mode=0o600)
    key_file.write_bytes(bundle.key_pem)
    cert_file.write_bytes(bundle.cert_pem)
    return cert_file, key_file


class SelfManagedCerts:
    """Keeps the TLS Secret valid and the webhook's caBundle pointing at its CA."""

    def __init__(
        self,
        api: LeanClient,
        *,
        namespace: str,
        secret_name: str,
        webhook_config: str,
        names: Sequence[str],
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.secret_name = secret_name
        self.webhook_config = webhook_config
        self.names = list(names)

    async def ensure_secret(self, *, attempts: int = 5) -> TlsBundle:
        """The Secret's bundle, after creating or renewing it when needed (races resolved by 409)."""
        for _ in range(attempts):
            secret = await self._read_secret()
            current = bundle_from_secret(secret) if secret is not None else None
            now = datetime.datetime.now(datetime.UTC)
            reason = renewal_reason(current, self.names, now=now)
            if current is not None and reason is None:
                return current
            fresh = generate_bundle(self.names, now=now, previous_ca_pem=current.ca_pem if current else None)
            log.info("issuing webhook certificate", secret=self.secret_name, reason=reason)
            try:
                await self._write_secret(secret, fresh)
            except Conflict:  # also AlreadyExists
                continue  # another replica wrote first: use theirs
            return fresh
        raise RuntimeError(f"could not settle Secret {self.namespace}/{self.secret_name}")

    async def _read_secret(self) -> dict[str, Any] | None:
        try:
            return await self.api.get(SECRET, self.secret_name, namespace=self.namespace)
        except NotFound:
            return None

    async def _write_secret(self, existing: dict[str, Any] | None, bundle: TlsBundle) -> None:
        if existing is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": self.secret_name,
                    "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "kubeserial-injector"},
                },
                "data": secret_data(bundle),
            }
            await self.api.create(SECRET, body, namespace=self.namespace)
            return
        # replace carries the resourceVersion we read: a concurrent writer makes this a 409.
        existing["data"] = secret_data(bundle)
        await self.api.replace(SECRET, self.secret_name, existing, namespace=self.namespace)

    async def ensure_ca_bundle(self, ca_pem: bytes) -> bool:
        """Point the webhook configuration at `ca_pem`; True when it already did or now does."""
        try:
            config = await self.api.get(MUTATINGWEBHOOKCONFIGURATION, self.webhook_config)
        except NotFound:
            log.warning("webhook configuration not found; caBundle not set", name=self.webhook_config)
            return False
        ops = ca_bundle_patch(config, ca_pem)
        if ops:
            await self.api.patch(
                MUTATINGWEBHOOKCONFIGURATION, self.webhook_config, ops, content_type=JSON_PATCH
            )
            log.info("caBundle updated", webhook_config=self.webhook_config, webhooks=len(ops) // 2)
        return True
