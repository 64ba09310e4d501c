"""The test harness's checks are themselves checked: a metric that is not exported fails instead of
reading as 0, and a service log line that is not one JSON object with event, level and timestamp
is reported (here against the real output of both of runtime.logs' renderers)."""

import json
import subprocess
import sys

import pytest

from kubeserial_testing.probes import json_log_problems, metric_sample, metric_sum

BODY = """# HELP demo_sessions_total Sessions.
# TYPE demo_sessions_total counter
demo_sessions_total{protocol="raw"} 2.0
# TYPE demo_refusals counter
# TYPE demo_open gauge
demo_open 1.0
# TYPE demo_latency_seconds histogram
demo_latency_seconds_bucket{le="+Inf"} 3.0
demo_latency_seconds_count 3.0
demo_latency_seconds_sum 0.5
"""


def test_a_metric_is_read_by_its_full_label_set() -> None:
    assert metric_sample(BODY, "demo_sessions_total", protocol="raw") == 2.0
    assert metric_sample(BODY, "demo_sessions_total", protocol="rfc2217") == 0.0  # declared, not counted yet
    assert metric_sample(BODY, "demo_refusals_total", reason="busy") == 0.0
    assert metric_sample(BODY, "demo_open") == 1.0
    assert metric_sample(BODY, "demo_latency_seconds_count") == 3.0
    assert metric_sum(BODY, "demo_sessions_total") == 2.0


@pytest.mark.parametrize("name", ["demo_session_total", "demo_closed", "demo_latency_count"])
def test_a_metric_that_is_not_exported_fails(name: str) -> None:
    with pytest.raises(AssertionError, match="not exported"):
        metric_sample(BODY, name)
    with pytest.raises(AssertionError, match="not exported"):
        metric_sum(BODY, name)


def logged(lean: bool) -> str:
    """What a process configured by runtime.logs writes: info, warning, an exception, and a stdlib
    logger's line (libraries log through logging)."""
    script = f"""
import logging
from kubeserial_common.runtime.logs import configure_logging, get_logger
configure_logging(level="debug", fmt="json", lean={lean})
log = get_logger("t")
log.info("started", port=1)
log.warning("odd", value=object())
try:
    1 / 0
except ZeroDivisionError:
    log.exception("failed")
logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=ValueError("lost"))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return done.stderr


@pytest.mark.parametrize("lean", [False, True])
def test_both_renderers_write_lines_the_check_accepts(lean: bool) -> None:
    text = logged(lean)
    assert len(text.splitlines()) == 4, text
    assert json_log_problems(text) == []
    assert json.loads(text.splitlines()[2])["level"] == "error"
    stdlib = json.loads(text.splitlines()[3])
    assert (stdlib["logger"], stdlib["exception"]) == ("asyncio", "ValueError: lost")


def test_lines_that_are_not_one_json_object_with_event_level_and_timestamp_are_reported() -> None:
    good = {"event": "started", "level": "info", "timestamp": "2026-12-02T10:00:00.000001Z"}
    lines = [
        json.dumps(good),
        "Traceback (most recent call last):",
        json.dumps([good]),
        json.dumps({**good, "event": ""}),
        json.dumps({**good, "level": "loud"}),
        json.dumps({k: v for k, v in good.items() if k != "timestamp"}),
        json.dumps({**good, "timestamp": "yesterday"}),
    ]
    problems = json_log_problems("\n".join(lines))
    assert [p.split(" ", 2)[1] for p in problems] == ["2", "3", "4", "5", "6", "7"]
    assert "not JSON" in problems[0] and "not a JSON object" in problems[1] and "no event" in problems[2]
