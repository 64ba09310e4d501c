"""The injector as a real process, called by the real kube-apiserver over TLS.

The MutatingWebhookConfiguration is the shipped one (deploy/kustomize/base/webhook) with only its
clientConfig pointed at https://127.0.0.1:<port>/mutate, so the tests cannot drift from what users
install. Pods are created with kubectl and only admitted (no kubelet runs them).
"""

import base64
import contextlib
import copy
import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserial_common.core import constants as c
from kubeserial_testing import pki
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane, free_port
from kubeserial_testing.objects import apply_object, serial_device, write_monitor_status
from kubeserial_testing.probes import assert_json_logs, is_ready, metric_at
from kubeserial_testing.services import SYSTEM_NAMESPACE, apply_rbac, stop_process, wait_for

pytestmark = [pytest.mark.controlplane]

WEBHOOK_YAML = REPO_ROOT / "deploy" / "kustomize" / "base" / "webhook" / "mutatingwebhookconfiguration.yaml"
WEBHOOK_CONFIG = "kubeserial-injector"
TLS_SECRET = "kubeserial-injector-tls"
BRIDGE_IMAGE = "registry.test/kubeserial/gateway:test"
NO_UID_WARNING = (
    "no runAsUser set: the tty bridge runs as root (no capabilities) like an image that runs as root;"
    " set runAsUser if the app runs as another user"
)
SUFFIX = uuid.uuid4().hex[:6]
APPS = f"injector-apps-{SUFFIX}"
READY_DEVICE = f"inj-ready-{SUFFIX}"
PENDING_DEVICE = f"inj-pending-{SUFFIX}"


@dataclass
class Injector:
    """An injector process; `start()` again after `stop()` reuses its ports and arguments."""

    args: list[str]
    kubeconfig: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    tmpdir: Path | None = None  # its TMPDIR, if the test looks at what it leaves there
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate"

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBESERIAL_LOG_FORMAT": "json"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        if self.tmpdir is not None:
            env["TMPDIR"] = str(self.tmpdir)
        argv = [sys.executable, "-m", "kubeserial_injector", "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--health-host", "127.0.0.1", "--health-port", str(self.health_port), *self.args]
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self) -> None:
        proc = self.proc
        assert proc is not None
        wait_for(
            lambda: proc.poll() is not None or is_ready(self.health_port),
            timeout=60,
            message="injector ready",
        )
        assert proc.poll() is None, self.log_path.read_text()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            assert self.proc.returncode == 0, (
                f"unclean exit {self.proc.returncode}: {self.log_path.read_text()}"
            )
            self.proc = None

    def metric(self, name: str, **labels: str) -> float:
        """One sample (0 before its first increment); a metric the injector does not declare fails."""
        value = metric_at(self.health_port, name, **labels)
        assert value is not None, f"the injector does not answer /metrics on {self.health_port}"
        return value


def shipped_webhook(url: str, ca_bundle: bytes | None) -> dict[str, Any]:
    """The shipped configuration with clientConfig.service replaced by a URL (the only difference)."""
    config: dict[str, Any] = yaml.safe_load(WEBHOOK_YAML.read_text())
    for webhook in config["webhooks"]:
        webhook["clientConfig"] = {"url": url}
        if ca_bundle is not None:
            webhook["clientConfig"]["caBundle"] = base64.b64encode(ca_bundle).decode()
    return config


def register_webhook(plane: ControlPlane, url: str, ca_bundle: bytes | None) -> None:
    plane.kubectl("delete", "mutatingwebhookconfiguration", WEBHOOK_CONFIG, "--ignore-not-found")
    plane.kubectl("create", "-f", "-", input=json.dumps(shipped_webhook(url, ca_bundle)))


def pod_manifest(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": APPS}
    if annotations is not None:
        meta["annotations"] = annotations
    body = {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}], **spec}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}


def kubectl_create(
    plane: ControlPlane, manifest: dict[str, Any], *extra: str
) -> subprocess.CompletedProcess[str]:
    return plane.kubectl("create", *extra, "-f", "-", input=json.dumps(manifest), check=False)


def get_pod(plane: ControlPlane, name: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("get", "pod", name, "-n", APPS, "-o", "json").stdout)  # type: ignore[no-any-return]


