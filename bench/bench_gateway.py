"""Gateway vs socat vs ser2net, side by side in one run, on the same kind of device: a pty echo plug.

For each server: 1-byte round trip (p50/p99) and 1 MiB echo throughput over raw TCP and over
RFC 2217 (socat has no RFC 2217), and the server process's RSS in MiB (current and peak). Every server
gets a fresh pty whose master is echoed by a separate process, so the device costs the same for
all. The RFC 2217 client is the gateway's own sans-I/O client (negotiation, escaping), identical
for every server. Prints a table with the targets and ratios and writes JSON to bench/results/.

    .venv/bin/python bench/bench_gateway.py [--round-trips 500] [--rounds 6] [--without-status]
"""

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeserial_common.core import gatewayargs as ga
from kubeserial_gateway.rfc2217 import Cmd, Rfc2217Client
from kubeserial_gateway.telnet import Data
from kubeserial_testing.controlplane import free_port
from kubeserial_testing.pty_device import PtyDevice
from memref import python_floor_mib
from stats import percentile

RESULTS = Path(__file__).parent / "results"
MIB = 1024 * 1024
TARGET_RAW_RTT_RATIO = 1.2  # gateway p50 / socat p50
TARGET_RFC2217_MBPS = 2.0
TARGET_RSS_MIB = 30.0  # issue 14: one gateway per device
TARGET_BRIDGE_RSS_MIB = 20.0  # issue 14: one bridge per consumer pod

UNREACHABLE_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: bench}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""

