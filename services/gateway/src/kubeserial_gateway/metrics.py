"""Prometheus metrics of the gateway and the bridge, on the HealthServer's registry.

Labelled children used on the data path are bound once here: `labels()` is a dict lookup under a
lock, too slow to repeat for every chunk.
"""

from kubeserial_common.runtime.promtext import Counter, Gauge, Registry


class GatewayMetrics:
    def __init__(self, registry: Registry) -> None:
        data = Counter(
            "kubeserial_gateway_bytes", "Bytes moved, by direction", ["direction"], registry=registry
        )
        self.to_device = data.labels("to_device")
        self.from_device = data.labels("from_device")
        self.discarded = Counter(
            "kubeserial_gateway_discarded_bytes",
            "Bytes the device sent while no client was connected (read and dropped, like an unwatched line)",
            registry=registry,
        )
        self.sessions = Counter(
            "kubeserial_gateway_sessions", "Client sessions opened", ["protocol"], registry=registry
        )
        self.session_open = Gauge(
            "kubeserial_gateway_session_open", "1 while a client session is open", registry=registry
        )
        self.refusals = Counter(
            "kubeserial_gateway_refusals",
            "Connections refused: busy (another session is open) or device_unavailable",
            ["reason"],
            registry=registry,
        )
        self.takeovers = Counter(
            "kubeserial_gateway_takeovers", "Idle sessions replaced by a new client", registry=registry
        )
        self.device_open = Gauge(
            "kubeserial_gateway_device_open", "1 while the device is open", registry=registry
        )
        self.device_opens = Counter(
            "kubeserial_gateway_device_opens", "Successful opens of the device", registry=registry
        )
        self.device_reopens = Counter(
            "kubeserial_gateway_device_reopens",
            "Opens of the device after it had been lost",
            registry=registry,
        )
        self.device_losses = Counter(
            "kubeserial_gateway_device_losses",
            "Times the device went away: hangup, io_error or path_changed",
            ["reason"],
            registry=registry,
        )
        self.protocol_errors = Counter(
            "kubeserial_gateway_protocol_errors",
            "Malformed telnet/RFC 2217 sequences from clients, dropped",
            registry=registry,
        )
        self.floods = Counter(
            "kubeserial_gateway_request_floods",
            "Sessions closed for sending telnet subnegotiations faster than the request budget",
            registry=registry,
        )
        self.port_requests = Counter(
            "kubeserial_gateway_port_requests",
            "RFC 2217 port requests handled",
            ["command"],
            registry=registry,
        )
        self.status_writes = Counter(
            "kubeserial_gateway_status_writes",
            "Writes of the SerialDevice Free condition: written, unchanged, missing (no device) or failed",
            ["result"],
            registry=registry,
        )


class BridgeMetrics:
    def __init__(self, registry: Registry) -> None:
        data = Counter(
            "kubeserial_bridge_bytes", "Bytes moved, by direction", ["direction"], registry=registry
        )
        self.to_gateway = data.labels("to_gateway")
        self.from_gateway = data.labels("from_gateway")
        self.dropped_detached = Counter(
            "kubeserial_bridge_dropped_bytes",
            "Bytes from the gateway dropped because no process had the tty open (an unwatched line)",
            registry=registry,
        )
        self.connected = Gauge(
            "kubeserial_bridge_connected", "1 while connected to the gateway", registry=registry
        )
        self.connects = Counter(
            "kubeserial_bridge_connects", "Sessions with the gateway (it answered)", registry=registry
        )
        self.reconnects = Counter(
            "kubeserial_bridge_reconnects",
            "Sessions after the first: the gateway went away and came back",
            registry=registry,
        )
        self.connect_failures = Counter(
            "kubeserial_bridge_connect_failures", "Failed attempts to reach the gateway", registry=registry
        )
        self.settings_sent = Counter(
            "kubeserial_bridge_settings_sent",
            "RFC 2217 requests sent for the application's termios and modem-line changes",
            ["command"],
            registry=registry,
        )
        self.app_attached = Gauge(
            "kubeserial_bridge_app_attached", "1 while some process has the tty open", registry=registry
        )
        self.protocol_errors = Counter(
            "kubeserial_bridge_protocol_errors",
            "Malformed sequences from the gateway, dropped",
            registry=registry,
        )
