"""The health port: metrics formats."""
from __future__ import annotations

import pytest
from supervisor import metrics

STATE = {
    "child_up": True, "child_started": 0.0, "stopping": None, "ready_delay": 0.0,
    "unhealthy": None, "changes": 2, "actions": {("signal", "done"): 1, ("signal", "rejected"): 1},
    "rejections": 1, "restarts": 0, "orphans": 3, "last_change": 1700000000.25,
    "last_apply": 1700000000.5, "watches": [("/etc/config", "ab" * 16, "inotify")],
}


@pytest.mark.parametrize("accept, openmetrics", [
    ("", False), ("*/*", False), ("text/plain;version=0.0.4", False),
    ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1", True),   # Prometheus 2
    ("Application/OpenMetrics-Text", True), ("application/openmetrics-text;q=0", False),
    ("application/openmetrics-text;q=zero", False), (";;,,;", False),
])
def test_format_follows_accept(accept, openmetrics):
    assert metrics.wants_openmetrics(accept) is openmetrics


def _odd_families():
    from prometheus_client import metrics_core as core

    counter = core.CounterMetricFamily("odd", 'back\\slash and\nnewline "quoted"', labels=["a", "b"])
    counter.add_metric(['quote " back \\ nl \n', "日本"], 1.5, created=1700000000.0)
    counter.add_metric(["", "x"], 0)
    gauge = core.GaugeMetricFamily("g", "g", labels=["v"])
    for i, value in enumerate((float("nan"), float("inf"), float("-inf"), 1e21, 12345678.0, -0.0, 7)):
        gauge.add_metric([str(i)], value, timestamp=1700000000.5 if i == 6 else None)
    histogram = core.GaugeHistogramMetricFamily("gh", "gh", buckets=[("1.0", 2), ("+Inf", 3)],
                                                gsum_value=4)
    return [counter, gauge, histogram,
            core.InfoMetricFamily("i", "i", value={"k": "v"}),
            core.UnknownMetricFamily("u", "u", value=3),
            core.HistogramMetricFamily("h", "h", buckets=[("1.0", 2), ("+Inf", 3)], sum_value=4),
            core.SummaryMetricFamily("s", "s", count_value=2, sum_value=3),
            core.StateSetMetricFamily("ss", "ss", value={"a": True, "b": False})]


@pytest.mark.parametrize("which", ["state", "odd"])
def test_text_format_is_prometheus_clients_own_byte_for_byte(which):
    from prometheus_client.exposition import generate_latest
    from prometheus_client.metrics_core import CounterMetricFamily  # noqa: F401 - full import
    from prometheus_client.utils import floatToGoString

    found = metrics.families(STATE, metrics._prometheus()[0]) if which == "state" else _odd_families()
    assert metrics.text_004(found, floatToGoString) == generate_latest(metrics._Families(found))


