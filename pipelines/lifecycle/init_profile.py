"""``loopline init``: propose a complete params profile for a new CSV/Parquet data set.

Pure inference over a sample of the file (read once with pandas/pyarrow at the edge):

* types: every column is read as text and classified as int, float, timestamp, category or an id;
  numbers get a [min, max] range with headroom, categories an ``allowed`` vocabulary when small and
  ``high_cardinality`` (hashed, ``features.hash_buckets`` sized to the largest vocabulary) when large;
  ``nullable`` follows the observed missingness;
* the event table mapping (``source.kind: generic``): time column and its format, label column and
  positive value, an event id column when one is unique, the entity key;
* sampling/validation sections sized to the data: row counts per day, split windows from the time range;
* leakage warnings, each with its evidence:

  - ``predicts_label``: one column alone separates the labels (single-column ROC-AUC, the feature
    stage's own estimator in pipelines/features/leakage.py: categories target-encoded out of sample);
  - ``constant_within_label``: the column takes one value per label (a status that *is* the outcome);
  - ``after_event``: a timestamp mostly later than the event time (recorded after the event);
  - ``id_label_conflict`` / ``id_memorizes_label``: an id repeating across the label boundary (the
    same id carrying both labels at the same time: one event recorded before and after its outcome),
    or a repeating id whose rows always carry one label (a model would memorize it);
  - ``suspicious_name``: names such as ``*status*``, ``*outcome*``, ``*_date`` (weak: name only).

Strong evidence (from the data) puts the column in ``source.generic.drop`` with its reason, and leaves
it out of ``schema.columns``: a leaky input silently inflates every offline metric and fails in
production, while a wrongly dropped column costs a little accuracy and is one line to restore. Weak
evidence (a name only) is a commented suggestion; the column stays a feature.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import logging
import math
import re
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipelines.core import storage
from pipelines.core.config import MISSING_MARKERS, Params, parse_params
from pipelines.core.errors import InputError
from pipelines.features.leakage import single_feature_auc

__all__ = [
    "LeakWarning",
    "Proposal",
    "infer_profile",
    "read_sample",
    "render_profile",
    "write_profile",
]

log = logging.getLogger(__name__)

# The generic adapter's missing-value markers (source.generic.null_values): inference must see exactly what
# ETL will see, and the profile lists them so that a user can change them.
NULL_TOKENS = list(MISSING_MARKERS)
NUMERIC_LOOKING = 0.9  # a category whose values are mostly numbers: warned (a missing marker we do not know?)
RESERVED = {"event_id", "event_time", "label", "label_time"}
SERIES = "series"  # the constant entity of a single time series
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ID_NAME_RE = re.compile(r"(^id$|_id$|^id_|Id$|_key$|^uuid|_uuid$|_no$|_number$)", re.IGNORECASE)
ENTITY_NAME_RE = re.compile(
    r"(customer|user|account|card|client|member|device|booker|merchant|patient)", re.I
)
# an attribute of an entity, not its key: customer_type, account_status, device_class
ATTRIBUTE_NAME_RE = re.compile(r"(_type|_category|_class|_segment|_group|_kind|_status|_level|_tier)$", re.I)
MIN_ENTITY_VALUES = 20  # fewer distinct values are a category, too few to make per-entity windows worth it
SUSPICIOUS_NAME_RE = re.compile(
    r"(status|outcome|result|resolution|resolved|closed|cancel|refund|chargeback|decision|approved|"
    r"paid|settled|reason|verdict|final|after|post_)",
    re.IGNORECASE,
)
DATE_NAME_RE = re.compile(r"(_date$|_at$|_time$|_ts$|date$)", re.IGNORECASE)
COMMON_TIME_FORMATS = [
    "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M",
    "%d/%m/%Y", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y",
    "%d-%m-%Y", "%Y%m%d", "%Y%m%d%H%M%S",
]  # fmt: skip

STRONG_AUC = 0.97  # the feature stage's default features.leakage.max_single_auc: it would fail the build
WARN_AUC = 0.85  # "suspicious": strong for one input (a same-day outcome category scored 0.86-0.89)
DOMINANT_AUC, DOMINANT_MARGIN = 0.75, 0.12  # one column far ahead of every other: most of the signal alone
LAG_HINT = ("if it is only known after the event, its earlier values are still legitimate: feed yesterday's value "
            "(a lag computed upstream) instead of today's")  # fmt: skip
MAX_ALLOWED_VOCAB = 50  # an `allowed` list is written for smaller vocabularies
HIGH_CARDINALITY = 30  # more distinct values than this: hashed (features.onehot_max_categories default)


@dataclass(frozen=True)
class LeakWarning:
    column: str
    kind: str  # predicts_label | constant_within_label | after_event | id_label_conflict | ...
    detail: str
    strong: bool  # evidence from the data: dropped by default; weak (name only): a suggestion

    def line(self) -> str:
        action = "DROPPED" if self.strong else "suggestion"
        return f"[{action}] {self.column}: {self.kind}: {self.detail}"


@dataclass
class ColumnInfo:
    raw: str
    name: str  # after sanitizing (rename)
    kind: str  # int | float | timestamp | category | id | bool_text
    missing: float
    n_unique: int
    role: str = "feature"  # feature | time | label | event_id | entity | dropped | excluded
    note: str = ""


@dataclass
class Proposal:
    name: str
    params: dict[str, Any]
    warnings: list[LeakWarning]
    columns: list[ColumnInfo]
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # type findings worth a look (not leakage)

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.name,
            "stats": self.stats,
            "warnings": [asdict(w) for w in self.warnings],
            "notes": list(self.notes),
            "dropped": list(self.params["source"]["generic"]["drop"]),
            "columns": [asdict(c) for c in self.columns],
        }


# --------------------------------------------------------------------------- reading (the only I/O)


def read_sample(path: str | Path, *, max_rows: int = 200_000, delimiter: str | None = None) -> pd.DataFrame:
    """The first ``max_rows`` rows of a CSV (optionally .gz/.zip) or Parquet file, every value as text.

    Missing values are the generic adapter's tokens, so the profile matches what ETL will load.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--from {path}: no such file")
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        batches = []
        got = 0
        for batch in pf.iter_batches(batch_size=65_536):
            batches.append(batch)
            got += batch.num_rows
            if got >= max_rows:
                break
        import pyarrow as pa

        frame = pa.Table.from_batches(batches, schema=pf.schema_arrow).to_pandas().head(max_rows)
        out = pd.DataFrame(index=frame.index)
        for c in frame.columns:
            s = frame[c]
            if pd.api.types.is_datetime64_any_dtype(s):
                text = s.dt.strftime("%Y-%m-%dT%H:%M:%S%z").where(s.notna(), None)
                if s.dt.tz is None:
                    text = s.dt.strftime("%Y-%m-%dT%H:%M:%S").where(s.notna(), None)
            else:
                text = s.astype(object).where(s.notna(), None).map(lambda v: None if v is None else str(v))
            out[str(c)] = text
        return out
    sep = delimiter
    if sep is None:
        sep = "\t" if ".tsv" in suffixes else ","
    kwargs: dict[str, Any] = dict(
        dtype=str, keep_default_na=False, na_values=NULL_TOKENS, nrows=max_rows, sep=sep
    )
    if suffixes and suffixes[-1] == ".zip":
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")]
            if len(members) != 1:
                raise InputError(f"--from {path}: a zip must hold exactly one data file, found {members}")
            with zf.open(members[0]) as fh:
                data = fh.read()
        encoding, note = detect_encoding(data[:ENCODING_SAMPLE_BYTES])
        frame = pd.read_csv(io.BytesIO(data), encoding=encoding, encoding_errors="replace", **kwargs)
    else:
        opener = gzip.open if suffixes and suffixes[-1] == ".gz" else open
        with opener(path, "rb") as fh:
            encoding, note = detect_encoding(fh.read(ENCODING_SAMPLE_BYTES))
        frame = pd.read_csv(path, compression="infer", encoding=encoding, encoding_errors="replace", **kwargs)
    frame.attrs.update(encoding=encoding, encoding_note=note)
    return frame


