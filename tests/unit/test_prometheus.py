"""harness.prometheus.metric_sum: the samples of one metric (or its _total) with the wanted labels."""

from __future__ import annotations

from harness.prometheus import metric_sum

TEXT = """# HELP pilot_inbound_updates Total number of updates received by pilot.
# TYPE pilot_inbound_updates counter
pilot_inbound_updates{type="config"} 7
pilot_inbound_updates{type="eds"} 40
  pilot_inbound_updates{type="config"} 2
pilot_inbound_updates_other{type="config"} 100
pilot_debounce_time_count 4 1700000000000
pilot_debounce_time_sum 0.9
pilot_xds_pushes_total{type="cds"} 3
pilot_xds_pushes_total{type="lds"} 5
"""


def test_sums_the_samples_of_one_metric_with_the_wanted_labels() -> None:
    assert metric_sum(TEXT, "pilot_inbound_updates", {"type": "config"}) == 9.0  # indented lines count
    assert metric_sum(TEXT, "pilot_inbound_updates") == 49.0  # not the _other metric, not the comments
    assert metric_sum(TEXT, "pilot_debounce_time_count") == 4.0  # a timestamp is not the value
    assert metric_sum(TEXT, "pilot_xds_pushes") == 8.0  # the _total of a counter
    assert metric_sum(TEXT, "pilot_xds_pushes", {"type": "eds"}) is None
    assert metric_sum(TEXT, "absent") is None
