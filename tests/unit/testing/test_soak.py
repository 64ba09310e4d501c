"""The chaos soak's bookkeeping (kubeserial_testing.soak): what counts as lost, reordered, unexplained."""

from kubeserial_testing.soak import (
    RECORD,
    FaultRecord,
    FreeSample,
    SoakReport,
    StreamCheck,
    bound_nodes,
    free_violations,
    records,
)


def test_records_split_anywhere_arrive_in_order() -> None:
    check = StreamCheck("up")
    data = records(0, 100)
    assert len(data) == 100 * RECORD
    for i in range(0, len(data), 7):  # chunks that cut records in the middle
        check.feed(data[i : i + 7], now=1.0)
    assert (check.delivered, check.lost, check.gaps, check.reorders, check.partial_bytes) == (
        100,
        0,
        [],
        [],
        0,
    )


def test_a_gap_counts_the_missing_records_and_is_explained_only_by_a_reconnect_inside_it() -> None:
    check = StreamCheck("down")
    check.feed(records(0, 10), now=1.0)
    check.feed(b"00000000", now=1.5)  # a record cut by the reconnect
    check.connection_ended()
    check.feed(records(25, 5), now=4.0)
    assert (check.delivered, check.lost, check.partial_bytes) == (15, 15, 8)
    [gap] = check.gaps
    assert (gap.after, gap.seen, gap.first_missing, gap.count) == (1.0, 4.0, 10, 15)
    assert check.unexplained_gaps([2.0]) == []
    assert check.unexplained_gaps([0.5, 4.5]) == [gap]


def test_an_older_record_is_a_reorder() -> None:
    check = StreamCheck("up")
    check.feed(records(0, 5) + records(3, 1), now=2.0)
    assert check.reorders == [(2.0, 3, 5)]


def test_two_ports_bound_to_one_device_show_two_nodes() -> None:
    ports = [
        {"spec": {"nodeName": "node-a"}, "status": {"device": "printer"}},
        {"spec": {"nodeName": "node-b"}, "status": {"device": "printer"}},
        {"spec": {"nodeName": "node-b"}, "status": {"device": "other"}},
        {"spec": {"nodeName": "node-a"}},
    ]
    assert bound_nodes(ports, "printer") == {"node-a", "node-b"}
    assert bound_nodes(ports[2:], "printer") == set()


def test_free_is_judged_only_in_calm_periods_and_beyond_its_bound() -> None:
    def samples(free: str | None, up: bool, calm: bool, times: range) -> list[FreeSample]:
        return [FreeSample(float(t), free, up, calm) for t in times]

    # wrong for 4 s (within a 5 s bound), right, then wrong for 9 s
    timeline = samples("True", True, True, range(0, 5)) + samples("False", True, True, range(5, 8))
    timeline += samples("True", True, True, range(8, 18)) + samples("False", True, True, range(18, 19))
    assert free_violations(timeline, bound=5) == [(8.0, 17.0)]
    assert free_violations(samples("True", True, False, range(0, 30)), bound=5) == []  # a fault was on
    assert free_violations(samples(None, False, True, range(0, 30)), bound=5) == []  # unreadable
    assert free_violations(samples("True", False, True, range(0, 30)), bound=5) == []  # right


def test_the_report_lists_every_violation_and_sums_the_bytes() -> None:
    down = StreamCheck("device->app")
    down.feed(records(0, 10), now=1.0)
    down.feed(records(12, 1), now=3.0)  # a gap with no reconnect in (1, 3]
    report = SoakReport(
        seconds=600,
        faults=[
            FaultRecord("kill-gateway", "pod x", 1.0, 1.0, 12.0),
            FaultRecord("partition", "node-a", 5.0, 25.0, None),
        ],
        directions=[down],
        reconnects=[10.0],
        binding_violations=[(7.0, ["node-a", "node-b"])],
        free_violation_spans=[(40.0, 60.0)],
        free_bound=15,
        converge_bound=30,
    )
    violations = report.violations()
    assert len(violations) == 4, violations
    assert "partition (node-a): converged after None" in violations
    summary = report.summary()
    assert summary["faults"] == 2 and summary["faults_by_kind"] == {"kill-gateway": 1, "partition": 1}
    assert summary["directions"]["device->app"]["bytes_delivered"] == 11 * RECORD
    assert summary["directions"]["device->app"]["bytes_lost_in_reconnect_windows"] == 2 * RECORD
    assert summary["converged_after_seconds"]["max"] == 12.0
