"""Names that form KubeSerial's public contract. Changing any of these breaks users."""

from typing import Final

GROUP: Final = "app.kubeserial.com"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# Plurals of the custom resources.
KUBESERIALS: Final = "kubeserials"
SERIALDEVICES: Final = "serialdevices"
MANAGERS: Final = "managers"
MANAGERSCHEDULEREQUESTS: Final = "managerschedulerequests"
SERIALPORTS: Final = "serialports"

INJECT_ANNOTATION: Final = f"{GROUP}/inject-device"
# Pod annotations read by the injector besides the one above.
INJECT_MODE_ANNOTATION: Final = f"{GROUP}/inject-mode"  # "tty" (default) or "url"
INJECT_PATH_ANNOTATION: Final = f"{GROUP}/inject-path"  # tty path in the app, one device only
INJECTED_ANNOTATION: Final = f"{GROUP}/injected"  # marker: mutation already applied

KUBESERIAL_LABEL: Final = f"{GROUP}/kubeserial"  # value "<namespace>.<name>"
DEVICE_LABEL: Final = f"{GROUP}/device"
MANAGER_LABEL: Final = f"{GROUP}/manager"
NODE_LABEL: Final = f"{GROUP}/node"  # on a SerialPort: its node (kubeserial_common.core.serialports)
# A pod connected to device D carries `connect.app.kubeserial.com/D: "true"` (set by the injector on
# annotated pods, by the controller on manager pods); D's gateway admits only such pods (NetworkPolicy).
CONNECT_LABEL_PREFIX: Final = f"connect.{GROUP}/"
CONNECTED: Final = "true"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "kubeserial"

# Two namespaces, least privilege (README, Security): the gateways, manager workloads, monitors and
# their Leases in DEFAULT_NAMESPACE (Pod Security `privileged`: gateways open host ttys); the
# controller, the injector and the leader Lease in SYSTEM_NAMESPACE (Pod Security `restricted`).
DEFAULT_NAMESPACE: Final = "kubeserial"
SYSTEM_NAMESPACE: Final = "kubeserial-system"

KUBESERIAL_FINALIZER: Final = f"{GROUP}/serialdevices"

EXTENDED_RESOURCE_PREFIX: Final = "kubeserial.com/"

RAW_PORT: Final = 3333
RFC2217_PORT: Final = 2217
DEFAULT_BAUD_RATE: Final = 115200

# Condition types (and their reasons) live in kubeserial_common.core.vocabulary; the types are
# re-exported here because they are part of the contract above.
from kubeserial_common.core.vocabulary import AVAILABLE as AVAILABLE  # noqa: E402
from kubeserial_common.core.vocabulary import CONDITION_TYPES as CONDITION_TYPES  # noqa: E402
from kubeserial_common.core.vocabulary import FREE as FREE  # noqa: E402
from kubeserial_common.core.vocabulary import READY as READY  # noqa: E402
