"""Each e2e module starts real nodes of its own (kubeserial_testing.realstack, nodes)."""

from collections.abc import Iterator

import pytest

from kubeserial_testing.realstack import RealStack


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item, so fixtures can tell a failed test (and print
    the cluster's diagnostics then)."""
    outcome = yield
    setattr(item, f"rep_{call.when}", outcome.get_result())  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def diagnostics_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed test that ran on a RealStack (its module's `stack` fixture): restartCount,
    Events and logs of KubeSerial's pods and of the module's DIAGNOSED_NAMESPACES, then whatever
    the module's `more_diagnostics(stack)` adds."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed or "stack" not in request.fixturenames:
        return
    stack: RealStack = request.getfixturevalue("stack")
    print(stack.diagnostics(*getattr(request.module, "DIAGNOSED_NAMESPACES", ())))
    more = getattr(request.module, "more_diagnostics", None)
    if more is not None:
        more(stack)
