from __future__ import annotations

import pyarrow as pa

from pipelines.core.timeparse import parse_times


def test_impossible_dates_are_null_not_rolled_over() -> None:
    out = parse_times(pa.array(["31.02.2025", "28.02.2025 ", "28.02.2025", None]), "%d.%m.%Y")
    assert out.to_pylist()[0] is None and out.to_pylist()[3] is None
    assert str(out.to_pylist()[2]) == "2025-02-28 00:00:00+00:00"


def test_iso_with_and_without_zone() -> None:
    out = parse_times(
        pa.array(["2025-01-01T11:00:00+01:00", "2025-01-01 10:00:00", "2025-01-01T10:00:00Z", "nope"])
    )
    vals = out.to_pylist()
    assert vals[0] == vals[1] == vals[2] and vals[3] is None
