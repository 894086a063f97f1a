"""Hotel Booking Demand source (Antonio, Almeida & Nunes, Data in Brief 22, 2019; CC BY 4.0).

One landing file (``hotel_bookings.csv`` or the zip holding it) of 119,390 bookings for two hotels,
arrivals 2015-07-01 to 2017-08-31. Mapping onto the event table:

* ``event_id`` = ``hotel-<n>``, n the 1-based row number among the file's parsed rows (the data set
  has no booking id; the file is published once and never appended to, so the number is stable);
* ``event_time`` = the booking date = arrival date - ``lead_time`` days, at midnight UTC: the moment a
  model would score the booking. Arrival comes from ``arrival_date_year``, ``arrival_date_month`` (an
  English month name) and ``arrival_date_day_of_month``;
* ``label`` = ``is_canceled``; ``label_time`` = the arrival date. A booking not cancelled is only known
  to be kept when the guest arrives, so the label matures at arrival for every row; maturing cancelled
  rows earlier (at ``reservation_status_date``) would make the labels known at a cutoff over-represent
  cancellations, and that column is written after the outcome;
* entity key ``booker_id`` (derived): ``agent-<id>`` if a travel agent made the booking, else
  ``company-<id>``, else ``direct``. The data has no guest id; the agent (or company) is the actor
  that books again and again and whose past cancellations are informative, and keeping ``hotel`` out
  of the key leaves it usable as a feature;
* ``params.source.hotel.drop`` (``reservation_status``, ``reservation_status_date``,
  ``assigned_room_type``, ``booking_changes``) is removed as soon as the file is read: these are written
  after the outcome or change after booking, and the adapter refuses a schema that declares one.
  The arrival parts stay available as features (the planned arrival is known at booking time).

"NULL" (agent, company, country) and "NA" (four ``children`` values) are missing values. A row whose
arrival date or lead time does not parse keeps its raw columns and gets a null event time, so ETL
quarantines it (``missing_value:event_time``) rather than losing it.
"""

from __future__ import annotations

import io
import logging
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import InputError
from pipelines.core import storage
from pipelines.core.config import HotelConfig, SchemaConfig
from pipelines.data.sources.base import FileRejected, RawBatch, read_csv_strings, required_columns, select_contract

__all__ = ["BOOKER_KEY", "HotelAdapter", "booker_ids", "booking_times"]

log = logging.getLogger(__name__)

TS = pa.timestamp("us", tz="UTC")
BOOKER_KEY = "booker_id"
MONTHS = [
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
]  # fmt: skip
RAW_REQUIRED = [
    "is_canceled",
    "lead_time",
    "arrival_date_year",
    "arrival_date_month",
    "arrival_date_day_of_month",
]
# Country codes are ISO 3166-1 alpha-3, so "NA" cannot be Namibia: it is a missing value here.
NULL_VALUES = ["", "NULL", "NA", "null", "NaN", "nan", "N/A"]


