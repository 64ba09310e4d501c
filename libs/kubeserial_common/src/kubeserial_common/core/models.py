"""The KubeSerial custom resources, defined once.

These Pydantic models are the single source of truth: `kubeserial_common.crdgen` turns them into
the CRD YAML under deploy/kustomize/base/crd/, and the services parse API objects with them.
Field names and shapes follow the original KubeSerial (Go) contract; additions are optional.
"""

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kubeserial_common.core import constants as c
from kubeserial_common.core import devicepaths, resources
from kubeserial_common.core.names import DEVICE_NAME as DEVICE_NAME
from kubeserial_common.core.names import DEVICE_NAME_MAX as DEVICE_NAME_MAX
from kubeserial_common.core.names import MANAGER_OBJECTS_NAME_MAX

HEX4 = r"^[0-9a-fA-F]{4}$"
K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# Manager.spec.configPath: an absolute path with no "." or ".." component, whose file name is a
# valid ConfigMap key (it becomes the key and the subPath). RE2 for CEL: no lookahead, [.] for dots.
CONFIG_PATH = r"^(/([^./][^/]*|[.][^./][^/]*|[.][.][^/]+))*/[.]?[-_a-zA-Z0-9][-._a-zA-Z0-9]{0,251}$"
CONFIG_PATH_MAX = 1024
# KubeSerial.spec.ingress.domain: Ingress hosts are <device>.<domain> (a leading dot is dropped).
INGRESS_DOMAIN = r"^[.]?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _device_path(value: str) -> str:
    problem = devicepaths.device_path_problem(value, field="devicePath")
    if problem:
        raise ValueError(problem)
    return value


def _devnode(value: str) -> str:
    problem = devicepaths.devnode_problem(value, field="devnode")
    if problem:
        raise ValueError(problem)
    return value


# USB serial device paths (kubeserial_common.core.devicepaths): checked here for Python callers, with
# messages that list what is allowed, and by the CRDs' OpenAPI `pattern` for the apiserver (compiled
# once there; a CEL rule's regex is compiled at every status write). Only KubeSerial's own
# components write these fields (the monitor, the controller), and they check first.
DevicePath = Annotated[
    str, AfterValidator(_device_path), Field(json_schema_extra={"pattern": devicepaths.DEVICE_PATH})
]
Devnode = Annotated[str, AfterValidator(_devnode), Field(json_schema_extra={"pattern": devicepaths.DEVNODE})]

ConditionType = Literal["Ready", "Available", "Free"]
ConditionStatus = Literal["True", "False", "Unknown"]


class Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are kept, not dropped."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def wire(self) -> dict[str, Any]:
        """The JSON-ready form, as the apiserver stores it."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(Model):
    type: ConditionType = Field(description="Ready, Available or Free.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1, max_length=1024, pattern=REASON, description="CamelCase reason for the status."
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: datetime = Field(description="When status last changed.")
    last_heartbeat_time: datetime | None = Field(default=None, description="When this was last confirmed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this condition was computed from."
    )


_CONDITIONS_SCHEMA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
    "maxItems": 8,
}


def _manager_name_rule(device: str, manager: str, field_path: str, *, unchanged: str = "") -> dict[str, Any]:
    """A device's manager objects are named `<device>-<manager>`: core.names.manager_name_problem in
    CEL, for the CRDs (`device` and `manager` are CEL expressions). Sizes and contains only: cheap
    for kube-apiserver, which evaluates every rule of a CRD on every write. `unchanged`: a CEL
    condition under which an object stored before the rule existed passes (see SerialDevice)."""
    check = f"!{manager}.contains('.') && size({device}) + 1 + size({manager}) <= {MANAGER_OBJECTS_NAME_MAX}"
    rule: dict[str, Any] = {
        "rule": f"!has({manager}) || {unchanged} || ({check})"
        if unchanged
        else f"!has({manager}) || ({check})",
        "messageExpression": f"'the objects of the manager are named ' + {device} + '-' + {manager}"
        f" + ', a Service name: at most {MANAGER_OBJECTS_NAME_MAX} characters, no dots'",
        "fieldPath": field_path,
    }
    if unchanged:
        rule["optionalOldSelf"] = True
    return rule


class DeviceMatch(Model):
    """What identifies a device and how it is served: shared by SerialDevice and KubeSerial entries."""

    id_vendor: str = Field(pattern=HEX4, description='USB vendor id, 4 hex digits, e.g. "0403".')
    id_product: str = Field(pattern=HEX4, description='USB product id, 4 hex digits, e.g. "6001".')
    manager: str | None = Field(
        default=None, max_length=253, pattern=K8S_NAME, description="Manager to schedule for this device."
    )
    serial_number: str | None = Field(
        default=None,
        max_length=256,
        description="USB serial number; tells apart adapters with the same vendor and product.",
    )
    baud_rate: int | None = Field(
        default=None, ge=50, le=12_000_000, description="Baud rate the gateway opens the port at (115200)."
    )


class SerialDeviceSpec(DeviceMatch):
    name: str | None = Field(
        default=None,
        max_length=DEVICE_NAME_MAX,
        pattern=DEVICE_NAME,
        description="Device name; when set it must equal metadata.name (kept for compatibility).",
    )


class SerialDeviceStatus(Model):
    conditions: list[Condition] = Field(
        default_factory=list, json_schema_extra=_CONDITIONS_SCHEMA, description="Ready, Available, Free."
    )
    node_name: str | None = Field(default=None, description="Node the device is plugged into.")
    device_path: DevicePath | None = Field(
        default=None,
        max_length=devicepaths.DEVICE_PATH_MAX,
        description="Path of the device on that node (/dev/serial/by-id/... when known).",
    )
    port: str | None = Field(
        default=None, max_length=253, description="The SerialPort this device is bound to (the controller)."
    )


class SerialDeviceEntry(DeviceMatch):
    """A device as listed in a KubeSerial: the SerialDevice spec with a required name."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [_manager_name_rule("self.name", "self.manager", ".manager")]
        }
    )

    name: str = Field(max_length=DEVICE_NAME_MAX, pattern=DEVICE_NAME, description="SerialDevice name.")

    def device_spec(self) -> SerialDeviceSpec:
        return SerialDeviceSpec.model_validate(self.model_dump())


class IngressSpec(Model):
    enabled: bool = Field(description="Create an Ingress for each scheduled manager.")
    domain: str | None = Field(default=None, max_length=253, description="Hosts are <device>.<domain>.")
    annotations: dict[str, str] | None = Field(default=None, description="Annotations for the Ingresses.")
    ingress_class_name: str | None = Field(default=None, description="IngressClass to use.")


class KubeSerialSpec(Model):
    serial_devices: list[SerialDeviceEntry] = Field(
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Devices to watch for; one SerialDevice is created for each.",
    )
    ingress: IngressSpec = Field(description="Ingress settings for managers.")


class KubeSerialStatus(Model):
    observed_generation: int | None = Field(default=None, description="Generation last reconciled.")
    serial_devices: int | None = Field(default=None, description="SerialDevices owned by this KubeSerial.")


class Image(Model):
    repository: str = Field(min_length=1, description="Image repository.")
    tag: str = Field(min_length=1, description="Image tag.")


class ManagerSpec(Model):
    image: Image = Field(description="Manager application image.")
    run_cmd: str = Field(min_length=1, description="Shell command that starts the manager.")
    config: str | None = Field(default=None, description="Configuration file contents.")
    config_path: str | None = Field(
        default=None,
        max_length=CONFIG_PATH_MAX,
        description="Where the configuration file is mounted: an absolute file path, e.g. /data/config.yaml.",
    )


class ManagerScheduleRequestSpec(Model):
    device: str = Field(max_length=DEVICE_NAME_MAX, pattern=DEVICE_NAME, description="SerialDevice name.")
    manager: str = Field(max_length=253, pattern=K8S_NAME, description="Manager name.")


