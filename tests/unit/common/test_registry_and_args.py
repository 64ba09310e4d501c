"""The resource registry agrees with the CRD models, and the gateway's command lines built by the
producers (controller, injector) are exactly what the gateway's own parser reads."""

import pytest

from kubeserial_common.core import resources as r
from kubeserial_common.core.gatewayargs import BridgeArgs, ServeArgs, parse_gateway_url
from kubeserial_common.core.models import ALL_RESOURCES
from kubeserial_common.core.names import rfc2217_url
from kubeserial_common.core.podspec import BridgeSettings, DeviceLink, connect_pod_spec
from kubeserial_controller.decisions import Placement
from kubeserial_controller.desired import gateway_args
from kubeserial_gateway.__main__ import build_parser


def test_registry_matches_the_models() -> None:
    for model in ALL_RESOURCES:
        info = r.by_kind(model.info.api_version, model.kind_name)
        assert (info.plural, info.namespaced) == (model.plural, model.namespaced)
        assert r.custom_by_plural(info.plural) is info
    assert {m.info for m in ALL_RESOURCES} == set(r.CUSTOM)


def test_paths() -> None:
    assert r.SERIALDEVICE.path("a b", subresource="status") == (
        "/apis/app.kubeserial.com/v1alpha1/serialdevices/a%20b/status"
    )
    assert (
        r.KUBESERIAL.path("k", namespace="ns")
        == "/apis/app.kubeserial.com/v1alpha1/namespaces/ns/kubeserials/k"
    )
    assert r.CONFIGMAP.path(namespace="kubeserial") == "/api/v1/namespaces/kubeserial/configmaps"
    assert r.NODE.path("n1", namespace="ignored") == "/api/v1/nodes/n1"
    assert (r.INGRESS.group, r.INGRESS.version) == ("networking.k8s.io", "v1")
    with pytest.raises(KeyError):
        r.by_kind("v1", "Pod")


def test_the_controllers_gateway_args_parse_back() -> None:
    device = {"metadata": {"name": "ender3"}, "spec": {"baudRate": 250000}}
    argv = gateway_args(device, Placement(node="node-a", device_path="/dev/serial/by-id/usb-x"))
    args = build_parser().parse_args(argv)
    assert (args.command, args.device, args.device_name, args.baud_rate) == (
        "serve",
        "/dev/serial/by-id/usb-x",
        "ender3",
        250000,
    )
    plain = build_parser().parse_args(ServeArgs(device="/dev/ttyUSB0").argv())
    assert (plain.device, plain.device_name, plain.baud_rate) == ("/dev/ttyUSB0", None, 115200)


def test_the_injected_bridge_args_parse_back() -> None:
    settings = BridgeSettings(image="kubeserial/gateway:x", namespace="kubeserial")
    pod = {"containers": [{"name": "app", "image": "busybox"}]}
    spec = connect_pod_spec(
        pod, [DeviceLink(device="zig", tty_path="/dev/serial/zig")], settings=settings
    ).spec
    (bridge,) = spec["initContainers"]
    args = build_parser().parse_args(bridge["args"])
    assert args.command == "bridge" and args.via_proc is True
    assert parse_gateway_url(args.url) == ("zig-gateway.kubeserial.svc", 2217)
    assert args.url == rfc2217_url("zig", "kubeserial") and str(args.link).endswith("/zig")
    assert args.health_port == bridge["livenessProbe"]["httpGet"]["port"]
    built = BridgeArgs(url=args.url, link=str(args.link), via_proc=True, health_port=args.health_port)
    assert built.argv() == bridge["args"]
