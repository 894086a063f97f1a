"""Shared pieces of the source adapters: the raw batch, whole-file rejection and a CSV reader."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines import storage
from pipelines.config import MISSING_MARKERS, SchemaConfig

CORE_COLUMNS = ("event_id", "event_time", "label", "label_time")


class FileRejected(Exception):
    """A landing file that cannot be read as a whole (e.g. a required column is missing).

    ``reason`` is a short code for the manifest; the message says what is wrong and how to fix it.
    ``rows`` is how many data rows the file holds, so that they are counted as quarantined.
    """

    def __init__(self, reason: str, message: str, rows: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.rows = rows


@dataclass
class RawBatch:
    """One landing file read and mapped onto the event-table columns, not yet type-checked."""

    table: pa.Table  # contract columns (strings for text sources); row order = file order
    line_numbers: pa.Array | None = None  # 1-based line of each row in the file, when known
    malformed: list[tuple[int | None, str]] = field(default_factory=list)  # (line, text) not parsed
    # For sources whose files are not one-per-day, the reference time for "future" checks is the run's.
    file_date: str | None = None

    @property
    def rows_read(self) -> int:
        return self.table.num_rows + len(self.malformed)


class SourceAdapter(Protocol):
    schema: SchemaConfig

    def list_files(self, landing: str) -> list[str]: ...

    def read(self, path: str) -> RawBatch: ...


def required_columns(schema: SchemaConfig) -> list[str]:
    """Columns a landing file must provide after mapping: the core, the entity key and every feature."""
    return ["event_id", "event_time", schema.entity_key, *schema.feature_columns, "label"]


def count_data_lines(data: bytes) -> int:
    """Data rows of a CSV text: non-empty lines after the header (for whole-file rejections)."""
    lines = [ln for ln in data.splitlines() if ln.strip()]
    return max(len(lines) - 1, 0)


def read_csv_strings(
    data: bytes,
    *,
    path: str,
    delimiter: str = ",",
    null_values: list[str] | None = None,
    typed: dict[str, pa.DataType] | None = None,
) -> tuple[pa.Table, list[tuple[int | None, str]]]:
    """Read CSV bytes; lines with the wrong field count are returned, not parsed.

    With ``typed`` (column -> Arrow type), a clean file is parsed straight to those types by Arrow's
    parallel converter (the fast path). If any value does not convert, the file is read again with every
    column as a string, so that a wrong value in one row cannot fail the whole file: each value is then
    coerced and checked per row. ``null_values`` are the missing-value markers (default
    :data:`pipelines.config.MISSING_MARKERS`: the empty cell, NA, N/A, NULL, NaN, ?, - ...).
    """
    if not data[:65536].strip() and not data.strip():
        raise FileRejected("empty_file", f"{path}: the file is empty (no header); nothing to load", 0)
    eol = data.find(b"\n")
    header = (data if eol < 0 else data[:eol]).decode("utf-8-sig", errors="replace").rstrip("\r")
    columns = next(csv.reader([header], delimiter=delimiter))
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise FileRejected(
            "duplicate_header",
            f"{path}: header repeats column(s) {dup}; names must be unique",
            count_data_lines(data),
        )
    malformed: list[tuple[int | None, str]] = []
    data, unterminated = split_unterminated_quotes(data, delimiter)

    def on_invalid(row: pacsv.InvalidRow) -> str:
        malformed.append((None if row.number is None else _original_line(row.number, unterminated), row.text))
        return "skip"

    def read(types: dict[str, pa.DataType]) -> pa.Table:
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(use_threads=True, block_size=16 << 20),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, invalid_row_handler=on_invalid, newlines_in_values=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                strings_can_be_null=True,
                null_values=list(MISSING_MARKERS) if null_values is None else null_values,
                quoted_strings_can_be_null=True,
            ),
        )

    as_text = {c: pa.string() for c in columns}
    found = [(n, text) for n, text in unterminated]
    if typed:
        try:
            return read({**as_text, **{c: t for c, t in typed.items() if c in as_text}}), found + malformed
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            malformed.clear()  # some value does not convert: the per-row path below finds which
    return read(as_text), found + malformed


def _open_quote(line: bytes, delimiter: str) -> bool:
    """Whether a quote opened at the start of a field is still open at the end of ``line`` (a quote inside
    an unquoted field, as in 5'10", is a literal character, for Arrow's parser as for Python's)."""
    text = line.decode("utf-8", errors="replace").rstrip("\r")
    try:
        list(csv.reader([text], delimiter=delimiter, strict=True))
    except csv.Error:
        return True
    return False


def split_unterminated_quotes(data: bytes, delimiter: str = ",") -> tuple[bytes, list[tuple[int, str]]]:
    """Take out the physical lines whose quotes do not close (an odd number of ``"``): values may not span
    lines here, so such a line is malformed on its own, and left in, the parser would read every line after
    it as one quoted value (one bad quote on line 12 swallowed 89 good rows). Returns the data without them
    and ``(line number, text)`` of each (line 1 is the header)."""
    if b'"' not in data:
        return data, []
    lines = data.split(b"\n")
    bad = [i for i, line in enumerate(lines) if line.count(b'"') % 2 and _open_quote(line, delimiter)]
    if not bad:
        return data, []
    drop = set(bad)
    kept = b"\n".join(line for i, line in enumerate(lines) if i not in drop)
    return kept, [(i + 1, lines[i].decode("utf-8", errors="replace").rstrip("\r")) for i in bad]


def _original_line(number: int, removed: list[tuple[int, str]]) -> int:
    """A line number of the data without ``removed`` lines, in the original file's numbering."""
    for line, _ in removed:  # ascending
        if line <= number:
            number += 1
    return number


def arrow_types(schema: SchemaConfig) -> dict[str, pa.DataType]:
    """Arrow types of the contract columns for the typed fast path (strings stay strings)."""
    kinds = {"float": pa.float64(), "int": pa.int64(), "timestamp": pa.timestamp("us", tz="UTC")}
    types = {c.name: kinds[c.type] for c in schema.columns if c.type in kinds}
    ts = pa.timestamp("us", tz="UTC")
    return {**types, "event_time": ts, "label_time": ts, "label": pa.int64()}


class CsvAdapter:
    """Landing CSVs that already carry the event-table column names (the synthetic source)."""

    def __init__(self, *, schema: SchemaConfig, pattern: str = "*.csv", delimiter: str = ",") -> None:
        self.schema = schema
        self.pattern = pattern
        self.delimiter = delimiter

    def list_files(self, landing: str) -> list[str]:
        return storage.list_files(landing, self.pattern)

    def read(self, path: str) -> RawBatch:
        data = storage.read_bytes(path)
        table, malformed = read_csv_strings(
            data, path=path, delimiter=self.delimiter, typed=arrow_types(self.schema)
        )
        check_required(table, self.schema, path=path, rows=table.num_rows + len(malformed))
        return RawBatch(
            table=select_contract(table, self.schema), malformed=malformed, file_date=date_in_name(path)
        )


def check_required(table: pa.Table, schema: SchemaConfig, *, path: str, rows: int) -> None:
    missing = [c for c in required_columns(schema) if c not in table.column_names]
    if missing:
        raise FileRejected(
            "missing_required_column",
            f"{path}: missing required column(s) {missing}; the file has {table.column_names}. "
            f"Add the column(s), or map them with source.generic.rename in params.yaml",
            rows,
        )


def select_contract(table: pa.Table, schema: SchemaConfig) -> pa.Table:
    """Keep the contract's columns in contract order; add an all-null label_time if absent."""
    cols = ["event_id", "event_time", schema.entity_key, *schema.feature_columns, "label", "label_time"]
    if "label_time" not in table.column_names:
        table = table.append_column("label_time", pa.nulls(table.num_rows, pa.string()))
    return table.select(cols)


def date_in_name(path: str) -> str | None:
    """The YYYY-MM-DD in a landing file's name (one file per day), else None."""
    import re

    m = re.search(r"(\d{4}-\d{2}-\d{2})", Path(path).name)
    return m.group(1) if m else None
