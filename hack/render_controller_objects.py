"""Print, as YAML, the objects the controller creates at run time, for `make lint-manifests`:
a gateway (Deployment, Service, NetworkPolicy) for a device bound on node-a, and the manager
objects (ConfigMap, Deployment, Service) for the seed README's OctoPrint. They come from the same
functions the controller calls (kubeserial_controller.desired), so the linter sees what a cluster
gets, at the image tags of the default overlay."""

import sys

import yaml

from kubeserial_common.core.models import ManagerSpec
from kubeserial_controller import desired
from kubeserial_controller.decisions import Placement

NAMESPACE = "kubeserial"
IMAGES = desired.Images(gateway="kubeserial/gateway:0.1.0")
DEVICE = {
    "apiVersion": "app.kubeserial.com/v1alpha1",
    "kind": "SerialDevice",
    "metadata": {"name": "ender3", "uid": "00000000-0000-0000-0000-000000000001"},
    "spec": {"idVendor": "0403", "idProduct": "6001", "manager": "octoprint"},
}
REQUEST = {
    "apiVersion": "app.kubeserial.com/v1alpha1",
    "kind": "ManagerScheduleRequest",
    "metadata": {"name": "ender3-octoprint", "uid": "00000000-0000-0000-0000-000000000002"},
    "spec": {"device": "ender3", "manager": "octoprint"},
}


def main(which: str, seed_manager: str) -> None:
    """`which`: gateway (Deployment, Service, NetworkPolicy) or manager (ConfigMap, Deployment, Service)."""
    if which == "gateway":
        placement = Placement(
            node="node-a", device_path="/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
        )
        objects = [
            desired.desired_gateway_deployment(DEVICE, placement, namespace=NAMESPACE, images=IMAGES),
            desired.desired_gateway_service(DEVICE, namespace=NAMESPACE),
            desired.desired_gateway_network_policy(DEVICE, namespace=NAMESPACE),
        ]
    else:
        with open(seed_manager, encoding="utf-8") as file:
            manager = ManagerSpec.model_validate(yaml.safe_load(file)["spec"])
        objects = desired.desired_manager_objects(
            REQUEST, manager, namespace=NAMESPACE, images=IMAGES, ingress=None
        )
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