def env_names(container: dict[str, Any]) -> list[str]:
    return [item["name"] for item in container.get("env", [])]


def wait_until_webhook_mutates(plane: ControlPlane) -> None:
    """The apiserver picks webhook configuration changes up asynchronously; probe with dry runs."""
    probe = pod_manifest(f"probe-{uuid.uuid4().hex[:6]}", {c.INJECT_ANNOTATION: READY_DEVICE})

    def mutated() -> bool:
        out = plane.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe), check=False
        )
        return (
            out.returncode == 0 and c.INJECTED_ANNOTATION in json.loads(out.stdout)["metadata"]["annotations"]
        )

    wait_for(mutated, timeout=30, interval=0.3, message="the apiserver to call the injector")


def create_device(plane: ControlPlane, name: str, *, available: bool) -> None:
    apply_object(plane, serial_device(name))
    if available:
        write_monitor_status(plane, name, node="node-a", available=True)


@pytest.fixture(scope="module")
def injector_kubeconfig(control_plane: ControlPlane) -> Path:
    return apply_rbac(control_plane, "injector")


@pytest.fixture(scope="module")
def apps_namespace(control_plane: ControlPlane) -> Iterator[str]:
    control_plane.kubectl("create", "namespace", APPS)
    wait_for(
        lambda: (
            control_plane.kubectl("get", "serviceaccount", "default", "-n", APPS, check=False).returncode == 0
        ),
        timeout=30,
        message="the default ServiceAccount",
    )
    create_device(control_plane, READY_DEVICE, available=True)
    create_device(control_plane, PENDING_DEVICE, available=False)
    yield APPS
    control_plane.kubectl("delete", "namespace", APPS, "--wait=false")
    control_plane.kubectl("delete", "serialdevice", READY_DEVICE, PENDING_DEVICE, "--ignore-not-found")