class ManagerScheduleRequestStatus(Model):
    fulfilled: bool = Field(default=False, description="The manager Deployment exists and is available.")
    message: str | None = Field(
        default=None,
        description="Why the manager workload cannot be made as asked (e.g. an invalid Manager); what"
        " exists is kept meanwhile. Absent when there is no such problem.",
    )


class ObjectMeta(Model):
    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    deletion_timestamp: str | None = None


class Resource(Model):
    """Common shape of a custom resource; subclasses declare their CRD metadata."""

    info: ClassVar[resources.ResourceInfo]  # apiVersion, kind, plural, scope (the registry)
    kind_name: ClassVar[str]
    plural: ClassVar[str]
    namespaced: ClassVar[bool]
    short_names: ClassVar[tuple[str, ...]] = ()
    printer_columns: ClassVar[tuple[dict[str, str], ...]] = ()
    cel_rules: ClassVar[tuple[dict[str, Any], ...]] = ()
    description: ClassVar[str] = ""

    api_version: str = c.API_VERSION
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)


class SerialDevice(Resource):
    info = resources.SERIALDEVICE
    kind_name = info.kind
    plural = info.plural
    namespaced = info.namespaced
    short_names = ("sd",)
    description = "A USB serial device KubeSerial finds on a node and serves over the network."
    printer_columns = (
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {
            "name": "Available",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Available")].status',
        },
        {"name": "Node", "type": "string", "jsonPath": ".status.nodeName"},
    )
    cel_rules = (
        {
            "rule": "!has(self.spec.name) || self.spec.name == self.metadata.name",
            "message": "spec.name must equal metadata.name",
        },
        {
            "rule": f"size(self.metadata.name) <= {DEVICE_NAME_MAX}"
            f" && self.metadata.name.matches('{DEVICE_NAME}')",
            "message": f"metadata.name must be a DNS-1123 label of at most {DEVICE_NAME_MAX} characters"
            " starting with a letter",
        },
        # A rule on the whole object is evaluated again on every write to it, status and finalizers
        # included (ratcheting spares only unchanged fields below a rule): without the `unchanged`
        # clause a SerialDevice stored before this rule could not be written at all.
        _manager_name_rule(
            "self.metadata.name",
            "self.spec.manager",
            ".spec.manager",
            unchanged="(oldSelf.hasValue() && has(oldSelf.value().spec.manager)"
            " && oldSelf.value().spec.manager == self.spec.manager)",
        ),
    )

    spec: SerialDeviceSpec
    status: SerialDeviceStatus = Field(default_factory=SerialDeviceStatus)


class KubeSerial(Resource):
    info = resources.KUBESERIAL
    kind_name = info.kind
    plural = info.plural
    namespaced = info.namespaced
    short_names = ("ks",)
    description = "A set of serial devices to manage, with shared settings."
    cel_rules = (
        {
            "rule": "!has(self.spec.ingress.domain) || size(self.spec.ingress.domain) == 0"
            f" || self.spec.ingress.domain.matches('{INGRESS_DOMAIN}')",
            "message": "spec.ingress.domain must be a lowercase DNS name such as example.com, without a"
            " trailing dot; managers are served at <device>.<domain>",
            "fieldPath": ".spec.ingress.domain",
        },
    )

    spec: KubeSerialSpec
    status: KubeSerialStatus = Field(default_factory=KubeSerialStatus)


class Manager(Resource):
    info = resources.MANAGER
    kind_name = info.kind
    plural = info.plural
    namespaced = info.namespaced
    description = "An application KubeSerial runs for a device that names it (e.g. OctoPrint)."
    cel_rules = (
        {
            # Its objects are named <device>-<manager>, a Service name (core.names).
            "rule": "!self.metadata.name.contains('.')"
            f" && size(self.metadata.name) <= {MANAGER_OBJECTS_NAME_MAX - 2}",
            "message": "metadata.name must have no dots and at most"
            f" {MANAGER_OBJECTS_NAME_MAX - 2} characters: the manager's objects are named <device>-<manager>,"
            f" a Service name ({MANAGER_OBJECTS_NAME_MAX} characters at most, no dots)",
        },
        {
            "rule": f"!has(self.spec.configPath) || self.spec.configPath.matches('{CONFIG_PATH}')",
            "message": "spec.configPath must be an absolute file path such as /data/config.yaml, without"
            " '.' or '..' parts; the file name may use only letters, digits, '-', '_' and '.'",
            "fieldPath": ".spec.configPath",
        },
        {
            "rule": "!has(self.spec.config) || has(self.spec.configPath)",
            "message": "spec.config needs spec.configPath: the absolute path the file is mounted at",
            "fieldPath": ".spec.config",
        },
    )

    spec: ManagerSpec


