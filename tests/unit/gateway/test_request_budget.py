"""The gateway's budget of telnet subnegotiations per session (sessions.RequestBudget) and the
RFC 2217 endpoint's count of what it received."""

from kubeserial_gateway.rfc2217 import Rfc2217Server
from kubeserial_gateway.sessions import RequestBudget


def test_a_burst_then_a_steady_rate() -> None:
    budget = RequestBudget(per_second=100, burst=1000)
    assert budget.spend(1000, now=10.0)
    assert not budget.spend(1, now=10.0)  # the burst is spent
    fresh = RequestBudget(per_second=100, burst=1000)
    assert fresh.spend(1000, now=10.0)
    assert fresh.spend(100, now=11.0)  # a second later: 100 more
    assert not fresh.spend(101, now=12.0)


def test_a_real_clients_pace_never_runs_out() -> None:
    budget = RequestBudget()
    assert budget.spend(20, now=0.0)  # settings and modem lines as a port opens
    assert all(budget.spend(10, now=0.1 * tick) for tick in range(1, 10_000))  # 100 per second, for 1000 s


def test_the_endpoint_counts_every_subnegotiation() -> None:
    server = Rfc2217Server(signature="KubeSerial")
    signature, baud = b"\xff\xfa\x2c\x00\xff\xf0", b"\xff\xfa\x2c\x01\x00\x00\x25\x80\xff\xf0"
    other_option = b"\xff\xfa\x18\x01\xff\xf0"  # terminal type: refused, ignored, still counted
    server.receive(b"data" + signature + baud * 3 + other_option)
    assert server.subnegotiations == 5
