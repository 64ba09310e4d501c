"""Reading a service's HealthServer from tests: /healthz, /readyz and samples from /metrics."""

import urllib.request


def http_get(port: int, path: str, *, host: str = "127.0.0.1") -> tuple[int, str]:
    """(status, body) of GET http://host:port/path; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as response:
            return int(response.status), response.read().decode()
    except OSError as exc:
        return getattr(exc, "code", 0) or 0, str(exc)


def is_ready(port: int) -> bool:
    return http_get(port, "/readyz")[0] == 200


def metric_value(port: int, name: str, **labels: str) -> float | None:
    """One sample from /metrics, matched on its full label set in exposition order; None if absent."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in http_get(port, "/metrics")[1].splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return None