class ManagerScheduleRequest(Resource):
    info = resources.MANAGERSCHEDULEREQUEST
    kind_name = info.kind
    plural = info.plural
    namespaced = info.namespaced
    short_names = ("msr",)
    description = "A request, made by the controller, to run a Manager for a device."
    printer_columns = (
        {"name": "Device", "type": "string", "jsonPath": ".spec.device"},
        {"name": "Manager", "type": "string", "jsonPath": ".spec.manager"},
        {"name": "Fulfilled", "type": "boolean", "jsonPath": ".status.fulfilled"},
    )

    spec: ManagerScheduleRequestSpec
    status: ManagerScheduleRequestStatus = Field(default_factory=ManagerScheduleRequestStatus)


class SerialPortSpec(Model):
    """What the monitor of `nodeName` sees of one USB serial adapter (kubeserial_common.core.serialports)."""

    node_name: str = Field(
        min_length=1, max_length=253, pattern=K8S_NAME, description="Node it is plugged into."
    )
    id_vendor: str = Field(pattern=r"^[0-9a-f]{4}$", description="USB vendor id, 4 lowercase hex digits.")
    id_product: str = Field(pattern=r"^[0-9a-f]{4}$", description="USB product id, 4 lowercase hex digits.")
    serial_number: str | None = Field(default=None, max_length=256, description="USB serial number, if any.")
    manufacturer: str | None = Field(default=None, max_length=256, description="USB manufacturer string.")
    product: str | None = Field(default=None, max_length=256, description="USB product string (the model).")
    by_id_path: str | None = Field(
        default=None,
        max_length=devicepaths.DEVICE_PATH_MAX,
        pattern=devicepaths.BY_ID,
        description="/dev/serial/by-id link.",
    )
    devnode: Devnode = Field(
        max_length=devicepaths.DEVICE_PATH_MAX,
        description="Device node of the USB serial tty, e.g. /dev/ttyUSB0 or /dev/ttyACM0.",
    )
    device_path: DevicePath = Field(
        max_length=devicepaths.DEVICE_PATH_MAX,
        description="The stable path a gateway opens: the by-id link, else by-path, else the devnode"
        f" ({devicepaths.ALLOWED}).",
    )


class SerialPortStatus(Model):
    device: str | None = Field(
        default=None,
        max_length=DEVICE_NAME_MAX,
        description="The SerialDevice bound to this port (the controller).",
    )


class SerialPort(Resource):
    info = resources.SERIALPORT
    kind_name = info.kind
    plural = info.plural
    namespaced = info.namespaced
    short_names = ("sp",)
    description = (
        "A USB serial adapter plugged into a node, published by that node's monitor; the controller"
        " binds SerialDevices to SerialPorts."
    )
    printer_columns = (
        {"name": "Node", "type": "string", "jsonPath": ".spec.nodeName"},
        {"name": "Vendor", "type": "string", "jsonPath": ".spec.idVendor"},
        {"name": "Product", "type": "string", "jsonPath": ".spec.idProduct"},
        {"name": "Serial", "type": "string", "jsonPath": ".spec.serialNumber"},
        {"name": "Model", "type": "string", "jsonPath": ".spec.product"},
        {"name": "Device", "type": "string", "jsonPath": ".status.device"},
    )
    spec: SerialPortSpec
    status: SerialPortStatus = Field(default_factory=SerialPortStatus)


ALL_RESOURCES: tuple[type[Resource], ...] = (
    KubeSerial,
    SerialDevice,
    Manager,
    ManagerScheduleRequest,
    SerialPort,
)