ENCODING_SAMPLE_BYTES = 8 << 20


def detect_encoding(sample: bytes) -> tuple[str, str | None]:
    """The text encoding of a CSV's first bytes, and a note when it is not plain UTF-8.

    UTF-8 when every line is valid UTF-8, or when some non-ASCII lines are (a stray byte in a UTF-8 file
    costs its line in ETL, quarantined as invalid_encoding); a file whose non-ASCII lines are never valid
    UTF-8 is a single-byte export: Windows-1252 when every byte is defined there, else Latin-1.
    """
    if sample.isascii():
        return "utf-8", None
    cut = sample.rfind(b"\n")
    sample = sample if cut < 0 else sample[:cut]  # never judge a character cut at the sample's end
    try:
        sample.decode("utf-8")
        return "utf-8", None
    except UnicodeDecodeError:
        pass
    wide = [line for line in sample.split(b"\n") if not line.isascii()]
    valid = 0
    for line in wide:
        try:
            line.decode("utf-8")
            valid += 1
        except UnicodeDecodeError:
            pass
    if valid:
        return "utf-8", (
            f"{len(wide) - valid} of {len(wide)} lines with non-ASCII bytes in the first "
            f"{len(sample) >> 20 or 1} MiB are not valid UTF-8: kept utf-8; ETL quarantines those lines "
            "(invalid_encoding). If the file mixes encodings, re-export it as UTF-8"
        )
    try:
        sample.decode("cp1252")
        encoding = "cp1252"
    except UnicodeDecodeError:
        encoding = "latin-1"
    return encoding, (
        f"the file is not UTF-8 ({len(wide)} lines with bytes invalid in UTF-8, none valid): read as "
        f"{encoding} (source.encoding); change it if the accents look wrong"
    )


# --------------------------------------------------------------------------- inference helpers


def _sanitize(name: str, taken: set[str]) -> str:
    out = re.sub(r"[^A-Za-z0-9_]", "_", name.strip()) or "column"
    if not re.match(r"^[A-Za-z_]", out):
        out = f"c_{out}"
    if out in RESERVED:
        out = f"{out}_raw"
    base, i = out, 2
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    return out


def _numeric(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s.str.strip(), errors="coerce")


