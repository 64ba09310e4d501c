"""Self-managed certificates: issuing, renewal decisions, CA rotation, caBundle patches."""

import base64
import datetime
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

from kubeserial_injector.certs import (
    bundle_from_secret,
    ca_bundle_patch,
    generate_bundle,
    renewal_reason,
    secret_data,
    server_context,
    serving_names,
    write_files,
)

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
NAMES = [*serving_names("kubeserial-injector", "kubeserial"), "127.0.0.1"]


def test_serving_names() -> None:
    assert serving_names("svc", "ns") == ["svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local"]


def test_generated_bundle_is_valid_for_its_names() -> None:
    bundle = generate_bundle(NAMES, now=NOW)
    assert renewal_reason(bundle, NAMES, now=NOW) is None
    cert = x509.load_pem_x509_certificate(bundle.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubeserial-injector.kubeserial.svc" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert len(x509.load_pem_x509_certificates(bundle.ca_pem)) == 1


def test_renewal_reasons() -> None:
    bundle = generate_bundle(NAMES, now=NOW)
    assert renewal_reason(None, NAMES, now=NOW) == "no certificate yet"
    assert renewal_reason(bundle, NAMES, now=NOW + datetime.timedelta(days=300)) == "expires 2027-01-01"
    assert renewal_reason(bundle, [*NAMES, "other.svc"], now=NOW) == "does not cover other.svc"
    other = generate_bundle(NAMES, now=NOW)
    mixed_key = type(bundle)(ca_pem=bundle.ca_pem, cert_pem=bundle.cert_pem, key_pem=other.key_pem)
    assert renewal_reason(mixed_key, NAMES, now=NOW) == "key does not match certificate"
    foreign_ca = type(bundle)(ca_pem=other.ca_pem, cert_pem=bundle.cert_pem, key_pem=bundle.key_pem)
    assert renewal_reason(foreign_ca, NAMES, now=NOW) == "certificate not signed by the bundled CA"
    garbage = type(bundle)(ca_pem=b"x", cert_pem=b"y", key_pem=b"z")
    assert (renewal_reason(garbage, NAMES, now=NOW) or "").startswith("unreadable")


def test_rotation_keeps_the_previous_ca_trusted() -> None:
    old = generate_bundle(NAMES, now=NOW)
    later = NOW + datetime.timedelta(days=300)
    new = generate_bundle(NAMES, now=later, previous_ca_pem=old.ca_pem)
    cas = x509.load_pem_x509_certificates(new.ca_pem)
    assert len(cas) == 2 and new.ca_pem.endswith(old.ca_pem)
    assert renewal_reason(new, NAMES, now=later) is None
    # Only one previous CA is kept, and an expired one is dropped.
    newer = generate_bundle(NAMES, now=later, previous_ca_pem=new.ca_pem)
    assert len(x509.load_pem_x509_certificates(newer.ca_pem)) == 2
    much_later = NOW + datetime.timedelta(days=2000)
    assert (
        len(
            x509.load_pem_x509_certificates(
                generate_bundle(NAMES, now=much_later, previous_ca_pem=old.ca_pem).ca_pem
            )
        )
        == 1
    )


def test_secret_round_trip() -> None:
    bundle = generate_bundle(NAMES, now=NOW)
    assert bundle_from_secret({"data": secret_data(bundle)}) == bundle
    assert bundle_from_secret({"data": {"tls.crt": "x"}}) is None
    assert bundle_from_secret({}) is None


def test_ca_bundle_patch_only_touches_stale_webhooks() -> None:
    ca = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"
    encoded = base64.b64encode(ca).decode()
    config: dict[str, Any] = {
        "webhooks": [
            {"name": "a.example.com", "clientConfig": {"caBundle": encoded}},
            {"name": "b.example.com", "clientConfig": {"service": {"name": "x"}}},
        ]
    }
    assert ca_bundle_patch(config, ca) == [
        {"op": "test", "path": "/webhooks/1/name", "value": "b.example.com"},
        {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": encoded},
    ]
    config["webhooks"][1]["clientConfig"]["caBundle"] = encoded
    assert ca_bundle_patch(config, ca) == []


def test_files_load_into_a_tls_server_context(tmp_path: Path) -> None:
    bundle = generate_bundle(NAMES, now=datetime.datetime.now(datetime.UTC))
    cert_file, key_file = write_files(bundle, tmp_path / "certs")
    assert key_file.stat().st_mode & 0o077 == 0
    context = server_context(cert_file, key_file)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
