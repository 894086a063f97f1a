"""One parser for event and label times, shared by the ETL checks and the source adapters.

ISO 8601 by default (a value with a zone offset is converted to UTC, one without is taken as UTC), or a
strptime format. Unparseable values, including impossible dates such as 31 February, become null, so the
row is quarantined rather than silently shifted.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

TS = pa.timestamp("us", tz="UTC")


def parse_times(arr: pa.Array | pa.ChunkedArray, time_format: str | None = None) -> pa.Array:
    """Raw times -> timestamp[us, UTC], null where a value does not parse."""
    if pa.types.is_timestamp(arr.type):
        if arr.type.tz is None:
            arr = pc.assume_timezone(arr, "UTC")
        return _combine(pc.cast(arr, TS))
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    if time_format:
        return _parse_with_format(arr, time_format)
    try:  # fast path: clean ISO 8601 with zone, vectorized in Arrow
        return _combine(pc.cast(arr, TS))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _parse_iso_tolerant(arr)


def _combine(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _parse_with_format(arr: pa.Array | pa.ChunkedArray, time_format: str) -> pa.Array:
    # pandas validates the calendar (Arrow's strptime rolls 31.02 over into March).
    import pandas as pd

    s = pd.Series(arr.to_pandas(), dtype=object)
    parsed = pd.to_datetime(s, format=time_format, errors="coerce", utc=True)
    return pa.array(parsed.astype("datetime64[us, UTC]"), type=TS)


def _parse_iso_tolerant(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """ISO-8601 variants. Values with and without a zone are parsed apart, because a parser given both at
    once may apply one group's offset to the other."""
    import pandas as pd

    s = pd.Series(arr.to_pandas(), dtype=object)
    has_zone = s.str.contains(r"(?:Z|[+-]\d{2}:?\d{2})$", regex=True, na=False)
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[us, UTC]")
    for mask in (has_zone, ~has_zone & s.notna()):
        if mask.any():
            parsed = pd.to_datetime(s[mask], utc=True, errors="coerce", format="ISO8601")
            out[mask] = parsed.astype("datetime64[us, UTC]")
    return pa.array(out, type=TS)