def _parse_time(s: pd.Series, time_format: str | None) -> pd.Series:
    """Same semantics as pipelines.core.timeparse (ISO 8601 or strptime), on pandas."""
    if time_format:
        return pd.to_datetime(s, format=time_format, errors="coerce", utc=True)
    return pd.to_datetime(s, format="ISO8601", errors="coerce", utc=True)


def detect_time_format(s: pd.Series) -> tuple[str | None, float]:
    """(format, share of non-null values it parses): ISO 8601 (None) first, then common formats."""
    present = s.dropna()
    if present.empty:
        return None, 0.0
    probe = present.head(5000)
    best: tuple[str | None, float] = (None, float(_parse_time(probe, None).notna().mean()))
    if best[1] >= 0.999:
        return best
    for fmt in COMMON_TIME_FORMATS:
        share = float(_parse_time(probe, fmt).notna().mean())
        if share > best[1] + 1e-9:
            best = (fmt, share)
        if share >= 0.999:
            break
    return best


def _nice_ceiling(x: float) -> float:
    """x rounded up to two significant digits (a readable bound)."""
    if x == 0:
        return 0.0
    mag = 10 ** math.floor(math.log10(abs(x)) - 1)
    return float(math.ceil(x / mag) * mag) if x > 0 else float(math.floor(x / mag) * mag)


def numeric_range(values: pd.Series, *, is_int: bool) -> tuple[float | int, float | int]:
    """[min, max] with headroom: the observed span again above, 0 as floor for non-negative columns."""
    lo, hi = float(values.min()), float(values.max())
    span = max(hi - lo, abs(hi), 1.0)
    low = 0.0 if lo >= 0 else -_nice_ceiling(-(lo - span))
    high = _nice_ceiling(hi + span)
    if is_int:
        return math.floor(low), math.ceil(high)
    return low, high


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _classify(s: pd.Series, n_rows: int) -> tuple[str, pd.Series | None]:
    """kind and (for numbers) the parsed values."""
    present = s.dropna()
    if present.empty:
        return "category", None
    num = _numeric(present)
    if num.notna().all():
        as_int = bool(np.all(np.isclose(num, np.round(num)))) and not present.str.contains(r"[.eE]").any()
        return ("int" if as_int else "float"), _numeric(s)
    if (
        present.str.len().median() >= 8
        and present.str.contains(r"\d{4}|\d{1,2}[/.-]\d{1,2}[/.-]\d").mean() > 0.95
    ):
        _fmt, share = detect_time_format(present)
        if share >= 0.95:
            return "timestamp", None
    return "category", None


def numbers_typed_as_categories(df: pd.DataFrame, infos: Mapping[str, ColumnInfo]) -> list[str]:
    """A note for each category column whose values are mostly numbers: the others are likely a missing-value
    marker the profile does not know, and the column would be hashed as text instead of used as a number."""
    notes = []
    for raw, info in infos.items():
        if info.kind != "category":
            continue
        present = df[raw].dropna().str.strip()
        if present.empty:
            continue
        num = pd.to_numeric(present, errors="coerce")
        share = float(num.notna().mean())
        if share >= NUMERIC_LOOKING:
            others = present[num.isna()].value_counts().head(3)
            notes.append(
                f"{raw}: {share:.1%} of its values are numbers but {', '.join(map(repr, others.index))} are not, "
                "so it is typed as a category; if they mark missing values, add them to "
                "source.generic.null_values and run init again"
            )
    return notes


def _echoes_label(col: pd.Series, *, positive: str, label: str) -> str | None:
    """A category value that repeats the label's own words (the positive value 'rain' as a weather value
    'rain'; a 'returned' status beside the label returned = yes), or None."""
    words = {w for w in re.split(r"[^a-z]+", f"{positive} {label}".lower()) if len(w) >= 3}
    words -= {
        "yes",
        "true",
        "false",
        "positive",
        "label",
        "target",
        "class",
        "the",
        "and",
        "flag",
        "tomorrow",
    }
    if not words:
        return None
    for value in col.dropna().astype(str).str.strip().str.lower().unique()[:500]:
        if set(re.split(r"[^a-z]+", value)) & words:
            return str(value)
    return None


def _looks_like_id(info_name: str, n_unique: int, n_present: int, kind: str) -> bool:
    if n_present == 0:
        return False
    ratio = n_unique / n_present
    if ID_NAME_RE.search(info_name) and ratio > 0.02:
        return True
    return kind == "category" and ratio > 0.5 and n_unique > 50


# --------------------------------------------------------------------------- the proposal


SMOOTH_METRIC_BELOW_POSITIVES = 500  # expected valid-window positives under which early stopping uses logloss


