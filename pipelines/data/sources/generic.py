"""Generic source: any CSV or Parquet files mapped onto the event table from params alone.

``params.source.generic`` says which landing files to read (``pattern``, ``format``, ``delimiter``),
which raw columns to drop (leaky or useless ones; they never reach the lake), how to rename raw columns
to the schema's names, and where the core columns come from:

* ``event_id``: a raw id column, or (None) derived as ``<file name>:<row>`` with the 1-based row
  number among the file's parsed rows (deterministic for a given file content);
* ``event_time``: ``time_column``, parsed later by ETL with ``time_format`` (strptime; None: ISO 8601);
* ``label``: ``label_column``; ``positive_value`` becomes 1, ``negative_values`` (or, when None, every
  other non-null value) become 0, a null stays null (not yet known). A value that is neither positive
  nor negative is passed on as ``unmapped:<value>`` so that ETL quarantines the row as a wrong type;
* ``label_time``: ``label_time_column``, or ``event_time + label_delay_days`` for rows with a label
  (left null where the event time does not parse: ETL then quarantines the row on its event time).

The adapter never drops a row. A file without a required column is rejected as a whole, with a
message naming the column and the params key that maps it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import InputError
from pipelines.core import storage
from pipelines.core.config import GenericSourceConfig, SchemaConfig
from pipelines.core.timeparse import TS, parse_times
from pipelines.data.sources.base import (
    BadLine,
    FileRejected,
    RawBatch,
    check_required,
    date_in_name,
    read_csv_strings,
    select_contract,
)

__all__ = ["GenericAdapter", "map_label"]

log = logging.getLogger(__name__)

UNMAPPED_PREFIX = "unmapped:"


def map_label(
    arr: pa.Array | pa.ChunkedArray, *, positive_value: str, negative_values: list[str] | None
) -> pa.Array:
    """Raw label values -> "1" / "0" / null (unknown); anything unmappable -> "unmapped:<value>"."""
    text = arr if pa.types.is_string(arr.type) else pc.cast(arr, pa.string())
    text = pc.utf8_trim_whitespace(text)
    is_pos = pc.equal(text, pa.scalar(positive_value.strip()))
    if negative_values is None:
        out = pc.if_else(is_pos, pa.scalar("1"), pa.scalar("0"))
    else:
        is_neg = pc.is_in(text, value_set=pa.array([v.strip() for v in negative_values], pa.string()))
        unmapped = pc.binary_join_element_wise(pa.scalar(UNMAPPED_PREFIX), text, pa.scalar(""))
        out = pc.if_else(is_pos, pa.scalar("1"), pc.if_else(is_neg, pa.scalar("0"), unmapped))
    # if_else on a null condition yields null: a missing label stays missing (not yet known).
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def _decompress(data: bytes, path: str) -> bytes:
    """CSV bytes of a plain, ``.gz`` or single-member ``.zip`` landing file."""
    import gzip
    import io
    import zipfile

    if path.endswith(".gz"):
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise FileRejected("unreadable_file", f"{path}: not a readable gzip file ({err})", 0) from None
    if path.endswith(".zip"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                members = [m for m in zf.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")]
                if len(members) != 1:
                    raise FileRejected(
                        "unreadable_file", f"{path}: a zip must hold exactly one CSV file, found {members}", 0
                    )
                return zf.read(members[0])
        except zipfile.BadZipFile as err:
            raise FileRejected("unreadable_file", f"{path}: not a readable zip file ({err})", 0) from None
    return data


class GenericAdapter:
    """Landing CSV/Parquet files of any layout, mapped by ``params.source.generic``."""

    def __init__(self, *, schema: SchemaConfig, cfg: GenericSourceConfig, encoding: str = "utf-8") -> None:
        self.schema = schema
        self.cfg = cfg
        self.encoding = encoding
        drop = set(cfg.drop)
        contract = {schema.entity_key, *(c.name for c in schema.columns)}
        problems = []
        if drop & contract:
            problems.append(
                f"source.generic.drop names {sorted(drop & contract)}, which schema.columns declares; "
                "a dropped column never reaches the lake: remove it from one of the two"
            )
        if drop & set(cfg.rename):
            problems.append(
                f"source.generic.drop names {sorted(drop & set(cfg.rename))}, which source.generic.rename "
                "maps; remove it from one of the two"
            )
        if drop & set(cfg.rename.values()):
            problems.append(
                f"source.generic.rename maps columns onto dropped names "
                f"{sorted(drop & set(cfg.rename.values()))}; rename them to something else"
            )
        core = {"time_column": cfg.time_column, "label_column": cfg.label_column}
        if cfg.event_id:
            core["event_id"] = cfg.event_id
        if cfg.label_time_column:
            core["label_time_column"] = cfg.label_time_column
        for key, name in core.items():
            if name in drop:
                problems.append(f"source.generic.{key} = {name!r} is also in source.generic.drop")
        if problems:
            raise InputError("params: " + "; ".join(problems))

    def list_files(self, landing: str) -> list[str]:
        return storage.list_files(landing, self.cfg.pattern)

    # ------------------------------------------------------------------ reading

    def _load(self, path: str) -> tuple[pa.Table, list[BadLine]]:
        if self.cfg.format == "csv":
            data = _decompress(storage.read_bytes(path), path)
            return read_csv_strings(
                data,
                path=path,
                delimiter=self.cfg.delimiter,
                null_values=self.cfg.null_values,
                encoding=self.encoding,
            )
        try:
            return storage.read_parquet(path), []
        except (pa.ArrowInvalid, OSError) as err:
            raise FileRejected(
                "unreadable_file",
                f"{path}: not a readable Parquet file ({err}); check source.generic.format and "
                "source.generic.pattern",
                0,
            ) from None

    def _find(self, table: pa.Table, name: str, *, key: str, path: str, rows: int) -> str:
        """The column holding raw column ``name``: under its own name, or under its renamed name."""
        if name in table.column_names:
            return name
        renamed = self.cfg.rename.get(name)
        if renamed is not None and renamed in table.column_names:
            return renamed
        raise FileRejected(
            "missing_required_column",
            f"{path}: missing required column {name!r} (source.generic.{key}); the file has "
            f"{table.column_names}. Add the column, or point source.generic.{key} at the right one",
            rows,
        )

    def read(self, path: str) -> RawBatch:
        cfg = self.cfg
        table, malformed = self._load(path)
        rows = table.num_rows + len(malformed)

        # 1. Leaky or useless columns go first: nothing downstream can see them.
        table = table.drop_columns([c for c in cfg.drop if c in table.column_names])

        # 2. Rename raw names to the schema's names, refusing to shadow an existing column.
        if cfg.rename:
            names = table.column_names
            targets = [cfg.rename.get(c, c) for c in names]
            clash = sorted({t for t in targets if targets.count(t) > 1})
            if clash:
                raise FileRejected(
                    "ambiguous_column",
                    f"{path}: after source.generic.rename, column name(s) {clash} occur more than once "
                    f"(the file has {names}); rename or drop one of them",
                    rows,
                )
            table = table.rename_columns(targets)

        # 3. Constant columns (a single series' entity key), unless the file has them.
        for name, value in cfg.constants.items():
            if name not in table.column_names:
                table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))

        # 4. The core columns.
        time_col = self._find(table, cfg.time_column, key="time_column", path=path, rows=rows)
        label_col = self._find(table, cfg.label_column, key="label_column", path=path, rows=rows)
        event_time = table.column(time_col)
        label = map_label(
            table.column(label_col), positive_value=cfg.positive_value, negative_values=cfg.negative_values
        )
        if cfg.event_id:
            id_col = self._find(table, cfg.event_id, key="event_id", path=path, rows=rows)
            event_id = pc.cast(table.column(id_col), pa.string())
        else:
            name = Path(path).name
            event_id = pa.array([f"{name}:{i}" for i in range(1, table.num_rows + 1)], pa.string())
        if cfg.label_time_column:
            lt_col = self._find(table, cfg.label_time_column, key="label_time_column", path=path, rows=rows)
            label_time = table.column(lt_col)
        else:
            times = parse_times(event_time, cfg.time_format)
            delay = pa.scalar(round(cfg.label_delay_days * 86_400 * 1e6), pa.duration("us"))
            matured = pc.add(times, delay)
            label_time = pc.if_else(pc.is_null(label), pa.scalar(None, TS), matured)

        core = {"event_id": event_id, "event_time": event_time, "label": label, "label_time": label_time}
        others = [c for c in table.column_names if c not in core and c not in (time_col, label_col)]
        out = pa.table(
            {**core, **{c: table.column(c) for c in others}},
        )
        check_required(out, self.schema, path=path, rows=rows)
        out = select_contract(out, self.schema)
        leaked = set(cfg.drop) & set(out.column_names)
        if leaked:  # impossible after the checks in __init__; kept as the last line of defence
            raise RuntimeError(f"{path}: dropped column(s) {sorted(leaked)} reached the contract; a bug")
        return RawBatch(table=out, malformed=malformed, file_date=date_in_name(path))
