"""The controller's view of the cluster: one informer per kind it reads, and lookups over their caches.

Reconcilers read only from here and write through the API; a change they make comes back as a
watch event, which is what queues the next reconcile.
"""

from collections.abc import Iterator
from functools import partial
from typing import Any, Protocol

from kubeserial_common.core import constants as c
from kubeserial_common.core import resources as r
from kubeserial_common.core.names import kubeserial_label_value, monitor_lease_name
from kubeserial_common.runtime.lean import LeanClient
from kubeserial_common.runtime.leanwatch import LeanInformer as Informer

Obj = dict[str, Any]


class EventSink(Protocol):
    def __call__(self, kind: str, event_type: str, obj: Obj, *, resync: bool = False) -> None: ...


OWNED_SELECTOR = f"{c.MANAGED_BY_LABEL}={c.MANAGED_BY}"


class World:
    def __init__(
        self, api: LeanClient, *, namespace: str, on_event: EventSink, resync_seconds: float = 300.0
    ) -> None:
        self.namespace = namespace

        def informer(
            resource: r.ResourceInfo, namespace: str | None = None, label_selector: str | None = None
        ) -> Informer:
            # The lean client's informer (runtime.leanwatch): no kubernetes_asyncio in the controller.
            return Informer(
                client=api,
                resource=resource,
                handler=partial(on_event, resource.kind),
                # The periodic replay: its keys wait behind every real change (runtime.workqueue).
                resync_handler=partial(on_event, resource.kind, resync=True),
                name=resource.kind,
                namespace=namespace,
                label_selector=label_selector,
                resync_seconds=resync_seconds,
            )

        def custom_informer(resource: r.ResourceInfo) -> Informer:
            return informer(resource)  # cluster-scoped, or every namespace (KubeSerial)

        self.kubeserials = custom_informer(r.KUBESERIAL)  # every namespace
        self.devices = custom_informer(r.SERIALDEVICE)
        self.managers = custom_informer(r.MANAGER)
        self.requests = custom_informer(r.MANAGERSCHEDULEREQUEST)
        owned = OWNED_SELECTOR
        self.deployments = informer(r.DEPLOYMENT, namespace, owned)
        self.services = informer(r.SERVICE, namespace, owned)
        self.config_maps = informer(r.CONFIGMAP, namespace, owned)
        self.ingresses = informer(r.INGRESS, namespace, owned)
        self.network_policies = informer(r.NETWORKPOLICY, namespace, owned)
        self.leases = informer(r.LEASE, namespace)
        self.ports = custom_informer(r.SERIALPORT)
        self.nodes = informer(r.NODE)
        self.children = {
            r.DEPLOYMENT.kind: self.deployments,
            r.SERVICE.kind: self.services,
            r.CONFIGMAP.kind: self.config_maps,
            r.INGRESS.kind: self.ingresses,
            r.NETWORKPOLICY.kind: self.network_policies,
        }

    def informers(self) -> list[Informer]:
        return [
            self.kubeserials,
            self.devices,
            self.managers,
            self.requests,
            *self.children.values(),
            self.leases,
            self.ports,
            self.nodes,
        ]

    def synced(self) -> bool:
        return all(inf.synced.is_set() for inf in self.informers())

    # -- lookups ---------------------------------------------------------------------------------

    def kubeserial(self, namespace: str, name: str) -> Obj | None:
        return self.kubeserials.cache.get((namespace, name))

    def device(self, name: str) -> Obj | None:
        return self.devices.cache.get(("", name))

    def manager(self, name: str) -> Obj | None:
        return self.managers.cache.get(("", name))

    def request(self, name: str) -> Obj | None:
        return self.requests.cache.get(("", name))

    def child(self, kind: str, name: str) -> Obj | None:
        """A Deployment/Service/ConfigMap/Ingress/NetworkPolicy of ours in the KubeSerial namespace."""
        return self.children[kind].cache.get((self.namespace, name))

    def port(self, name: str) -> Obj | None:
        return self.ports.cache.get(("", name))

    def node(self, name: str) -> Obj | None:
        return self.nodes.cache.get(("", name))

    def lease(self, node: str) -> Obj | None:
        return self.leases.cache.get((self.namespace, monitor_lease_name(node)))

    def all_devices(self) -> Iterator[Obj]:
        return iter(list(self.devices.cache.values()))

    def devices_of(self, namespace: str, name: str) -> list[Obj]:
        label = kubeserial_label_value(namespace, name)
        return [d for d in self.all_devices() if _labels(d).get(c.KUBESERIAL_LABEL) == label]

    def devices_naming(self, manager: str) -> list[str]:
        return [_name(d) for d in self.all_devices() if (d.get("spec") or {}).get("manager") == manager]

    def devices_on(self, node: str) -> list[str]:
        return [_name(d) for d in self.all_devices() if (d.get("status") or {}).get("nodeName") == node]

    def requests_where(self, field: str, value: str) -> list[Obj]:
        """ManagerScheduleRequests whose spec.<field> (device or manager) is `value`."""
        return [r for r in list(self.requests.cache.values()) if (r.get("spec") or {}).get(field) == value]

    def kubeserial_of(self, device: Obj) -> Obj | None:
        """The KubeSerial a SerialDevice was created from, by its label `<namespace>.<name>`."""
        label = _labels(device).get(c.KUBESERIAL_LABEL, "")
        namespace, _, name = label.partition(".")
        return self.kubeserial(namespace, name) if name else None


def _labels(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])