# A loopback plug that never stops reading (it buffers), so a server that writes with blocking
# calls (socat) cannot deadlock against it.
ECHO_PROGRAM = """
import os, sys, select
fd = int(sys.argv[1])
os.set_blocking(fd, False)
pending = bytearray()
while True:
    readable, writable, _ = select.select([fd], [fd] if pending else [], [])
    if readable:
        try:
            pending += os.read(fd, 65536)
        except BlockingIOError:
            pass
        except OSError:
            select.select([], [], [], 0.01)
    if pending and (writable or readable):
        try:
            del pending[: os.write(fd, pending)]
        except (BlockingIOError, OSError):
            pass
"""


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def listening(port: int) -> bool:
    """From /proc/net/tcp, without connecting (socat serves exactly one connection, even a probe)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def cpu_ns(pid: int | None) -> int | None:
    """Time the process's main thread has run on a CPU, in ns (immune to what else the machine does)."""
    if pid is None:
        return None
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_port(port: int, *, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(port):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {port}")


@contextmanager
def echo_device(workdir: Path, name: str) -> Iterator[PtyDevice]:
    device = PtyDevice(workdir / name).plug()
    echo = subprocess.Popen(
        [sys.executable, "-c", ECHO_PROGRAM, str(device.master)], pass_fds=[device.master]
    )
    try:
        yield device
    finally:
        echo.kill()
        echo.wait()
        device.unplug()


@contextmanager
def running(cmd: list[str], *, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- clients -------------------------------------------------------------------------------------


class RawClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(10)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> bytes:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


class TelnetClient(RawClient):
    """RFC 2217 with the gateway's own sans-I/O client: negotiate, set the baud rate, then data."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.protocol = Rfc2217Client()
        self._data = bytearray()
        self.sock.sendall(self.protocol.greeting() + self.protocol.request(Cmd.SET_BAUDRATE, 115200))
        # Wait for the baud-rate answer: negotiation is over when the server has replied to it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self._answered():
            self._pump()
        self._data.clear()

    def _answered(self) -> bool:
        return getattr(self, "_baud_answered", False)

    def _pump(self) -> None:
        events, reply = self.protocol.receive(super().recv())
        if reply:
            self.sock.sendall(reply)
        for event in events:
            if isinstance(event, Data):
                self._data += event.payload
            elif getattr(event, "command", None) == Cmd.SET_BAUDRATE:
                self._baud_answered = True

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.protocol.encode(data))

    def recv(self) -> bytes:
        while not self._data:
            self._pump()
        out = bytes(self._data)
        self._data.clear()
        return out


def measure_rtt(client: RawClient, count: int) -> list[float]:
    """`count` 1-byte round trips, in µs (after a short warm-up)."""
    for _ in range(min(50, count)):
        client.send(b"\x55")
        client.recv()
    samples = []
    for i in range(count):
        byte = bytes((i & 0xFF,))
        start = time.perf_counter_ns()
        client.send(byte)
        got = client.recv()
        samples.append((time.perf_counter_ns() - start) / 1000)
        if got != byte:
            raise AssertionError(f"round trip returned {got!r}, sent {byte!r}")
    return samples


def measure_throughput(client: RawClient, size: int) -> float:
    """MB/s for echoing `size` random bytes (with an 0xFF run) through, sending and receiving at once."""
    payload = os.urandom(size)
    payload = payload[: size // 2] + b"\xff" * 4096 + payload[size // 2 + 4096 :]
    received = bytearray()

    def send_all() -> None:
        for i in range(0, size, 16384):
            client.send(payload[i : i + 16384])

    sender = threading.Thread(target=send_all)
    start = time.perf_counter()
    sender.start()
    while len(received) < size:
        received += client.recv()
    elapsed = time.perf_counter() - start
    sender.join()
    if bytes(received) != payload:
        raise AssertionError("throughput echo corrupted")
    return size / elapsed / 1e6


# --- servers -------------------------------------------------------------------------------------


@dataclass
class Target:
    """One server and protocol to measure; `connect` opens a session, `pid` is the process to weigh."""

    server: str
    protocol: str
    connect: Callable[[], RawClient]
    pid: Callable[[], int | None]
    samples: list[float] = field(default_factory=list)
    cpu_per_rtt: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)
    error: str | None = None

    def session(self, args: argparse.Namespace) -> None:
        if self.error:
            return
        try:
            client = self.connect()
            try:
                before = cpu_ns(self.pid())
                self.samples += measure_rtt(client, args.round_trips)
                after = cpu_ns(self.pid())
                if before is not None and after is not None:
                    # warm-up round trips included: measure_rtt does min(50, n) of them first
                    self.cpu_per_rtt.append(
                        (after - before) / 1000 / (args.round_trips + min(50, args.round_trips))
                    )
                self.rates.append(measure_throughput(client, MIB))
                pid = self.pid()
                if pid is not None:
                    self.rss.append(rss_mb(pid))
            finally:
                client.close()
        except Exception as exc:
            self.error = repr(exc)[:200]

    def result(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "protocol": self.protocol,
            "rtt_p50_us": percentile(self.samples, 0.5) if self.samples else None,
            "rtt_p99_us": percentile(self.samples, 0.99) if self.samples else None,
            "server_cpu_us_per_rtt": statistics.median(self.cpu_per_rtt) if self.cpu_per_rtt else None,
            "mbps": statistics.median(self.rates) if self.rates else None,
            "rss_mb": self.rss[-1][0] if self.rss else None,
            "peak_rss_mb": max(peak for _, peak in self.rss) if self.rss else None,
            "error": self.error,
        }


@contextmanager
def gateway_process(
    workdir: Path, args: argparse.Namespace, *, event_loop: str
) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """A gateway on its own echo device; yields (process, raw port, rfc2217 port) once it is ready."""
    raw, rfc, health = free_port(), free_port(), free_port()
    with echo_device(workdir, f"gw-{raw}") as device:
        cmd = [sys.executable, "-m", "kubeserial_gateway", "serve", "--device", str(device.link)]
        cmd.append(ga.TEST_ALLOW_ANY_TTY)  # the echo device is a pty, no USB tty
        cmd += ["--raw-port", str(raw), "--rfc2217-port", str(rfc), "--health-port", str(health)]
        cmd += ["--log-format", "json", "--log-level", "error", "--event-loop", event_loop]
        if args.with_status:
            # As deployed: with --device-name the gateway loads its API client too. Nothing answers on
            # this kubeconfig's server, so status writes fail (and retry) off the data path.
            kubeconfig = workdir / "unreachable.kubeconfig"
            kubeconfig.write_text(UNREACHABLE_KUBECONFIG)
            cmd += ["--device-name", "bench", "--kubeconfig", str(kubeconfig)]
        with running(cmd, log=workdir / f"gateway-{raw}.log") as proc:
            wait_ready(health)
            yield proc, raw, rfc


def wait_ready(health_port: int, *, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{health_port}/readyz", timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"not ready: health port {health_port}")


@contextmanager
def gateway_targets(
    workdir: Path, args: argparse.Namespace, *, event_loop: str = "auto", name: str = "kubeserial-gateway"
) -> Iterator[list[Target]]:
    with gateway_process(workdir, args, event_loop=event_loop) as (proc, raw, rfc):
        yield [
            Target(name, "raw", lambda: RawClient(raw), lambda: proc.pid),
            Target(name, "rfc2217", lambda: TelnetClient(rfc), lambda: proc.pid),
        ]


@contextmanager
def socat_targets(workdir: Path) -> Iterator[list[Target]]:
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with echo_device(workdir, "socat") as device:
        # socat serves one connection per process: start it afresh for every session.
        def connect() -> RawClient:
            for previous in procs:  # a finished socat lingers (-t 0.5) and would still read the pty
                previous.kill()
                previous.wait()
            cmd = ["socat", f"TCP-LISTEN:{port},reuseaddr,nodelay", f"FILE:{device.link},raw,echo=0,b115200"]
            procs.append(subprocess.Popen(cmd, stderr=subprocess.DEVNULL))
            wait_port(port)
            return RawClient(port)

        try:
            yield [Target("socat", "raw", connect, lambda: procs[-1].pid if procs else None)]
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


@contextmanager
def ser2net_targets(workdir: Path) -> Iterator[list[Target]]:
    raw, rfc = free_port(), free_port()
    # One device per accepter: ser2net closes a device lazily after a session, and the next session
    # on the other accepter would find it busy.
    with echo_device(workdir, "ser2net-raw") as raw_device, echo_device(workdir, "ser2net-rfc") as rfc_device:
        config = workdir / "ser2net.yaml"
        config.write_text(
            f"""%YAML 1.1
---
connection: &raw
  accepter: tcp,127.0.0.1,{raw}
  connector: serialdev,{raw_device.link},115200n81,local
  options:
    chardelay: false
connection: &rfc
  accepter: telnet(rfc2217),tcp,127.0.0.1,{rfc}
  connector: serialdev,{rfc_device.link},115200n81,local
  options:
    chardelay: false
"""
        )
        cmd = ["ser2net", "-n", "-u", "-c", str(config), "-P", str(workdir / "ser2net.pid")]
        with running(cmd, log=workdir / "ser2net.log") as proc:
            wait_port(raw)
            wait_port(rfc)
            yield [
                Target("ser2net", "raw", lambda: RawClient(raw), lambda: proc.pid),
                Target("ser2net", "rfc2217", lambda: TelnetClient(rfc), lambda: proc.pid),
            ]


class DirectTty(RawClient):
    """The floor: the client writes the pty itself, no network and no server."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def recv(self) -> bytes:
        return os.read(self.fd, 262144)

    def close(self) -> None:
        os.close(self.fd)


@contextmanager
def direct_targets(workdir: Path) -> Iterator[list[Target]]:
    with echo_device(workdir, "direct") as device:
        yield [Target("direct tty (floor)", "tty", lambda: DirectTty(device.link), lambda: None)]


@contextmanager
def bridge_targets(workdir: Path, args: argparse.Namespace) -> Iterator[list[Target]]:
    """TTY mode: the client opens the bridge's pty; the bridge holds the RFC 2217 session to a gateway."""
    with gateway_process(workdir, args, event_loop="auto") as (_, _, rfc):
        health = free_port()
        link = workdir / "bridge-link"
        cmd = [sys.executable, "-m", "kubeserial_gateway", "bridge", "--url", f"rfc2217://127.0.0.1:{rfc}"]
        cmd += [
            "--link",
            str(link),
            "--health-port",
            str(health),
            "--log-format",
            "json",
            "--log-level",
            "error",
        ]
        with running(cmd, log=workdir / "bridge.log") as proc:
            wait_ready(health)
            yield [Target("bridge tty>gateway", "tty", lambda: DirectTty(link), lambda: proc.pid)]


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=500, help="1-byte round trips per session")
    parser.add_argument(
        "--rounds", type=int, default=6, help="sessions per target, interleaved across targets"
    )
    parser.add_argument(
        "--without-status",
        dest="with_status",
        action="store_false",
        help="run the gateway without --device-name (no Kubernetes client loaded)",
    )
    parser.add_argument(
        "--without-bridge",
        dest="with_bridge",
        action="store_false",
        help="skip TTY mode (an app on the bridge's pty, through a second gateway)",
    )
    parser.add_argument(
        "--compare-asyncio",
        action="store_true",
        help="also run a gateway on the plain asyncio loop (the default uses uvloop)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        targets = [
            *stack.enter_context(gateway_targets(workdir, args)),
            *(
                stack.enter_context(
                    gateway_targets(workdir, args, event_loop="asyncio", name="gateway (asyncio loop)")
                )
                if args.compare_asyncio
                else []
            ),
            *stack.enter_context(socat_targets(workdir)),
            *stack.enter_context(ser2net_targets(workdir)),
            *stack.enter_context(direct_targets(workdir)),
            *(stack.enter_context(bridge_targets(workdir, args)) if args.with_bridge else []),
        ]
        # Round-robin: background load on this shared machine hits every server alike.
        for _ in range(args.rounds):
            for target in targets:
                target.session(args)
    results = [target.result() for target in targets]
    results.append({"server": "socat", "protocol": "rfc2217", "error": "not supported"})
    floor = python_floor_mib()
    print(f"python -c pass (same interpreter): peak RSS {floor} MiB")
    header = f"{'server':20} {'proto':8} {'rtt p50 µs':>11} {'rtt p99 µs':>11} {'cpu µs/rtt':>11} {'MB/s':>8}"
    print(header + f" {'RSS MiB':>7} {'peak':>6}")
    for r in results:
        print(
            f"{r['server']:20} {r['protocol']:8} {fmt(r.get('rtt_p50_us'), '11.0f')} "
            f"{fmt(r.get('rtt_p99_us'), '11.0f')} {fmt(r.get('server_cpu_us_per_rtt'), '11.1f')} "
            f"{fmt(r.get('mbps'), '8.2f')} "
            f"{fmt(r.get('rss_mb'), '7.1f')} {fmt(r.get('peak_rss_mb'), '6.1f')}"
            + (f"  ({r['error']})" if r.get("error") else "")
        )
    by_key = {(r["server"], r["protocol"]): r for r in results}
    gw_raw, socat_raw = by_key[("kubeserial-gateway", "raw")], by_key[("socat", "raw")]
    gw_rfc = by_key[("kubeserial-gateway", "rfc2217")]
    ratio = (
        gw_raw["rtt_p50_us"] / socat_raw["rtt_p50_us"]
        if gw_raw["rtt_p50_us"] is not None and socat_raw["rtt_p50_us"]
        else None
    )
    checks: dict[str, dict[str, Any]] = {
        "raw_rtt_p50_ratio_vs_socat": {"value": ratio, "target": TARGET_RAW_RTT_RATIO, "le": True},
        "rfc2217_throughput_mbps": {"value": gw_rfc["mbps"], "target": TARGET_RFC2217_MBPS, "le": False},
        "gateway_peak_rss_mib": {"value": gw_raw["peak_rss_mb"], "target": TARGET_RSS_MIB, "le": True},
    }
    bridge = by_key.get(("bridge tty>gateway", "tty"))
    if bridge is not None:
        checks["bridge_peak_rss_mib"] = {
            "value": bridge["peak_rss_mb"],
            "target": TARGET_BRIDGE_RSS_MIB,
            "le": True,
        }
    print()
    for name, check in checks.items():
        value, target = check["value"], check["target"]
        check["met"] = value is not None and (value <= target if check["le"] else value >= target)
        verdict = "met" if check["met"] else "MISSED"
        print(
            f"{name:30} {fmt(value, '.2f'):>8}  target {'<=' if check['le'] else '>='} {target:<6} {verdict}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"gateway-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {"args": vars(args), "results": results, "checks": checks, "python_floor_mib": floor}, indent=2
        )
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
