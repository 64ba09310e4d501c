"""Faults with the whole stack running (on the stand-in kubelet: see README "Tests" for why);
each case asserts that state converges and nothing is lost.

Covered here: kube-apiserver down while the device is unplugged (and etcd compacted, so every
watch comes back to 410 Gone; the controller, having lost its leader Lease, exits and is
restarted as its pod would be). A gateway killed mid-session: test_fault_gateway_killed.py (a
module of its own: after an outage the garbage collector backs off, and stale pods would linger).
Covered elsewhere, on the same real components:
- a node that dies without a FIN (link cut) -> NodeLost, the consumer follows: test_real_story.py;
  a monitor that stops renewing its Lease: tests/integration/test_controller.py
- device unplugged mid-session: tests/e2e/test_real_story.py, tests/integration/test_gateway*.py
- two controller replicas, failover: tests/integration/test_controller_leader.py
- conflicting status writes from two monitors: tests/integration/test_monitor.py, test_library_faults.py
- injector down (unannotated pods unaffected): tests/integration/test_injector.py
- 410 Gone and apiserver restarts against the informer itself: tests/integration/test_library_faults.py;
  410 Gone with the apiserver up (a watch resumed from a compacted version): test_informer_gone.py
"""

import json
import uuid

import pytest
import yaml

from kubeserial_common import constants as c
from kubeserial_testing.controlplane import free_port
from kubeserial_testing.objects import condition, get_object
from kubeserial_testing.stack import LocalStack, wait_async
from kubeserial_testing.umockdev import UsbAdapter

pytestmark = pytest.mark.umockdev

SUFFIX = uuid.uuid4().hex[:4]
DEVICE = f"faulty-{SUFFIX}"
ADAPTER = UsbAdapter(serial=f"FLT{SUFFIX.upper()}")


async def test_apiserver_down_during_unplug_then_compaction(plugged: LocalStack) -> None:
    """While kube-apiserver is down the adapter is unplugged and, through a second apiserver, a
    new SerialDevice appears; etcd is then compacted, so every service's watch resumes into 410
    Gone. After the restart every transition is there: Available=False, gateway removed, the new
    device validated by the controller; a replug brings everything back."""
    stack = plugged
    plane = stack.plane
    port_b = free_port()
    plane.start_apiserver(name="kube-apiserver-b", port=port_b)
    plane.wait_ready(server=f"https://127.0.0.1:{port_b}")
    config_b = yaml.safe_load(plane.kubeconfig.read_text())
    config_b["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port_b}"
    try:
        plane.stop_apiserver()
        stack.usb["node-a"].unplug(ADAPTER)
        born = {
            "apiVersion": c.API_VERSION,
            "kind": "SerialDevice",
            "metadata": {"name": f"born-{SUFFIX}"},
            "spec": {"idVendor": "10c4", "idProduct": "ea60"},
        }
        kubeconfig_b = stack.workdir / "apiserver-b.kubeconfig"
        kubeconfig_b.write_text(yaml.safe_dump(config_b))
        plane.kubectl(f"--kubeconfig={kubeconfig_b}", "create", "-f", "-", input=json.dumps(born))
        plane.compact_etcd()
        plane.start_apiserver()
        plane.wait_ready()
    finally:
        plane._terminate("kube-apiserver-b")

    await wait_async(lambda: stack.device_state(DEVICE)[0] == "False", within=60, message="Available=False")
    await wait_async(
        lambda: get_object(plane, "deployment", f"{DEVICE}-gateway", namespace="kubeserial") is None,
        within=60,
        message="the gateway removed",
    )
    await wait_async(
        lambda: (
            condition(get_object(plane, "serialdevice", f"born-{SUFFIX}"), c.READY).get("status") == "True"
        ),
        within=60,
        message="the device created during the outage validated",
    )
    stack.usb["node-a"].plug(ADAPTER)
    await wait_async(lambda: stack.device_state(DEVICE) == ("True", "node-a"), within=30, message="replugged")
    await wait_async(lambda: stack.gateway_pod(DEVICE, "node-a"), within=60, message="a new gateway pod")
    await wait_async(stack.ports_for(DEVICE).ready, within=30, message="gateway back")
    for name in stack.processes:
        stack.wait_healthy(name)
