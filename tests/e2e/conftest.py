"""Each e2e module gets its own control plane (faults restart its apiserver) and KubeSerial stack;
at the end every service's log in it is parsed (one JSON object per line)."""

from collections.abc import AsyncIterator, Iterator

import pytest

from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane
from kubeserial_testing.objects import apply_object, kubeserial_for
from kubeserial_testing.probes import assert_json_logs
from kubeserial_testing.stack import LocalStack, wait_async

CRD_DIR = REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    own = ControlPlane(tmp_path_factory.mktemp("e2e-plane"), preinstall=(CRD_DIR,)).start()
    try:
        for node in ("node-a", "node-b"):
            own.register_node(node)
        yield own
    finally:
        own.stop()


@pytest.fixture(scope="module")
async def stack(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    local = LocalStack(plane, tmp_path_factory.mktemp("e2e-stack"))
    try:
        await local.start()
        yield local
    finally:
        await local.stop()
    # Every service's log, gateways and bridges included: one JSON object per line.
    services = sorted((local.workdir / "logs").glob("*.log"))
    containers = [
        path
        for path in sorted((local.workdir / "pods").glob("*.log"))
        if path.name.endswith("-gateway.log") or "-kubeserial-bridge-" in path.name
    ]
    assert_json_logs(*services)
    assert_json_logs(*containers, allow_empty=True)  # a gateway removed as it started wrote nothing


@pytest.fixture(scope="module")
async def plugged(stack: LocalStack, request: pytest.FixtureRequest) -> LocalStack:
    """The module's DEVICE (a KubeSerial entry for its ADAPTER) plugged into node-a and served."""
    device, adapter = request.module.DEVICE, request.module.ADAPTER
    apply_object(stack.plane, kubeserial_for(device, {device: adapter.serial}))
    stack.usb["node-a"].plug(adapter)
    await wait_async(lambda: stack.device_state(device) == ("True", "node-a"), within=30, message="available")
    await wait_async(stack.ports_for(device).ready, within=30, message="gateway ready")
    return stack


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item, so fixtures can tell a failed test (and print
    the cluster's diagnostics then)."""
    outcome = yield
    setattr(item, f"rep_{call.when}", outcome.get_result())  # type: ignore[attr-defined]
