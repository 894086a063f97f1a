"""Shared pieces of the source adapters: the raw batch, whole-file rejection and a CSV reader."""

from __future__ import annotations

import codecs
import csv
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines.core import storage
from pipelines.core.config import MISSING_MARKERS, SchemaConfig

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


class BadLine(NamedTuple):
    """A physical line of a landing file that never became a row: kept for quarantine with its reason."""

    line: int | None  # 1-based line in the file (line 1 is the header), when known
    text: str  # the line as read; bytes invalid in the file's encoding as \\xNN escapes (recoverable)
    reason: str = "malformed_line"  # or invalid_encoding


@dataclass
class RawBatch:
    """One landing file read and mapped onto the event-table columns, not yet type-checked."""

    table: pa.Table  # contract columns (strings for text sources); row order = file order
    line_numbers: pa.Array | None = None  # 1-based line of each row in the file, when known
    malformed: list[BadLine] = field(default_factory=list)  # lines not parsed
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


def split_undecodable(data: bytes, encoding: str = "utf-8") -> tuple[bytes, list[BadLine]]:
    """The data as UTF-8 without the physical lines that are not valid in ``encoding``, and those lines
    (``invalid_encoding``, their bytes kept as ``\\xNN`` escapes). One stray byte costs its line, not the
    file: Arrow's reader stops at the first invalid UTF-8 value and names neither file nor line."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    if data.isascii():  # the common case, checked at memory speed
        return data, []
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        pass
    else:
        return (data, []) if utf8 else (text.encode("utf-8"), [])
    kept: list[bytes] = []
    bad: list[BadLine] = []
    for i, line in enumerate(data.split(b"\n")):
        try:
            decoded = line.decode(encoding)
        except UnicodeDecodeError:
            raw = line.rstrip(b"\r").decode("utf-8" if utf8 else "latin-1", errors="backslashreplace")
            bad.append(BadLine(i + 1, raw, "invalid_encoding"))
            continue
        kept.append(line if utf8 else decoded.encode("utf-8"))
    return b"\n".join(kept), bad


def read_csv_strings(
    data: bytes,
    *,
    path: str,
    delimiter: str = ",",
    null_values: list[str] | None = None,
    typed: dict[str, pa.DataType] | None = None,
    encoding: str = "utf-8",
) -> tuple[pa.Table, list[BadLine]]:
    """Read CSV bytes; lines with the wrong field count, or not valid in ``encoding``, are returned, not
    parsed (the rest of the file loads).

    With ``typed`` (column -> Arrow type), a clean file is parsed straight to those types by Arrow's
    parallel converter (the fast path). If any value does not convert, the file is read again with every
    column as a string, so that a wrong value in one row cannot fail the whole file: each value is then
    coerced and checked per row. ``null_values`` are the missing-value markers (default
    :data:`pipelines.core.config.MISSING_MARKERS`: the empty cell, NA, N/A, NULL, NaN, ?, - ...).
    """
    if not data[:65536].strip() and not data.strip():
        raise FileRejected("empty_file", f"{path}: the file is empty (no header); nothing to load", 0)
    raw, (data, undecodable) = data, split_undecodable(data, encoding)
    if undecodable and undecodable[0].line == 1:
        raise FileRejected(
            "invalid_encoding",
            f"{path}: the header line is not valid {encoding} ({undecodable[0].text[:80]!r}); set "
            "source.encoding in your profile (or params.yaml) to the file's encoding, e.g. latin-1 or cp1252",
            count_data_lines(raw),
        )
    eol = data.find(b"\n")
    header = (data if eol < 0 else data[:eol]).decode("utf-8-sig", errors="replace").rstrip("\r")
    columns = next(csv.reader([header], delimiter=delimiter))
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise FileRejected(
            "duplicate_header",
            f"{path}: header repeats column(s) {dup}; names must be unique",
            count_data_lines(raw),
        )
    malformed: list[BadLine] = []
    data, unterminated = split_unterminated_quotes(data, delimiter)

    def original(number: int | None) -> int | None:  # Arrow counts the lines of the data left to it
        return _original_line(_original_line(number, unterminated), undecodable)

    def on_invalid(row: pacsv.InvalidRow) -> str:
        malformed.append(BadLine(original(row.number), row.text))
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
    found = [*undecodable, *(b._replace(line=_original_line(b.line, undecodable)) for b in unterminated)]
    found.sort(key=lambda b: b.line or 0)
    table = None
    if typed:
        try:
            table = read({**as_text, **{c: t for c, t in typed.items() if c in as_text}})
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            malformed.clear()  # some value does not convert: the per-row path below finds which
    if table is None:
        table = read(as_text)
    return table, found + _number_lines(malformed, data, original)


def _number_lines(
    bad: list[BadLine], data: bytes, original: Callable[[int | None], int | None]
) -> list[BadLine]:
    """Line numbers for the lines Arrow's multi-threaded reader reports without one, found by their text
    (the n-th report of a text is its n-th occurrence)."""
    if all(b.line is not None for b in bad):
        return bad
    where: dict[str, list[int]] = {}
    for i, line in enumerate(data.split(b"\n")):
        text = line.rstrip(b"\r").decode("utf-8", errors="replace")
        where.setdefault(text, []).append(i + 1)
    taken: Counter[str] = Counter()
    out = []
    for b in bad:
        if b.line is None and taken[b.text] < len(where.get(b.text, [])):
            b = b._replace(line=original(where[b.text][taken[b.text]]))
            taken[b.text] += 1
        out.append(b)
    return out


def _open_quote(line: bytes, delimiter: str) -> bool:
    """Whether a quote opened at the start of a field is still open at the end of ``line`` (a quote inside
    an unquoted field, as in 5'10", is a literal character, for Arrow's parser as for Python's)."""
    text = line.decode("utf-8", errors="replace").rstrip("\r")
    try:
        list(csv.reader([text], delimiter=delimiter, strict=True))
    except csv.Error:
        return True
    return False


def split_unterminated_quotes(data: bytes, delimiter: str = ",") -> tuple[bytes, list[BadLine]]:
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
    return kept, [BadLine(i + 1, lines[i].decode("utf-8", errors="replace").rstrip("\r")) for i in bad]


def _original_line(number: int | None, removed: list[BadLine]) -> int | None:
    """A line number of the data without ``removed`` lines, in the original file's numbering."""
    if number is None:
        return None
    for bad in removed:  # ascending
        if bad.line is not None and bad.line <= number:
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

    def __init__(
        self, *, schema: SchemaConfig, pattern: str = "*.csv", delimiter: str = ",", encoding: str = "utf-8"
    ) -> None:
        self.schema = schema
        self.pattern = pattern
        self.delimiter = delimiter
        self.encoding = encoding

    def list_files(self, landing: str) -> list[str]:
        return storage.list_files(landing, self.pattern)

    def read(self, path: str) -> RawBatch:
        data = storage.read_bytes(path)
        table, malformed = read_csv_strings(
            data, path=path, delimiter=self.delimiter, typed=arrow_types(self.schema), encoding=self.encoding
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
