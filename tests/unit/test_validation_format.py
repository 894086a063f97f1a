"""Validation failure messages: one line naming the expectation, the partition and the observed value."""

from __future__ import annotations

import datetime as dt

from pipelines.data.validate import (
    Failure,
    PartitionResult,
    _args,
    _fmt,
    failure_lines,
    format_failure,
    grouped_warnings,
)


def test_message_format():

    f = Failure(
        "expect_column_values_to_be_between", "amount, min=0", "critical", "12 unexpected values (e.g. -3.2)"
    )
    w = Failure("expect_column_values_to_be_in_set", "country, set=['PT']", "warning", "3 unexpected values")
    assert format_failure("2025-01-03", f) == (
        "partition date=2025-01-03: expect_column_values_to_be_between(amount, min=0) observed 12 unexpected "
        "values (e.g. -3.2)"
    )
    pr = PartitionResult(date="2025-01-03", rows=10, expectations=2, failures=[f, w])
    assert pr.status == "failed"
    assert failure_lines([pr], "critical") == [f"validation failed: {format_failure('2025-01-03', f)}"]
    assert len(failure_lines([pr], "warning")) == 2
    assert failure_lines([pr], "never") == []


def test_values_are_shown_short_and_exact():
    assert _fmt(0.0) == "0" and _fmt(-3.2) == "-3.2" and _fmt(1e6) == "1e+06"
    assert _fmt(dt.datetime(2025, 1, 3, tzinfo=dt.UTC)) == "2025-01-03T00:00:00+00:00"
    assert _fmt("PT") == "'PT'"
    assert _fmt(list("abcdefg")) == "['a', 'b', 'c', 'd', 'e', ...]"
    assert (
        _args({"column": "amount", "min_value": 0.0, "max_value": None, "batch_id": "x"}) == "amount, min=0"
    )
    assert _args({"column_A": "label_time", "column_B": "event_time", "or_equal": True}) == (
        "label_time, event_time, or_equal=True"
    )


def test_the_same_warning_on_many_partitions_is_one_line() -> None:
    """make run printed one warning line per partition (20 identical ones on the default data)."""

    def warn(args: str, observed: str) -> Failure:
        return Failure("expect_column_values_to_be_in_set", args, "warning", observed)

    results = [
        PartitionResult(f"2025-02-{d:02d}", 5000, 70, [warn("merchant_category", f"{d} unexpected values")])
        for d in range(10, 30)
    ]
    results.append(PartitionResult("2025-03-01", 5000, 70, [warn("channel", "1 unexpected value")]))
    lines = grouped_warnings(results)
    assert len(lines) == 2
    assert lines[0].startswith("20 partitions (2025-02-10 .. 2025-02-29); e.g. partition date=2025-02-10: ")
    assert "merchant_category" in lines[0] and "10 unexpected values" in lines[0]
    assert (
        lines[1]
        == "partition date=2025-03-01: expect_column_values_to_be_in_set(channel) observed 1 unexpected value"
    )


def test_missing_values_of_the_batch_frame_are_never_shown_as_examples():
    """The batch frame holds pandas' NaT and NA where GX's lists held None: a not-null failure on a
    timestamp column must not print "(e.g. NaT)"."""
    import pandas as pd

    from pipelines.data.validate import _is_missing

    assert all(_is_missing(v) for v in (None, float("nan"), pd.NaT, pd.NA))
    assert not any(_is_missing(v) for v in (0, "", "x", pd.Timestamp("2025-01-01", tz="UTC")))