def _ints(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Whole numbers as float64 (NaN where a value is missing or not a whole number)."""
    import pandas as pd

    vals = pd.to_numeric(arr.to_pandas(), errors="coerce").to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        vals[vals != np.round(vals)] = np.nan
    return vals


def booking_times(
    year: pa.ChunkedArray | pa.Array,
    month: pa.ChunkedArray | pa.Array,
    day: pa.ChunkedArray | pa.Array,
    lead_time: pa.ChunkedArray | pa.Array,
) -> tuple[pa.Array, pa.Array]:
    """(booking time, arrival time) at midnight UTC from the raw strings; null where they do not parse.

    Pure. ``month`` is an English month name (any case); an impossible date (31 June) is null.
    """
    import pandas as pd

    m = pc.index_in(pc.utf8_lower(pc.utf8_trim_whitespace(month)), value_set=pa.array(MONTHS))
    month_no = m.to_numpy(zero_copy_only=False).astype(float) + 1  # null -> NaN
    parts = pd.DataFrame({"year": _ints(year), "month": month_no, "day": _ints(day)})
    ok = parts.notna().all(axis=1).to_numpy()
    arrival = pd.Series(pd.NaT, index=parts.index, dtype="datetime64[ns]")
    if ok.any():
        arrival[ok] = pd.to_datetime(parts[ok].astype("int64"), errors="coerce")
    lead = _ints(lead_time)
    booking = arrival - pd.to_timedelta(lead, unit="D")
    as_ts = lambda s: pa.array(s.dt.tz_localize("UTC"), type=TS)  # noqa: E731
    return as_ts(booking), as_ts(arrival)


def booker_ids(agent: pa.ChunkedArray | pa.Array, company: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``agent-<id>`` if an agent booked, else ``company-<id>``, else ``direct``. Pure."""
    agent = pc.utf8_trim_whitespace(agent)
    company = pc.utf8_trim_whitespace(company)
    by_agent = pc.binary_join_element_wise(pa.scalar("agent-"), agent, pa.scalar(""))
    by_company = pc.binary_join_element_wise(pa.scalar("company-"), company, pa.scalar(""))
    out = pc.coalesce(by_agent, by_company, pa.scalar("direct"))
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


class HotelAdapter:
    """``*.csv`` or ``*.csv.zip`` landing files of the hotel-bookings layout."""

    def __init__(self, *, schema: SchemaConfig, cfg: HotelConfig, encoding: str = "utf-8") -> None:
        self.schema = schema
        self.cfg = cfg
        self.encoding = encoding
        declared = {schema.entity_key, *(c.name for c in schema.columns)}
        leaky = sorted(set(cfg.drop) & declared)
        if leaky:
            raise InputError(
                f"params: schema.columns declares {leaky}, which source.hotel.drop removes as leaky "
                "(written after the outcome or changed after booking); remove them from schema.columns"
            )

    def list_files(self, landing: str) -> list[str]:
        return sorted({*storage.list_files(landing, "*.csv"), *storage.list_files(landing, "*.csv.zip")})

    def _csv_bytes(self, path: str) -> tuple[bytes, str]:
        data = storage.read_bytes(path)
        if not path.endswith(".zip"):
            return data, path
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                members = [
                    n
                    for n in zf.namelist()
                    if n.lower().endswith(".csv") and not n.startswith("__MACOSX/") and not n.endswith("/")
                ]
                if len(members) != 1:
                    raise FileRejected(
                        "bad_archive",
                        f"{path}: expected exactly one .csv inside the zip, found {members or 'none'}; "
                        "put one hotel_bookings.csv per zip",
                        0,
                    )
                return zf.read(members[0]), f"{path}!{members[0]}"
        except zipfile.BadZipFile as err:
            raise FileRejected("unreadable_file", f"{path}: not a readable zip file ({err})", 0) from None

    def read(self, path: str) -> RawBatch:
        data, name = self._csv_bytes(path)
        table, malformed = read_csv_strings(data, path=name, null_values=NULL_VALUES, encoding=self.encoding)
        rows = table.num_rows + len(malformed)

        # Leaky columns leave first, so nothing below (or downstream) can use them.
        table = table.drop_columns([c for c in self.cfg.drop if c in table.column_names])

        missing_raw = [c for c in RAW_REQUIRED if c not in table.column_names]
        if missing_raw:
            raise FileRejected(
                "missing_required_column",
                f"{name}: missing column(s) {missing_raw} needed to build event_time, label and "
                f"label_time; the file has {table.column_names}. Is this the hotel_bookings.csv layout?",
                rows,
            )
        n = table.num_rows
        booking, arrival = booking_times(
            table.column("arrival_date_year"),
            table.column("arrival_date_month"),
            table.column("arrival_date_day_of_month"),
            table.column("lead_time"),
        )
        unmapped = int(pc.sum(pc.is_null(booking)).as_py() or 0)
        if unmapped:
            log.warning(
                "%s: %d row(s) without a parseable arrival date / lead time (quarantined)", name, unmapped
            )
        label = table.column("is_canceled")
        derived: dict[str, pa.Array | pa.ChunkedArray] = {
            "event_id": pa.array([f"hotel-{i}" for i in range(1, n + 1)], pa.string()),
            "event_time": booking,
            "label": label,
            "label_time": pc.if_else(pc.is_null(label), pa.scalar(None, TS), arrival),
        }
        if BOOKER_KEY not in table.column_names and {"agent", "company"} <= set(table.column_names):
            derived[BOOKER_KEY] = booker_ids(table.column("agent"), table.column("company"))
        rest = {c: table.column(c) for c in table.column_names if c not in derived}
        out = pa.table({**derived, **rest})

        missing = [c for c in required_columns(self.schema) if c not in out.column_names]
        if missing:
            raise FileRejected(
                "missing_required_column",
                f"{name}: column(s) {missing} are declared in schema.columns but absent from the file "
                f"(it has {table.column_names}); fix the profile's schema (profiles/hotel.yaml)",
                rows,
            )
        out = select_contract(out, self.schema)
        leaked = set(self.cfg.drop) & set(out.column_names)
        if leaked:  # impossible after the check in __init__; the last line of defence
            raise RuntimeError(f"{name}: leaky column(s) {sorted(leaked)} reached the contract; a bug")
        # One file spans years of bookings: "future" is judged against the run's as-of time.
        return RawBatch(table=out, malformed=malformed, file_date=None)