def infer_profile(
    df: pd.DataFrame,
    *,
    label: str,
    time: str,
    positive: str | None = None,
    name: str = "mydata",
    entity: str | None = None,
    time_format: str | None = None,
    landing: str | None = None,
    pattern: str = "*.csv",
    file_format: str = "csv",
    delimiter: str = ",",
    seed: int = 42,
) -> Proposal:
    """Propose a complete params profile for ``df`` (every value text, as :func:`read_sample` returns)."""
    for arg, col in (("--label", label), ("--time", time), ("--entity", entity)):
        if col is not None and col not in df.columns:
            raise InputError(f"{arg} {col!r}: no such column; the file has {list(df.columns)}")
    if label == time:
        raise InputError(f"--label and --time name the same column {label!r}; they must differ")
    n = len(df)
    if n < 50:
        raise InputError(f"the sample has {n} rows; init needs at least 50 to infer anything useful")
    df = df.copy()
    for c in df.columns:  # parquet samples may hold non-str objects; everything is text from here
        df[c] = df[c].astype(object).where(df[c].notna(), None)
        df[c] = df[c].map(lambda v: None if v is None else str(v))

    # --- the label
    lab = df[label].str.strip()
    values = lab.dropna().value_counts()
    if values.empty:
        raise InputError(f"--label {label!r}: every value is missing")
    if positive is None:
        lowered = {str(v).lower(): v for v in values.index}
        for cand in ("1", "true", "yes", "y", "t", "positive", "fraud", "1.0"):
            if cand in lowered:
                positive = str(lowered[cand])
                break
        else:
            if len(values) != 2:
                raise InputError(
                    f"--label {label!r} has {len(values)} distinct values ({list(values.index[:6])}); "
                    "pass --positive VALUE to say which one is the positive class"
                )
            positive = str(values.index[-1])  # the minority class
    if positive not in set(values.index):
        raise InputError(
            f"--positive {positive!r} never occurs in {label!r}; values seen: {list(values.index[:10])}"
        )
    negatives = sorted(str(v) for v in values.index if v != positive)
    known = lab.notna().to_numpy()
    y_all = (lab == positive).to_numpy()
    label_rate = float(y_all[known].mean())

    # --- the time column
    if time_format is None:
        time_format, share = detect_time_format(df[time])
        if share < 0.95:
            raise InputError(
                f"--time {time!r}: only {share:.0%} of the values parse as ISO 8601 or a common format "
                f"(e.g. {df[time].dropna().head(3).tolist()}); pass --time-format, e.g. '%d/%m/%Y %H:%M'"
            )
    times = _parse_time(df[time], time_format)
    if times.isna().mean() > 0.05:
        raise InputError(
            f"--time {time!r} --time-format {time_format!r}: {times.isna().mean():.0%} of values do not "
            f"parse (e.g. {df.loc[times.isna(), time].head(3).tolist()}); fix the format"
        )
    days = times.dt.floor("D")
    per_day = days.value_counts()
    first, last = times.min(), times.max()
    span_days = max(int((last.floor("D") - first.floor("D")).days) + 1, 1)
    date_only = bool((times.dropna().dt.hour == 0).all() and (times.dropna().dt.minute == 0).all())

    # --- columns
    taken = {"event_id", "event_time", "label", "label_time"}
    infos: dict[str, ColumnInfo] = {}
    parsed: dict[str, pd.Series] = {}
    for raw in df.columns:
        if raw in (label, time):
            infos[raw] = ColumnInfo(raw, raw, "core", float(df[raw].isna().mean()), int(df[raw].nunique()),
                                    role="label" if raw == label else "time")  # fmt: skip
            continue
        s = df[raw]
        kind, nums = _classify(s, n)
        nm = _sanitize(raw, taken)
        taken.add(nm)
        infos[raw] = ColumnInfo(raw, nm, kind, round(float(s.isna().mean()), 4), int(s.nunique()))
        if nums is not None:
            parsed[raw] = nums

    warnings: list[LeakWarning] = []
    drop: list[str] = []
    notes = numbers_typed_as_categories(df, infos)
    if df.attrs.get("encoding_note"):
        notes.append(str(df.attrs["encoding_note"]))

    def strong(col: str, kind: str, detail: str) -> None:
        warnings.append(LeakWarning(col, kind, detail, True))
        if col not in drop:
            drop.append(col)
        infos[col].role = "dropped"
        infos[col].note = kind

    # --- ids: event id, entity, and ids that repeat across the label boundary
    event_id: str | None = None
    entity_col = entity
    for raw, info in infos.items():
        if info.kind == "core" or raw == entity:
            continue
        present = df[raw].dropna()
        if not _looks_like_id(raw, info.n_unique, len(present), info.kind) or info.kind == "float":
            continue
        if (
            info.n_unique == len(present) == n
            and event_id is None
            and (ID_NAME_RE.search(raw) or info.kind != "int")
        ):
            event_id = raw
            info.role = "event_id"
            continue
        # A repeating id: does the same id carry both labels at the same time (a record of the event
        # before and after its outcome), or one label always (memorizable)?
        frame = pd.DataFrame({"id": df[raw], "t": times, "y": y_all, "k": known}).dropna(subset=["id"])
        frame = frame[frame["k"]]
        rep = frame[frame.duplicated("id", keep=False)]
        if rep.empty:
            continue
        same_time = rep.groupby(["id", "t"])["y"].agg(["min", "max", "size"])
        same_time = same_time[same_time["size"] > 1]
        conflict = int((same_time["min"] != same_time["max"]).sum())
        if conflict > 0 and conflict >= 0.01 * len(same_time):
            strong(raw, "id_label_conflict",
                   f"{conflict} id(s) carry both labels at the same {time} (e.g. "
                   f"{same_time[same_time['min'] != same_time['max']].index[0][0]!r}): the same event recorded "
                   "before and after its outcome; deduplicate upstream, keep the first record")  # fmt: skip
            continue
        per_id = rep.groupby("id")["y"].agg(["min", "max"])
        pure = float((per_id["min"] == per_id["max"]).mean())
        pos_ids = per_id[per_id["max"] == 1]
        pure_pos = float((pos_ids["min"] == 1).mean()) if len(pos_ids) else 0.0
        ratio = info.n_unique / max(len(present), 1)
        if entity_col is None and ratio < 0.5 and (ENTITY_NAME_RE.search(raw) or ID_NAME_RE.search(raw)):
            entity_col = raw
            info.role = "entity"
            continue
        if ratio >= 0.5 and len(pos_ids) >= 5 and pure_pos > 0.95:
            strong(raw, "id_memorizes_label",
                   f"{info.n_unique} ids over {len(present)} rows, and {pure_pos:.0%} of the repeated ids with a "
                   f"positive are positive on every row: the id repeats across the train/test boundary and a "
                   "model would memorize its label")  # fmt: skip
            continue
        if ratio >= 0.5:
            info.role = "excluded"
            info.note = f"near-unique id ({info.n_unique} values over {len(present)} rows; {pure:.0%} pure)"
    for raw, info in infos.items():  # a numeric-looking id (merchant 1043) is a category, not a quantity
        if info.role == "feature" and info.kind == "int" and _looks_like_id(raw, info.n_unique, n, "int"):
            info.kind = "category"
    if entity_col is None:
        cands = [
            (raw, i) for raw, i in infos.items()
            if i.kind in ("category", "int") and i.role in ("feature", "excluded")
            and MIN_ENTITY_VALUES <= i.n_unique < n and ENTITY_NAME_RE.search(raw)
            and not ATTRIBUTE_NAME_RE.search(raw)
        ]  # fmt: skip
        if cands:
            entity_col = max(cands, key=lambda c: c[1].n_unique)[0]
            infos[entity_col].role = "entity"
        # else: one time series (no customer/account/card id repeats): a constant entity, added by the adapter,
        # so that the per-entity windows are the series' own rolling windows, still strictly point-in-time
    elif entity is not None:
        infos[entity].role = "entity"

    # --- timestamps recorded after the event
    for raw, info in infos.items():
        if info.kind != "timestamp" or info.role != "feature":
            continue
        fmt, _ = detect_time_format(df[raw])
        other = _parse_time(df[raw], fmt)
        both = other.notna() & times.notna()
        if not both.any():
            info.role, info.note = "excluded", "timestamp (never present with the event time)"
            continue
        later = float((other[both] > times[both]).mean())
        present_pos = float(other.notna()[known & y_all].mean()) if (known & y_all).any() else 0.0
        present_neg = float(other.notna()[known & ~y_all].mean()) if (known & ~y_all).any() else 0.0
        if later > 0.5:
            strong(raw, "after_event",
                   f"{later:.0%} of its values are later than {time} (present on {present_pos:.0%} of positives vs "
                   f"{present_neg:.0%} of negatives): recorded after the event, unknown when the model scores it. "
                   "If it is when the label became known, set source.generic.label_time_column to it")  # fmt: skip
        else:
            info.role = "excluded"
            info.note = "timestamp: not a feature by itself (derive an age in days upstream to use it)"

    # --- columns that predict the label alone
    y_known = y_all[known]
    aucs: dict[str, float] = {}
    for raw, info in infos.items():
        if info.role != "feature":
            continue
        col = df[raw][known]
        if info.kind in ("int", "float"):
            auc = single_feature_auc(parsed[raw][known].to_numpy(dtype=float), y_known, kind="numeric")
        else:
            auc = single_feature_auc(col.to_numpy(dtype=object), y_known, kind="categorical", seed=seed)
        info.note = f"single-column AUC {auc:.3f}" if not np.isnan(auc) else ""
        text = col.fillna("<missing>")
        modes = [text[y_known == cls].value_counts() for cls in (True, False)]
        if all(len(m) == 1 for m in modes) and modes[0].index[0] != modes[1].index[0]:
            strong(raw, "constant_within_label",
                   f"always {modes[0].index[0]!r} when {label} = {positive} and {modes[1].index[0]!r} otherwise: "
                   "the column restates the label")  # fmt: skip
            continue
        if not np.isnan(auc) and auc >= STRONG_AUC:
            strong(raw, "predicts_label",
                   f"predicts {label} alone with single-column ROC-AUC {auc:.4f} (>= {STRONG_AUC}; the feature "
                   "stage fails the build above features.leakage.max_single_auc): a label in disguise")  # fmt: skip
            continue
        aucs[raw] = auc
        if not np.isnan(auc) and auc >= WARN_AUC:
            warnings.append(LeakWarning(raw, "predicts_label",
                            f"single-column ROC-AUC {auc:.4f}: very strong for one input; check that it is known "
                            f"when the model scores; {LAG_HINT}", False))  # fmt: skip
        echoed = _echoes_label(col, positive=positive, label=label) if info.kind == "category" else None
        if echoed:
            warnings.append(LeakWarning(raw, "echoes_label",
                            f"its value {echoed!r} repeats the label's own words ({label} = {positive}): often the "
                            f"outcome itself, recorded the same day; {LAG_HINT}", False))  # fmt: skip
        if SUSPICIOUS_NAME_RE.search(raw) or (DATE_NAME_RE.search(raw) and info.kind != "timestamp"):
            warnings.append(LeakWarning(raw, "suspicious_name",
                            "its name suggests a value written after the outcome (status/outcome/date); if so, "
                            f"add it to source.generic.drop and remove {info.name} from schema.columns", False))  # fmt: skip

    # --- one column far ahead of all others: most of the signal alone (the post-outcome call duration that
    # alone beat the whole model scored 0.79 single-column where the next column scored ~0.6)
    ranked = sorted(
        ((a, c) for c, a in aucs.items() if not np.isnan(a) and infos[c].role == "feature"), reverse=True
    )
    if len(ranked) >= 2 and ranked[0][0] >= DOMINANT_AUC and ranked[0][0] - ranked[1][0] >= DOMINANT_MARGIN:
        (top, col), (second, other) = ranked[0], ranked[1]
        if not any(w.column == col and w.kind == "predicts_label" for w in warnings):
            warnings.append(LeakWarning(col, "dominant",
                            f"single-column ROC-AUC {top:.4f}, far ahead of the next column ({other}: {second:.4f}): "
                            f"it carries most of the signal alone; check that it is known when the model scores "
                            f"(a duration or status measured during the outcome is not); {LAG_HINT}", False))  # fmt: skip

    # --- the schema
    rename = {raw: i.name for raw, i in infos.items() if i.kind != "core" and raw != i.name}
    constants: dict[str, str] = {}
    columns: list[dict[str, Any]] = []
    if entity_col is None:
        entity_name = _sanitize(SERIES, {i.name for i in infos.values()} | RESERVED)
        constants[entity_name] = "all"
        columns.append({"name": entity_name, "type": "string", "nullable": False,
                        "description": "one series: no column identifies an entity, so every row belongs to this "
                        "constant one (source.generic.constants); pass --entity COL if one does"})  # fmt: skip
    else:
        entity_name = infos[entity_col].name
    hash_vocab = 0
    for raw, info in infos.items():
        if info.role not in ("feature", "entity"):
            continue
        s = df[raw]
        spec: dict[str, Any] = {"name": info.name}
        if info.role == "entity":
            spec.update(type="string", nullable=bool(s.isna().any()), high_cardinality=True,
                        description=f"the entity key ({info.n_unique} values in the sample)")  # fmt: skip
            columns.insert(0, spec)
            continue
        nullable = bool(s.isna().any())
        if info.kind in ("int", "float"):
            vals = parsed[raw].dropna()
            low, high = numeric_range(vals, is_int=info.kind == "int")
            spec.update(type=info.kind, nullable=nullable, min=low, max=high,
                        description=f"observed {vals.min():g}..{vals.max():g}, missing {info.missing:.1%}")  # fmt: skip
        else:
            spec.update(type="category", nullable=nullable)
            if info.n_unique > HIGH_CARDINALITY:
                spec["high_cardinality"] = True
                hash_vocab = max(hash_vocab, info.n_unique)
            elif info.n_unique <= MAX_ALLOWED_VOCAB:
                spec["allowed"] = sorted(str(v) for v in s.dropna().unique())
            spec["description"] = f"{info.n_unique} values, missing {info.missing:.1%}"
        columns.append(spec)
    if len(columns) < 2:
        raise InputError("no feature column left after the leakage checks; see the warnings")
    hash_buckets = int(min(4096, max(32, _pow2_at_least(max(hash_vocab // 2, 1)))))

    # --- sampling: windows from the time range (calendar days, counted back from the newest day)
    test_days = max(1, round(span_days * 0.15))
    valid_days = max(1, round(span_days * 0.15))
    gap_days = 1 if span_days >= 30 else 0
    train_days = None
    # Early stopping and the study watch one metric on the valid window. PR-AUC over a few hundred positives
    # is a noisy step function: on the Seattle daily series (219 valid rows, ~90 rainy days) aucpr picked
    # trees that stopped at round 3-20 and scored test ROC-AUC 0.77-0.82 over three seeds, logloss
    # 0.81-0.82 (hand-built 0.82); on hotel bookings (~3,500 valid positives) aucpr did as well or better.
    valid_positives = int(known.sum() * label_rate * valid_days / span_days)
    eval_metric = "logloss" if valid_positives < SMOOTH_METRIC_BELOW_POSITIVES else "aucpr"
    label_maturity_days = 0  # labels are known at event time unless label_time_column/delay says otherwise

    # --- validation sized to the rows per day
    q05 = float(per_day.quantile(0.05))
    rows_day_median = float(per_day.median())
    lag_hours = ((days + pd.Timedelta(days=1)) - times).groupby(days).min().dt.total_seconds() / 3600
    # every day of the sample passes the bounds, the partial first and last day of an export included (a
    # flights file cut at midnight local time leaves 88 rows and a 21 h lag on its last UTC day): the first
    # run on the very data init read is green, and the user tightens them for daily loads if they like
    typical_lag = math.ceil(float(lag_hours.quantile(0.99)) + 6)
    freshness = (
        48.0
        if date_only
        else float(min(168.0, max(12.0, typical_lag, math.ceil(float(lag_hours.max()) + 1))))
    )
    if rows_day_median >= 500:
        min_rate, max_rate = round(label_rate / 4, 4), round(min(1.0, label_rate * 4), 4)
    else:  # small days: a partition's label rate is noise
        min_rate, max_rate = 0.0, 1.0
    max_null = max([i.missing for i in infos.values() if i.role == "feature"] + [0.0])

    slices = [
        infos[raw].name for raw, i in infos.items()
        if i.role == "feature" and i.kind == "category" and 2 <= i.n_unique <= 12
    ][:3]  # fmt: skip
    numeric_cols = [i.name for i in infos.values() if i.role == "feature" and i.kind in ("int", "float")]
    value_col = next(
        (c for c in numeric_cols if re.search(r"amount|price|value|total|sum|rate|adr", c, re.I)), None
    )
    window_set = ["1d", "7d", "30d"] if span_days >= 30 else ["1h", "1d", "7d"]

    d = Params.model_validate({"schema": {"columns": [{"name": "x", "type": "float"}]}})  # the defaults
    n_rows_total = n
    params: dict[str, Any] = {
        "seed": seed,
        "source": {
            "kind": "generic",
            "landing": landing,
            "encoding": df.attrs.get("encoding", "utf-8"),
            "generic": {
                "format": file_format,
                "pattern": pattern,
                "delimiter": delimiter,
                "null_values": NULL_TOKENS,
                "constants": constants,
                "rename": rename,
                "event_id": event_id,
                "time_column": time,
                "time_format": time_format,
                "label_column": label,
                "positive_value": positive,
                "negative_values": negatives,
                "label_time_column": None,
                "label_delay_days": 0.0,
                "drop": drop,
            },
        },
        "schema": {"entity_key": entity_name, "label_values": [0, 1], "columns": columns},
        "etl": d.etl.model_dump(mode="json"),
        "validation": {
            "min_rows_per_partition": max(1, min(int(q05 * 0.25), int(per_day.min()))),
            "max_rows_per_partition": max(100, int(per_day.max() * 10)),
            "max_null_fraction": round(min(1.0, max_null + 0.1), 2),
            "min_label_rate": min_rate,
            "max_label_rate": max_rate,
            "freshness_max_lag_hours": freshness,
            "fail_on": "critical",
        },
        "sampling": {
            **d.sampling.model_dump(mode="json"),
            "label_maturity_days": label_maturity_days,
            "test_days": test_days,
            "valid_days": valid_days,
            "gap_days": gap_days,
            "train_days": train_days,
            "importance": {
                **d.sampling.importance.model_dump(mode="json"),
                "column": slices[0] if slices else "channel",
            },
        },
        "labeling": {
            **d.labeling.model_dump(mode="json"),
            # The shipped LFs are card-payment heuristics; the cross-fitted model LF works on any schema.
            "functions": ["logreg_model"],
            "al_committee": ["logreg"],
        },
        "features": {
            **d.features.model_dump(mode="json"),
            "hash_buckets": hash_buckets,
            "crosses": [],
            "cyclical": not date_only,
            # per-entity windows; with no entity (one series) they would count the whole feed's events, a
            # property of how the data was collected (hotel bookings: -0.007 test ROC-AUC), so they are off
            "aggregates": {
                "enabled": entity_col is not None,
                "windows": window_set,
                "value_column": value_col,
            },
        },
        "train": {
            **d.train.model_dump(mode="json"),
            # patience to match the tuning's, so the refit stops where the best trial did
            "xgboost": {
                **d.train.xgboost.model_dump(mode="json"),
                "num_boost_round": 1000,
                "early_stopping_rounds": 50,
                "eval_metric": eval_metric,
            },
            "keras": {
                **d.train.keras.model_dump(mode="json"),
                "hidden_units": [64, 32],
                "epochs": 8,
                "batch_size": 512 if n_rows_total < 100_000 else 1024,
                "distillation": {**d.train.keras.distillation.model_dump(mode="json"), "compare": False},
            },
        },
        # A first run should finish in minutes and give the model a fair search: up to 200k rows a trial
        # takes seconds, so 25 trials (what a hand-built study would run) within a few minutes; more rows,
        # fewer trials. The timeout bounds the study whatever the data.
        "tune": {
            **d.tune.model_dump(mode="json"),
            "n_trials": 25 if n_rows_total <= 200_000 else 12,
            "timeout_s": 180,
            "startup_trials": 4,
            # rounds enough for the low learning rates of the space to converge (early stopping ends the
            # rest): capped at 300, the study favoured rates near 0.3 and scored 0.02 ROC-AUC under a
            # plain slow-learning model on hotel bookings
            "num_boost_round": 1000,
            # a slow learning rate is judged at equal shrinkage-weighted progress, and waits 50 rounds for
            # a better valid score: judged by rounds with a patience of 15, every rate below 0.05 was pruned
            # or stopped at round 15-40 and the study settled near 0.25 (hotel bookings: test ROC-AUC 0.858
            # vs 0.867-0.871 over three seeds with these two settings, hand-built 0.872)
            "prune_clock": "progress",
            "early_stopping_rounds": 50,
        },
        "evaluate": {
            **d.evaluate.model_dump(mode="json"),
            "slices": slices,
            "min_slice_size": max(50, min(500, n // 100)),
            "behavioural": {
                "models": ["xgboost", "keras"],
                "max_rows": 2000,
                "perturbation": {
                    "enabled": bool(numeric_cols),
                    "columns": [],
                    "scale": 0.05,
                    "max_mean_abs_delta": None,  # relative to the model's own score spread
                },
                "invariance": [],
                "directional": [],
            },
        },
        "gate": {
            **d.gate.model_dump(mode="json"),
            # the card's words: neutral, from the data's own names (edit them to say what a row and the label are)
            "card": {"events": f"{name} rows", "positive": f"{label} = {positive}", "intended_use": None},
        },
    }
    parse_params(params, source=Path(f"profiles/{name}.yaml"))  # a proposal that does not validate is a bug
    stats = {
        "rows_sampled": n,
        "columns": len(df.columns),
        "label": label,
        "positive_value": positive,
        "label_rate": round(label_rate, 4),
        "labels_missing": int((~known).sum()),
        "time_column": time,
        "time_format": time_format,
        "first_event": first.isoformat(),
        "last_event": last.isoformat(),
        "days": span_days,
        "rows_per_day": {"median": rows_day_median, "p05": q05, "max": int(per_day.max())},
        "entity_key": entity_name,
        "event_id": event_id,
        "valid_positives_expected": valid_positives,  # decides train.xgboost.eval_metric
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    return Proposal(name=name, params=params, warnings=warnings, columns=list(infos.values()), stats=stats,
                    notes=notes)  # fmt: skip


# --------------------------------------------------------------------------- rendering


class _ProfileDumper(yaml.SafeDumper):
    """Block style, except lists of scalars on one line (as in params.yaml)."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_ProfileDumper.add_representer(list, _represent_list)


def _dump(section: Any) -> str:
    return yaml.dump(section, Dumper=_ProfileDumper, sort_keys=False, default_flow_style=False, width=110,
                     allow_unicode=True)  # fmt: skip


SECTION_NOTES = {
    "source": "where the files are and how they map onto the event table (README: your own data)",
    "schema": "inferred from the sample: check the types, ranges (with headroom) and vocabularies",
    "validation": "sized to the rows per day seen in the sample",
    "sampling": "time split: test and valid windows are ~15% of the time range each, counted back from the newest day",
    "labeling": "the model LF only: the shipped LFs are card-payment heuristics (pipelines/labeling/labeling_functions.py)",
    "features": "hash_buckets sized to the largest high-cardinality vocabulary",
    "train": "budgets sized to the rows: a first run in minutes (early stopping ends training sooner)",
}


def render_profile(p: Proposal, *, source_file: str) -> str:
    """The profile's YAML text: a header, the warnings as comments, then every section."""
    s = p.stats
    lines = [
        f"# Loopline profile {p.name!r}, proposed by `loopline init` from {source_file}",
        f"# ({s['rows_sampled']:,} rows sampled, {s['days']} days {s['first_event'][:10]}..{s['last_event'][:10]}, "
        f"label rate {s['label_rate']:.2%}). Review it, then: loopline run --profile {p.name}",
        "#",
    ]
    if p.warnings:
        lines.append("# LEAKAGE WARNINGS (also in the .warnings.json next to this file):")
        for w in p.warnings:
            lines.append(f"#   {w.line()}")
        lines.append(
            "# DROPPED columns are in source.generic.drop and absent from schema.columns: strong evidence"
        )
        lines.append(
            "# from the data. To keep one anyway, remove it from drop and declare it under schema.columns."
        )
    else:
        lines.append("# No leakage warnings.")
    if p.notes:
        lines.append("# TYPE NOTES:")
        lines += [f"#   {note}" for note in p.notes]
    excluded = [c for c in p.columns if c.role == "excluded"]
    if excluded:
        lines.append("# Not used as features (undeclared columns never reach the lake):")
        lines += [f"#   {c.raw}: {c.note}" for c in excluded]
    lines.append("")
    for key, section in p.params.items():
        if key in SECTION_NOTES:
            lines.append(f"# {SECTION_NOTES[key]}")
        if key == "source" and section["generic"]["drop"]:
            # The drop list in block style, each column with the reason it is dropped.
            reasons = {w.column: w.kind for w in p.warnings if w.strong}
            blank = {**section, "generic": {**section["generic"], "drop": []}}
            block = "\n".join(f"      - {c}  # {reasons.get(c, '')}" for c in section["generic"]["drop"])
            text = _dump({key: blank}).rstrip().replace("    drop: []", "    drop:\n" + block, 1)
        else:
            text = _dump({key: section}).rstrip()
        lines.append(text)
        lines.append("")
    return "\n".join(lines)


def write_profile(
    p: Proposal, *, out_dir: str | Path, source_file: str, force: bool = False
) -> tuple[Path, Path]:
    """Validate, then write ``<out_dir>/<name>.yaml`` and ``<name>.warnings.json`` (atomically)."""

    out_dir = Path(out_dir)
    target = out_dir / f"{p.name}.yaml"
    if target.exists() and not force:
        raise FileExistsError(
            f"{target} exists; pass --force to overwrite it or --name to choose another name"
        )
    text = render_profile(p, source_file=source_file)
    parse_params(yaml.safe_load(text), source=target)  # exactly what will be read back
    storage.write_bytes(target, text.encode("utf-8"))
    warn_path = out_dir / f"{p.name}.warnings.json"
    storage.write_bytes(warn_path, (json.dumps(p.to_json(), indent=2) + "\n").encode("utf-8"))
    return target, warn_path