@pytest.fixture(scope="module")
def injector(
    control_plane: ControlPlane,
    injector_kubeconfig: Path,
    apps_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Injector]:
    """Files mode: a serving certificate for 127.0.0.1 from a CA the test made (cert-manager's role)."""
    certs = tmp_path_factory.mktemp("injector-certs")
    ca_pair, ca_key, ca_cert = pki.make_ca("injector-test-ca")
    ca_pair.write(certs, "ca")
    cert_file, key_file = pki.issue(
        ca_key, ca_cert, common_name="kubeserial-injector", ip_addresses=("127.0.0.1",), server=True
    ).write(certs, "tls")
    args = ["--cert-mode", "files", "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file)]
    args += ["--bridge-image", BRIDGE_IMAGE]
    running = Injector(args=args, kubeconfig=injector_kubeconfig, log_path=certs / "injector.log")
    running.start()
    register_webhook(control_plane, running.url, ca_pair.cert_pem)
    try:
        wait_until_webhook_mutates(control_plane)
        yield running
    finally:
        control_plane.kubectl("delete", "mutatingwebhookconfiguration", WEBHOOK_CONFIG, "--ignore-not-found")
        running.stop()


def test_annotated_pod_is_mutated_by_the_apiserver_calling_the_webhook(
    control_plane: ControlPlane, injector: Injector
) -> None:
    before = injector.metric("kubeserial_injector_admissions_total", outcome="mutated")
    manifest = pod_manifest("printer", {c.INJECT_ANNOTATION: READY_DEVICE})
    manifest["metadata"]["labels"] = {"app": "printer"}
    out = kubectl_create(control_plane, manifest)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("Warning:")]
    assert warnings == ["Warning: " + NO_UID_WARNING], out.stderr
    pod = get_pod(control_plane, "printer")
    prefix = "KUBESERIAL_" + READY_DEVICE.upper().replace("-", "_")
    app = pod["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in app["env"]}
    assert env[f"{prefix}_URL"] == f"rfc2217://{READY_DEVICE}-gateway.kubeserial.svc:2217"
    assert env[f"{prefix}_RAW_URL"] == f"socket://{READY_DEVICE}-gateway.kubeserial.svc:3333"
    assert env[f"{prefix}_TTY"] == f"/dev/serial/{READY_DEVICE}"
    assert {"name": "kubeserial-links", "mountPath": "/dev/serial"} in app["volumeMounts"]
    (bridge,) = pod["spec"]["initContainers"]
    assert bridge["name"] == f"kubeserial-bridge-{READY_DEVICE}"
    assert bridge["restartPolicy"] == "Always" and bridge["image"] == BRIDGE_IMAGE
    assert bridge["args"][:6] == [
        "bridge",
        "--url",
        f"rfc2217://{READY_DEVICE}-gateway.kubeserial.svc:2217",
        "--link",
        f"/kubeserial/links/{READY_DEVICE}",
        "--via-proc",
    ]
    assert pod["spec"]["shareProcessNamespace"] is True
    assert pod["metadata"]["annotations"][c.INJECTED_ANNOTATION] == READY_DEVICE
    # What the gateway's NetworkPolicy admits; the pod's own labels stay.
    assert pod["metadata"]["labels"] == {
        "app": "printer",
        f"connect.app.kubeserial.com/{READY_DEVICE}": "true",
    }
    assert injector.metric("kubeserial_injector_admissions_total", outcome="mutated") == before + 1


def test_multi_container_pod_gets_env_everywhere_and_one_bridge(
    control_plane: ControlPlane, injector: Injector
) -> None:
    manifest = pod_manifest(
        "multi",
        {
            c.INJECT_ANNOTATION: f"{READY_DEVICE},{PENDING_DEVICE}",
            c.INJECT_PATH_ANNOTATION: f"{PENDING_DEVICE}=/dev/zigbee/ttyACM0",
        },
        initContainers=[{"name": "setup", "image": "busybox", "command": ["true"]}],
        securityContext={"runAsUser": 1000, "runAsGroup": 1000},
    )
    manifest["spec"]["containers"].append({"name": "exporter", "image": "busybox", "command": ["sleep", "1"]})
    out = kubectl_create(control_plane, manifest)
    assert out.returncode == 0, out.stderr
    assert f"Warning: SerialDevice {PENDING_DEVICE} is not available" in out.stderr
    pod = get_pod(control_plane, "multi")
    bridges = [i for i in pod["spec"]["initContainers"] if i.get("restartPolicy") == "Always"]
    assert [b["name"] for b in bridges] == [
        f"kubeserial-bridge-{READY_DEVICE}",
        f"kubeserial-bridge-{PENDING_DEVICE}",
    ]
    assert pod["spec"]["initContainers"][-1]["name"] == "setup"
    assert all(b["securityContext"]["runAsUser"] == 1000 for b in bridges)
    assert bridges[1]["args"][4] == "/kubeserial/links/ttyACM0"
    for container in pod["spec"]["containers"] + pod["spec"]["initContainers"][-1:]:
        names = env_names(container)
        for device in (READY_DEVICE, PENDING_DEVICE):
            assert "KUBESERIAL_" + device.upper().replace("-", "_") + "_URL" in names, container["name"]
        mounts = {m["mountPath"] for m in container["volumeMounts"] if m["name"] == "kubeserial-links"}
        assert mounts == {"/dev/serial", "/dev/zigbee"}


def test_unknown_device_is_denied_by_name(control_plane: ControlPlane, injector: Injector) -> None:
    missing = f"nosuch-{SUFFIX}"
    out = kubectl_create(control_plane, pod_manifest("lost", {c.INJECT_ANNOTATION: missing}))
    assert out.returncode != 0
    assert f"SerialDevice {missing} does not exist" in out.stderr, out.stderr
    assert control_plane.kubectl("get", "pod", "lost", "-n", APPS, check=False).returncode != 0


def test_bad_annotations_are_denied_with_a_reason(control_plane: ControlPlane, injector: Injector) -> None:
    bad_path = {c.INJECT_ANNOTATION: READY_DEVICE, c.INJECT_PATH_ANNOTATION: "/dev/ttyUSB0"}
    out = kubectl_create(control_plane, pod_manifest("badpath", bad_path))
    assert out.returncode != 0 and "its directory /dev would be hidden" in out.stderr, out.stderr
    bad_mode = {c.INJECT_ANNOTATION: READY_DEVICE, c.INJECT_MODE_ANNOTATION: "magic"}
    out = kubectl_create(control_plane, pod_manifest("badmode", bad_mode))
    assert out.returncode != 0 and "'magic' is not one of tty, url" in out.stderr, out.stderr


def test_an_annotation_naming_100_devices_is_denied_and_nothing_else_breaks(
    control_plane: ControlPlane, injector: Injector
) -> None:
    names = ",".join(f"dev{i}-{SUFFIX}" for i in range(100))
    denied_before = injector.metric("kubeserial_injector_admissions_total", outcome="denied")
    out = kubectl_create(control_plane, pod_manifest("hundred", {c.INJECT_ANNOTATION: names}))
    assert out.returncode != 0
    assert f"annotation {c.INJECT_ANNOTATION} names 100 devices; at most 16" in out.stderr, out.stderr
    assert control_plane.kubectl("get", "pod", "hundred", "-n", APPS, check=False).returncode != 0
    assert injector.metric("kubeserial_injector_admissions_total", outcome="denied") == denied_before + 1
    # The injector is fine: the next pod is admitted and injected.
    assert injector.proc is not None and injector.proc.poll() is None
    ok = kubectl_create(control_plane, pod_manifest("after-hundred", {c.INJECT_ANNOTATION: READY_DEVICE}))
    assert ok.returncode == 0, ok.stderr
    assert (
        get_pod(control_plane, "after-hundred")["metadata"]["annotations"][c.INJECTED_ANNOTATION]
        == READY_DEVICE
    )


def test_the_injectors_log_is_json_even_for_what_uvicorn_says(
    control_plane: ControlPlane, injector: Injector
) -> None:
    """A request that is not HTTP makes uvicorn (Python's logging, not ours) warn: that line too is
    one JSON object, like every line of the injector's log."""
    context = ssl.create_default_context(cadata=_ca_of(injector).decode())
    with (
        socket.create_connection(("127.0.0.1", injector.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        tls.settimeout(10)
        with contextlib.suppress(OSError):
            tls.recv(65536)
    found = wait_for(
        lambda: [line for line in injector.log_path.read_text().splitlines() if "uvicorn" in line],
        timeout=10,
        message="uvicorn's warning in the log",
    )
    assert isinstance(found, list) and json.loads(found[0])["logger"].startswith("uvicorn"), found
    assert assert_json_logs(injector.log_path) > 0


def test_url_mode_adds_env_only(control_plane: ControlPlane, injector: Injector) -> None:
    manifest = pod_manifest("urlonly", {c.INJECT_ANNOTATION: READY_DEVICE, c.INJECT_MODE_ANNOTATION: "url"})
    assert kubectl_create(control_plane, manifest).returncode == 0
    pod = get_pod(control_plane, "urlonly")
    assert "initContainers" not in pod["spec"] and not pod["spec"].get("shareProcessNamespace")
    assert pod["metadata"]["annotations"][c.INJECTED_ANNOTATION] == READY_DEVICE
    (app,) = pod["spec"]["containers"]
    prefix = "KUBESERIAL_" + READY_DEVICE.upper().replace("-", "_")
    assert {item["name"]: item["value"] for item in app["env"]} == {
        f"{prefix}_URL": f"rfc2217://{READY_DEVICE}-gateway.kubeserial.svc:2217",
        f"{prefix}_RAW_URL": f"socket://{READY_DEVICE}-gateway.kubeserial.svc:3333",
    }
    assert not any(m["name"] == "kubeserial-links" for m in app.get("volumeMounts", []))


def test_device_created_just_before_the_pod_is_found(control_plane: ControlPlane, injector: Injector) -> None:
    fresh = f"inj-fresh-{SUFFIX}"
    create_device(control_plane, fresh, available=False)
    try:
        out = kubectl_create(control_plane, pod_manifest("fresh", {c.INJECT_ANNOTATION: fresh}))
        assert out.returncode == 0, out.stderr
        # Found (not denied as unknown) and seen as it is: not available yet, and injected all the same.
        assert f"Warning: SerialDevice {fresh} is not available" in out.stderr, out.stderr
        pod = get_pod(control_plane, "fresh")
        assert pod["metadata"]["annotations"][c.INJECTED_ANNOTATION] == fresh
        assert [b["name"] for b in pod["spec"]["initContainers"]] == [f"kubeserial-bridge-{fresh}"]
    finally:
        control_plane.kubectl("delete", "serialdevice", fresh, "--ignore-not-found")


def test_reapplying_changes_nothing(control_plane: ControlPlane, injector: Injector, tmp_path: Path) -> None:
    manifest = pod_manifest(
        "reapplied", {c.INJECT_ANNOTATION: READY_DEVICE}, securityContext={"runAsUser": 0}
    )
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(manifest))
    control_plane.kubectl("apply", "-f", str(path))
    first = get_pod(control_plane, "reapplied")
    again = control_plane.kubectl("apply", "-f", str(path))
    assert "unchanged" in again.stdout, again.stdout
    second = get_pod(control_plane, "reapplied")
    assert second["spec"] == first["spec"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    # A copy of the mutated pod (marker included) is created as is: one bridge, env once.
    copied = copy.deepcopy(first)
    copied["metadata"] = {
        "name": "copied",
        "namespace": APPS,
        "annotations": first["metadata"]["annotations"],
    }
    copied.pop("status", None)
    copied["spec"].pop("nodeName", None)
    assert kubectl_create(control_plane, copied).returncode == 0
    copy_spec = get_pod(control_plane, "copied")["spec"]
    assert len(copy_spec["initContainers"]) == 1
    assert env_names(copy_spec["containers"][0]) == env_names(first["spec"]["containers"][0])


def test_an_injected_pod_reviewed_again_comes_back_without_a_patch(
    control_plane: ControlPlane, injector: Injector
) -> None:
    """The running injector itself, over TLS: an AdmissionReview for a pod it already injected
    (the pod as stored, marker annotation included) is allowed with no patch, counted unchanged.
    (kubectl and the apiserver never send it such a pod: the webhook's matchCondition skips it.)"""
    out = kubectl_create(control_plane, pod_manifest("twice", {c.INJECT_ANNOTATION: READY_DEVICE}))
    assert out.returncode == 0, out.stderr
    stored = get_pod(control_plane, "twice")
    assert stored["metadata"]["annotations"][c.INJECTED_ANNOTATION] == READY_DEVICE
    again = copy.deepcopy(stored)
    again["metadata"] = {k: v for k, v in stored["metadata"].items() if k in ("annotations", "labels")}
    again["metadata"]["generateName"] = "twice-"
    again.pop("status", None)
    outcomes = ("mutated", "unchanged", "denied", "invalid", "error")
    before = {o: injector.metric("kubeserial_injector_admissions_total", outcome=o) for o in outcomes}
    uid = str(uuid.uuid4())
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": APPS,
            "operation": "CREATE",
            "userInfo": {"username": "test"},
            "object": again,
            "dryRun": False,
        },
    }
    context = ssl.create_default_context(cadata=_ca_of(injector).decode())
    request = urllib.request.Request(
        injector.url, data=json.dumps(review).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        assert answer.status == 200
        response = json.loads(answer.read())["response"]
    assert response["uid"] == uid and response["allowed"] is True, response
    assert "patch" not in response and "patchType" not in response, response
    after = {o: injector.metric("kubeserial_injector_admissions_total", outcome=o) for o in outcomes}
    assert {o: after[o] - before[o] for o in outcomes} == {
        "mutated": 0,
        "unchanged": 1,
        "denied": 0,
        "invalid": 0,
        "error": 0,
    }


def test_injector_down_blocks_only_annotated_pods(control_plane: ControlPlane, injector: Injector) -> None:
    injector.stop()
    try:
        plain = kubectl_create(control_plane, pod_manifest("plain-while-down"))
        assert plain.returncode == 0, plain.stderr
        asked = kubectl_create(
            control_plane, pod_manifest("asked-while-down", {c.INJECT_ANNOTATION: READY_DEVICE})
        )
        assert asked.returncode != 0
        assert "failed calling webhook" in asked.stderr and "inject.app.kubeserial.com" in asked.stderr, (
            asked.stderr
        )
    finally:
        injector.start()
    wait_until_webhook_mutates(control_plane)


def test_self_managed_certificates(
    control_plane: ControlPlane, injector: Injector, injector_kubeconfig: Path, tmp_path: Path
) -> None:
    """No certificate from the test: the injector makes its own CA and patches its caBundle."""
    control_plane.kubectl("delete", "secret", TLS_SECRET, "-n", SYSTEM_NAMESPACE, "--ignore-not-found")
    its_tmp = tmp_path / "tmp"
    its_tmp.mkdir()
    managed = Injector(
        args=["--cert-mode", "self-managed", "--extra-san", "127.0.0.1", "--cert-check-seconds", "1"],
        kubeconfig=injector_kubeconfig,
        log_path=tmp_path / "self-managed.log",
        tmpdir=its_tmp,
    )
    register_webhook(control_plane, managed.url, ca_bundle=None)
    try:
        managed.start()

        def ca_bundle() -> str:
            config = json.loads(
                control_plane.kubectl(
                    "get", "mutatingwebhookconfiguration", WEBHOOK_CONFIG, "-o", "json"
                ).stdout
            )
            return str(config["webhooks"][0]["clientConfig"].get("caBundle", ""))

        bundle = wait_for(ca_bundle, timeout=30, message="caBundle patched by the injector")
        secret = json.loads(
            control_plane.kubectl("get", "secret", TLS_SECRET, "-n", SYSTEM_NAMESPACE, "-o", "json").stdout
        )
        assert secret["type"] == "kubernetes.io/tls"
        assert secret["data"]["ca.crt"] == bundle
        wait_until_webhook_mutates(control_plane)
        out = kubectl_create(control_plane, pod_manifest("managed", {c.INJECT_ANNOTATION: READY_DEVICE}))
        assert out.returncode == 0, out.stderr
        assert c.INJECTED_ANNOTATION in get_pod(control_plane, "managed")["metadata"]["annotations"]
        # A restart keeps the stored certificate: nothing to re-trust.
        managed.stop()
        assert not list(its_tmp.iterdir()), "the stopped injector left its private key on disk"
        managed.start()
        wait_until_webhook_mutates(control_plane)
        again = json.loads(
            control_plane.kubectl("get", "secret", TLS_SECRET, "-n", SYSTEM_NAMESPACE, "-o", "json").stdout
        )
        assert again["data"] == secret["data"] and ca_bundle() == bundle
        # Someone resets the caBundle (e.g. a re-apply with a different one): it is put back.
        control_plane.kubectl(
            "patch",
            "mutatingwebhookconfiguration",
            WEBHOOK_CONFIG,
            "--type=json",
            "-p",
            json.dumps([{"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}]),
        )
        wait_for(lambda: ca_bundle() == bundle, timeout=30, message="caBundle restored")
    finally:
        managed.stop()
        control_plane.kubectl("delete", "secret", TLS_SECRET, "-n", SYSTEM_NAMESPACE, "--ignore-not-found")
        register_webhook(control_plane, injector.url, _ca_of(injector))


def test_replicas_starting_together_share_one_certificate(
    control_plane: ControlPlane, injector: Injector, injector_kubeconfig: Path, tmp_path: Path
) -> None:
    """Two self-managed replicas race to create the Secret: one wins, both serve its certificate."""
    control_plane.kubectl("delete", "secret", TLS_SECRET, "-n", SYSTEM_NAMESPACE, "--ignore-not-found")
    replicas = [
        Injector(
            args=["--cert-mode", "self-managed", "--extra-san", "127.0.0.1"],
            kubeconfig=injector_kubeconfig,
            log_path=tmp_path / f"replica-{i}.log",
        )
        for i in range(2)
    ]
    try:
        for replica in replicas:
            replica.launch()
        for replica in replicas:
            replica.wait_ready()
        secret = json.loads(
            control_plane.kubectl("get", "secret", TLS_SECRET, "-n", SYSTEM_NAMESPACE, "-o", "json").stdout
        )
        served = {ssl.get_server_certificate(("127.0.0.1", replica.port)) for replica in replicas}
        assert served == {base64.b64decode(secret["data"]["tls.crt"]).decode()}
        context = ssl.create_default_context(cadata=base64.b64decode(secret["data"]["ca.crt"]).decode())
        for replica in replicas:
            with (
                socket.create_connection(("127.0.0.1", replica.port)) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        for replica in replicas:
            replica.stop()
        control_plane.kubectl("delete", "secret", TLS_SECRET, "-n", SYSTEM_NAMESPACE, "--ignore-not-found")
        register_webhook(control_plane, injector.url, _ca_of(injector))  # they patched its caBundle


def _ca_of(injector: Injector) -> bytes:
    """The CA the files-mode injector's certificate came from (written next to its log)."""
    return (injector.log_path.parent / "ca.crt").read_bytes()
