"""What KubeSerial reads and writes, described once: apiVersion, kind, plural and scope.

The informers, the applier, the reconcilers, the manifests the controller builds and the gateway's
small client take these from here instead of keeping tables of their own. Pure data: no client.
"""

from dataclasses import dataclass
from urllib.parse import quote

from kubeserial_common.core import constants as c


@dataclass(frozen=True)
class ResourceInfo:
    api_version: str  # "v1", "apps/v1", "app.kubeserial.com/v1alpha1"
    kind: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, name: str | None = None, *, namespace: str | None = None, subresource: str = "") -> str:
        """The REST path of the collection, or of one object (and its subresource)."""
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


# KubeSerial's own kinds (app.kubeserial.com/v1alpha1).
KUBESERIAL = ResourceInfo(c.API_VERSION, "KubeSerial", c.KUBESERIALS, namespaced=True)
SERIALDEVICE = ResourceInfo(c.API_VERSION, "SerialDevice", c.SERIALDEVICES, namespaced=False)
MANAGER = ResourceInfo(c.API_VERSION, "Manager", c.MANAGERS, namespaced=False)
MANAGERSCHEDULEREQUEST = ResourceInfo(
    c.API_VERSION, "ManagerScheduleRequest", c.MANAGERSCHEDULEREQUESTS, namespaced=False
)
SERIALPORT = ResourceInfo(c.API_VERSION, "SerialPort", c.SERIALPORTS, namespaced=False)
CUSTOM = (KUBESERIAL, SERIALDEVICE, MANAGER, MANAGERSCHEDULEREQUEST, SERIALPORT)

# Kubernetes kinds the services read or write.
DEPLOYMENT = ResourceInfo("apps/v1", "Deployment", "deployments", namespaced=True)
SERVICE = ResourceInfo("v1", "Service", "services", namespaced=True)
CONFIGMAP = ResourceInfo("v1", "ConfigMap", "configmaps", namespaced=True)
INGRESS = ResourceInfo("networking.k8s.io/v1", "Ingress", "ingresses", namespaced=True)
NETWORKPOLICY = ResourceInfo("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", namespaced=True)
SECRET = ResourceInfo("v1", "Secret", "secrets", namespaced=True)
LEASE = ResourceInfo("coordination.k8s.io/v1", "Lease", "leases", namespaced=True)
NODE = ResourceInfo("v1", "Node", "nodes", namespaced=False)
EVENT = ResourceInfo("v1", "Event", "events", namespaced=True)
MUTATINGWEBHOOKCONFIGURATION = ResourceInfo(
    "admissionregistration.k8s.io/v1",
    "MutatingWebhookConfiguration",
    "mutatingwebhookconfigurations",
    namespaced=False,
)

ALL = (
    *CUSTOM,
    DEPLOYMENT,
    SERVICE,
    CONFIGMAP,
    INGRESS,
    NETWORKPOLICY,
    SECRET,
    LEASE,
    NODE,
    EVENT,
    MUTATINGWEBHOOKCONFIGURATION,
)
_BY_KIND = {(info.api_version, info.kind): info for info in ALL}
_BY_PLURAL = {info.plural: info for info in CUSTOM}


def by_kind(api_version: str, kind: str) -> ResourceInfo:
    """KeyError for a kind KubeSerial does not use."""
    return _BY_KIND[(api_version, kind)]


def custom_by_plural(plural: str) -> ResourceInfo:
    return _BY_PLURAL[plural]
