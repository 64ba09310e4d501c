"""The gateway's small API client: kubeconfig reading and HTTP response parsing."""

import base64
from collections.abc import Mapping
from pathlib import Path

import pytest

from kubeserial_gateway.kubeapi import (
    ApiError,
    SlimCustomObjects,
    api_error,
    endpoint_from_kubeconfig,
    in_cluster_endpoint,
    parse_http_response,
)


def kubeconfig(user: Mapping[str, object], cluster: Mapping[str, object] | None = None) -> dict[str, object]:
    return {
        "clusters": [
            {
                "name": "c",
                "cluster": cluster or {"server": "https://10.0.0.1:6443/", "certificate-authority": "ca.crt"},
            }
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }


def test_token_kubeconfig_with_relative_paths() -> None:
    endpoint = endpoint_from_kubeconfig(kubeconfig({"tokenFile": "tok"}), base_dir=Path("/etc/kube"))
    assert endpoint.server == "https://10.0.0.1:6443"
    assert endpoint.ca_file == "/etc/kube/ca.crt"
    assert endpoint.token_file == "/etc/kube/tok"


def test_inline_data_is_decoded() -> None:
    cluster = {"server": "https://h:1", "certificate-authority-data": base64.b64encode(b"PEM").decode()}
    user = {
        "client-certificate-data": base64.b64encode(b"CERT").decode(),
        "client-key-data": base64.b64encode(b"KEY").decode(),
    }
    endpoint = endpoint_from_kubeconfig(kubeconfig(user, cluster), base_dir=Path("/"))
    assert (endpoint.ca_data, endpoint.cert_data, endpoint.key_data) == ("PEM", b"CERT", b"KEY")


def test_unsupported_or_broken_kubeconfigs_say_why() -> None:
    with pytest.raises(ValueError, match="exec"):
        endpoint_from_kubeconfig(kubeconfig({"exec": {"command": "aws"}}), base_dir=Path("/"))
    broken = kubeconfig({"token": "t"})
    broken["current-context"] = "nope"
    with pytest.raises(ValueError, match="no context"):
        endpoint_from_kubeconfig(broken, base_dir=Path("/"))


def test_in_cluster_endpoint_brackets_ipv6() -> None:
    endpoint = in_cluster_endpoint({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"})
    assert endpoint.server == "https://[fd00::1]:443"
    assert endpoint.token_file is not None and endpoint.token_file.endswith("/token")


def test_parse_content_length_and_chunked_responses() -> None:
    status, headers, body = parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}garbage")
    assert (status, headers["content-length"], body) == (200, "2", b"{}")
    head = b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked = head + b'4\r\n{"me\r\nb;x=1\r\nssage":"c"}\r\n0\r\n\r\n'
    status, _, body = parse_http_response(chunked)
    assert status == 409 and body == b'{"message":"c"}'


def test_bad_responses_raise_api_errors() -> None:
    for raw in (b"", b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort"):
        with pytest.raises(ApiError):
            parse_http_response(raw)


def test_api_error_keeps_status_and_message() -> None:
    error = api_error(409, b'{"kind":"Status","message":"the object has been modified"}')
    assert error.status == 409 and "modified" in str(error)
    assert api_error(500, b"<html>").message == "<html>"


def test_paths() -> None:
    assert SlimCustomObjects._path("serialdevices", "a b", namespace=None, status=True) == (
        "/apis/app.kubeserial.com/v1alpha1/serialdevices/a%20b/status"
    )
    assert SlimCustomObjects._path("kubeserials", "k", namespace="ns") == (
        "/apis/app.kubeserial.com/v1alpha1/namespaces/ns/kubeserials/k"
    )
