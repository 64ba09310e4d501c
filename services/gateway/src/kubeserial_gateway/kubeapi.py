"""The gateway's Kubernetes client: GET its SerialDevice and PATCH its status, nothing more.

It is the lean client of the runtime (kubeserial_common.runtime.lean), which the monitor and the
`kubectl serial` plugin use too: a gateway runs once per device on a node that may be a Raspberry
Pi, and kubernetes_asyncio alone costs about 70 MiB. Kept as a module so the gateway's imports and
tests name what the gateway uses.
"""

from kubeserial_common.core.errors import ApiError as ApiError  # what every call here raises
from kubeserial_common.runtime.lean import MERGE_PATCH as MERGE_PATCH
from kubeserial_common.runtime.lean import Endpoint as Endpoint
from kubeserial_common.runtime.lean import LeanClient, LeanCustomObjects
from kubeserial_common.runtime.lean import api_error as api_error
from kubeserial_common.runtime.lean import endpoint_from_kubeconfig as endpoint_from_kubeconfig
from kubeserial_common.runtime.lean import in_cluster_endpoint as in_cluster_endpoint
from kubeserial_common.runtime.lean import load_endpoint as load_endpoint
from kubeserial_common.runtime.lean import parse_http_response as parse_http_response


class SlimCustomObjects(LeanCustomObjects):
    """The two calls kubeserial_common.core.status.write_status needs, for KubeSerial's own resources."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(LeanClient(endpoint, user_agent="kubeserial-gateway"))
