"""The feature spec and its one transform: numpy and the standard library only.

A feature spec is a JSON document fitted on the training split (``pipelines.features.build.fit_spec``) that
holds every constant a transform needs: imputation values, scaling constants, bin edges,
vocabularies, hash-bucket counts and crosses. :func:`transform` turns input columns into the float32
feature matrix; it is the single implementation used by training, batch scoring and the edge runtime,
which is why this module imports nothing beyond numpy (checked by a test).

Inputs are a mapping ``column name -> 1-D array``. Values may arrive typed (float arrays, datetime64,
strings from a DataFrame) or as raw text parsed from CSV (``"12.5"``, ``""``, ISO-8601 times): both give
the same features. Missing values are ``None``, NaN, the empty string or ``NA``/``NaN``/``null`` text.
A categorical column may also arrive dictionary-coded (:class:`Coded`: codes into a vocabulary, as Arrow
and pandas hold it): its vocabulary is transformed once and gathered, with the same features as the text.

Conventions, stable across versions of the same ``version`` number:

- numeric: missing or non-finite -> the fitted imputation value, plus a ``<col>__missing`` 0/1 indicator;
  then ``(g(x) - shift) / divisor`` with ``g = log1p(max(x, 0))`` for ``log`` scaling and identity
  otherwise; optional ``<col>__bin`` = number of fitted bin edges <= the imputed value.
- one-hot: ``<col>==<category>`` per vocabulary entry plus ``<col>==__unknown__`` for a category not
  seen in training or a missing one (the explicit unknown slot).
- ordinal: ``<col>__ord`` = 1 + position in the vocabulary, 0 for unknown or missing.
- hashing trick (high-cardinality columns and crosses): ``<name>__h<i>`` indicator of bucket
  ``crc32(utf-8 value, salt=crc32(name)) % buckets``; a cross hashes its values joined by ``\\x1f``;
  a missing value hashes as ``\\x1e``. zlib.crc32 is stable across processes and platforms, unlike
  Python's ``hash()``.
- cyclical time: hour of day (fractional, UTC) and day of week (Monday = 0, UTC) as sin/cos pairs.

Point-in-time entity aggregates (a card's trailing counts and sums) are *inputs* of the spec, computed
upstream from the event history (``pipelines.features.build.entity_aggregates``): the edge runtime receives
them as columns like any other, it does not compute them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "FORMAT",
    "SPEC_VERSION",
    "Coded",
    "Onehot",
    "SpecError",
    "apply_op",
    "check_columns",
    "check_width",
    "dumps_spec",
    "feature_names_of",
    "finalize_spec",
    "input_columns",
    "loads_spec",
    "spec_digest",
    "stable_hash",
    "transform",
    "unparsable_numbers",
]

FORMAT = "loopline-feature-spec"
SPEC_VERSION = 1
UNKNOWN = "__unknown__"
MISSING_TOKEN = "\x1e"  # ASCII record separator (numpy strips a trailing NUL from str arrays)
CROSS_SEP = "\x1f"
_TILE_BYTES = 1 << 20  # transform fills its output in row tiles of about this size (cache-resident)
# what a CSV cell means by "missing": config.MISSING_MARKERS (the ETL's markers; a test keeps them equal), <NA>
_MISSING_TEXT = frozenset(
    {"", "NA", "N/A", "n/a", "#N/A", "NULL", "null", "NaN", "nan", "None", "?", "-", "<NA>"}
)
_US_PER_DAY = 86_400_000_000
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
SCALINGS = ("standard", "minmax", "log", "none")


class SpecError(ValueError):
    """A feature spec (or the columns given to it) is invalid; the message names the key and the fix."""


# --------------------------------------------------------------------------- spec document


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def spec_digest(spec: Mapping[str, Any]) -> str:
    """sha256 of the spec's canonical JSON (sorted keys, no whitespace), the ``digest`` key excluded."""
    body = {k: v for k, v in spec.items() if k != "digest"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def _op_names(op: Mapping[str, Any]) -> list[str]:
    kind = op["op"]
    if kind == "numeric":
        c = op["column"]
        names = [f"{c}__{op['scale']}"]
        if op.get("indicator"):
            names.append(f"{c}__missing")
        if op.get("bins") is not None:
            names.append(f"{c}__bin")
        return names
    if kind == "onehot":
        c = op["column"]
        return [f"{c}=={cat}" for cat in op["categories"]] + [f"{c}=={UNKNOWN}"]
    if kind == "ordinal":
        return [f"{op['column']}__ord"]
    if kind == "hash":
        name = "_x_".join(op["columns"])
        width = len(str(op["buckets"] - 1))
        return [f"{name}__h{i:0{width}d}" for i in range(op["buckets"])]
    if kind == "cyclical":
        c = op["column"]
        return [f"{c}__{part}_{fn}" for part in op["parts"] for fn in ("sin", "cos")]
    raise SpecError(
        f"feature spec: transforms[].op = {kind!r}: expected numeric, onehot, ordinal, hash or cyclical"
    )


def feature_names_of(transforms: list[Mapping[str, Any]]) -> list[str]:
    """The output feature names of a list of transforms, in matrix column order."""
    names = [n for op in transforms for n in _op_names(op)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(
            f"feature spec: duplicate feature names {dupes[:5]}; rename the columns or categories"
        )
    return names


def input_columns(spec: Mapping[str, Any]) -> list[str]:
    """Input columns the transform reads, in first-use order."""
    cols: list[str] = []
    for op in spec["transforms"]:
        for c in op.get("columns", [op.get("column")]):
            if c is not None and c not in cols:
                cols.append(c)
    return cols


def finalize_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Fill ``format``, ``version``, ``feature_names`` and ``digest``; returns the same dict."""
    spec["format"] = FORMAT
    spec["version"] = SPEC_VERSION
    spec["feature_names"] = feature_names_of(spec["transforms"])
    spec.pop("digest", None)
    spec["digest"] = spec_digest(spec)
    return spec


def validate_spec(spec: Mapping[str, Any]) -> None:
    """Check format, version, feature names and digest; raise SpecError naming what is wrong."""
    if spec.get("format") != FORMAT:
        raise SpecError(f"feature spec: format = {spec.get('format')!r}: expected {FORMAT!r}")
    if spec.get("version") != SPEC_VERSION:
        raise SpecError(
            f"feature spec: version = {spec.get('version')!r}: this runtime reads version {SPEC_VERSION}; "
            "refit the spec with the matching pipeline version"
        )
    if list(spec.get("feature_names", [])) != feature_names_of(spec["transforms"]):
        raise SpecError(
            "feature spec: feature_names do not match the transforms; the file was edited by hand"
        )
    digest = spec_digest(spec)
    if spec.get("digest") != digest:
        raise SpecError(
            f"feature spec: digest = {spec.get('digest')!r} but the content hashes to {digest!r}; "
            "the file was changed after fitting: refit it rather than editing it"
        )


def dumps_spec(spec: Mapping[str, Any]) -> str:
    """Deterministic JSON text of a spec (sorted keys, indent 2)."""
    return json.dumps(spec, sort_keys=True, indent=2, allow_nan=False) + "\n"


def loads_spec(text: str | bytes) -> dict[str, Any]:
    """Parse and validate a spec's JSON text."""
    spec = json.loads(text)
    if not isinstance(spec, dict):
        raise SpecError(f"feature spec: top level is {type(spec).__name__}, expected an object")
    validate_spec(spec)
    return spec


# --------------------------------------------------------------------------- input coercion


class Coded:
    """A categorical column as integer ``codes`` into ``vocab`` (a negative code is a missing value).

    Batch scoring reads Arrow dictionary columns in this form: every text transform then runs on the
    vocabulary (tens of values) instead of on every row, and the result is gathered by code.
    """

    def __init__(self, codes: np.ndarray, vocab: Any) -> None:
        self.codes = np.asarray(codes, dtype=np.int64)
        self.vocab = np.asarray(vocab, dtype=object)

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def extended(self) -> tuple[np.ndarray, np.ndarray]:
        """Codes with missing pointing at an extra ``None`` entry, and that extended vocabulary."""
        vocab = np.empty(len(self.vocab) + 1, dtype=object)
        vocab[:-1], vocab[-1] = self.vocab, None
        return np.where(self.codes < 0, len(self.vocab), self.codes), vocab

    def decode(self) -> np.ndarray:
        """The plain values (object array, ``None`` for missing)."""
        codes, vocab = self.extended()
        return vocab[codes]


def _text_missing(text: np.ndarray) -> np.ndarray:
    return np.isin(np.char.strip(text), list(_MISSING_TEXT)) if text.size else np.zeros(0, dtype=bool)


def _object_to_text(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An object array (str, None, NaN, numbers) as a unicode array and its missing mask, in C loops."""
    none = np.fromiter((v is None for v in flat), dtype=bool, count=flat.shape[0])
    text = np.where(none, "", flat).astype(str) if flat.size else np.zeros(0, dtype="<U1")
    return text, none | _text_missing(text)  # a float NaN becomes "nan", which counts as missing


def as_float(values: Any) -> np.ndarray:
    """Numbers as float64 with NaN for missing or unparsable values, from typed arrays or text."""
    if isinstance(values, Coded):
        codes, vocab = values.extended()
        return as_float(vocab)[codes]
    arr = np.asarray(values).ravel()
    if arr.dtype.kind in "fiub":
        out = arr.astype(np.float64)
    else:
        text = arr.astype(str) if arr.dtype.kind != "O" else arr
        text, missing = _object_to_text(text) if arr.dtype.kind == "O" else (text, _text_missing(text))
        try:
            out = np.where(missing, "nan", np.char.strip(text)).astype(np.float64)
        except ValueError:  # some text is not a number: parse one by one, NaN where it fails
            out = np.empty(text.shape[0], dtype=np.float64)
            for i, v in enumerate(text):
                try:
                    out[i] = np.nan if missing[i] else float(v)
                except ValueError:
                    out[i] = np.nan
    out[~np.isfinite(out)] = np.nan
    return out


def unparsable_numbers(spec: Mapping[str, Any], columns: Mapping[str, Any]) -> dict[str, list[str]]:
    """For each numeric input given as text: the present values that are not finite numbers (they would be
    scored as missing). Empty when every value parses; callers count and report them (never silently)."""
    out: dict[str, list[str]] = {}
    for col, kind in (spec.get("inputs") or {}).items():
        if kind != "numeric" or col not in columns or isinstance(columns[col], Coded):
            continue
        arr = np.asarray(columns[col]).ravel()
        if arr.dtype.kind in "fiub":
            continue
        text, missing = (
            _object_to_text(arr)
            if arr.dtype.kind == "O"
            else (arr.astype(str), _text_missing(arr.astype(str)))
        )
        bad = ~missing & np.isnan(as_float(text))
        if bad.any():
            out[col] = text[bad].tolist()
    return out


def as_text(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Categories as a unicode array (missing -> ``MISSING_TOKEN``) and the missing mask."""
    if isinstance(values, Coded):
        codes, vocab = values.extended()
        text, missing = as_text(vocab)
        return text[codes], missing[codes]
    arr = np.asarray(values).ravel()
    if arr.dtype.kind == "O":
        text, missing = _object_to_text(arr)
    else:
        text = arr.astype(str)
        missing = _text_missing(text)
    if not text.size:
        return np.zeros(0, dtype="<U1"), missing
    return np.where(missing, MISSING_TOKEN, text), missing


def _parse_time_text(s: str) -> float:
    s = s.strip()
    if s in _MISSING_TEXT:
        return math.nan
    d = _dt.datetime.fromisoformat(s.replace(" ", "T", 1) if "T" not in s and " " in s else s)
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.UTC)
    return float((d - _EPOCH) // _dt.timedelta(microseconds=1))


def as_epoch_us(values: Any) -> np.ndarray:
    """Times as epoch microseconds (float64, NaN for missing) from datetime64, int/float (already epoch
    microseconds), datetime objects or ISO-8601 text (naive times are UTC)."""
    if isinstance(values, Coded):
        codes, vocab = values.extended()
        return as_epoch_us(vocab)[codes]
    arr = np.asarray(values)
    if arr.dtype.kind == "M":
        ints = arr.astype("datetime64[us]").astype(np.int64)
        out = ints.astype(np.float64)
        out[np.isnat(arr)] = np.nan
        return out
    if arr.dtype.kind in "iuf":
        return arr.astype(np.float64)
    flat = arr.ravel()
    uniq, inverse = np.unique(flat.astype(object).astype(str), return_inverse=True)
    # str() of a datetime object is ISO-like ("2025-01-01 00:00:00+00:00"), which fromisoformat reads
    parsed = np.array([_parse_time_text(u) for u in uniq], dtype=np.float64)
    return parsed[inverse] if flat.shape[0] else np.zeros(0, dtype=np.float64)


def stable_hash(values: np.ndarray, salt: str) -> np.ndarray:
    """crc32 of each value's utf-8 bytes, seeded with crc32(salt): stable across runs and machines."""
    seed = zlib.crc32(salt.encode("utf-8"))
    uniq, inverse = np.unique(values, return_inverse=True)
    hashed = np.fromiter(
        (zlib.crc32(str(u).encode("utf-8"), seed) for u in uniq), dtype=np.uint64, count=len(uniq)
    )
    return hashed[inverse] if values.shape[0] else np.zeros(0, dtype=np.uint64)


def _vocab_index(text: np.ndarray, categories: list[str]) -> np.ndarray:
    """Position of each value in ``categories``; -1 for unknown or missing."""
    lookup = {c: i for i, c in enumerate(categories)}
    uniq, inverse = np.unique(text, return_inverse=True)
    pos = np.fromiter((lookup.get(str(u), -1) for u in uniq), dtype=np.int64, count=len(uniq))
    return pos[inverse] if text.shape[0] else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------- transform


def _numeric(op: Mapping[str, Any], col: Any) -> list[np.ndarray]:
    x = as_float(col)
    missing = np.isnan(x)
    xi = np.where(missing, float(op["impute"]), x)
    g = np.log1p(np.maximum(xi, 0.0)) if op["scale"] == "log" else xi
    out = [(g - float(op["shift"])) / float(op["divisor"])]
    if op.get("indicator"):
        out.append(missing.astype(np.float64))
    if op.get("bins") is not None:
        out.append(
            np.searchsorted(np.asarray(op["bins"], dtype=np.float64), xi, side="right").astype(np.float64)
        )
    return out


def _category_index(values: Any, categories: list[str]) -> np.ndarray:
    if isinstance(values, Coded):
        codes, vocab = values.extended()
        return _vocab_index(as_text(vocab)[0], categories)[codes]
    return _vocab_index(as_text(values)[0], categories)


def _cross_text(texts: list[np.ndarray]) -> np.ndarray:
    key = texts[0]
    for t in texts[1:]:
        key = np.char.add(np.char.add(key, CROSS_SEP), t)
    return key


class Onehot:
    """A block of indicator columns given by the hot column of each row (never materialized as float64)."""

    def __init__(self, index: np.ndarray, width: int) -> None:
        self.index, self.width = index, width


def _distinct(codes: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(codes, return_inverse=True)`` for codes in ``[0, space)``: a counting pass instead of a
    sort when the space is small next to the rows (a cross of small vocabularies), the sort otherwise."""
    if space > max(4 * len(codes), 1 << 16):
        uniq, inverse = np.unique(codes, return_inverse=True)
        return uniq, inverse.ravel()
    present = np.bincount(codes, minlength=space) > 0
    uniq = np.flatnonzero(present)
    slot = np.cumsum(present) - 1
    return uniq, slot[codes]


def apply_op(op: Mapping[str, Any], columns: Mapping[str, Any]) -> list[np.ndarray] | Onehot:
    kind = op["op"]
    if kind == "numeric":
        return _numeric(op, columns[op["column"]])
    if kind == "onehot":
        cats = list(op["categories"])
        idx = _category_index(columns[op["column"]], cats)
        return Onehot(np.where(idx < 0, len(cats), idx), len(cats) + 1)  # unknown slot is the last column
    if kind == "ordinal":
        idx = _category_index(columns[op["column"]], list(op["categories"]))
        return [(idx + 1).astype(np.float64)]
    if kind == "hash":
        buckets = int(op["buckets"])
        salt = "_x_".join(op["columns"])
        inputs = [columns[c] for c in op["columns"]]
        if all(isinstance(c, Coded) for c in inputs):
            # hash each distinct combination of codes once (a cross of small vocabularies stays small)
            combo = np.zeros(len(inputs[0]), dtype=np.int64)
            space = 1
            for c in inputs:
                codes, vocab = c.extended()
                combo = combo * len(vocab) + codes
                space *= len(vocab)
            uniq, inverse = _distinct(combo, space)
            parts = []
            for c in reversed(inputs):
                codes, vocab = c.extended()
                parts.append(as_text(vocab)[0][uniq % len(vocab)])
                uniq = uniq // len(vocab)
            idx = (stable_hash(_cross_text(parts[::-1]), salt) % np.uint64(buckets)).astype(np.int64)
            return Onehot(idx[inverse], buckets)
        idx = (stable_hash(_cross_text([as_text(c)[0] for c in inputs]), salt) % np.uint64(buckets)).astype(
            np.int64
        )
        return Onehot(idx, buckets)
    if kind == "cyclical":
        us = as_epoch_us(columns[op["column"]])
        missing = np.isnan(us)
        us = np.where(missing, 0.0, us)
        out = []
        for part in op["parts"]:
            if part == "hour":
                frac = np.mod(us, _US_PER_DAY) / _US_PER_DAY
            elif part == "dow":
                frac = np.mod(np.floor(us / _US_PER_DAY) + 3.0, 7.0) / 7.0  # 1970-01-01 was a Thursday
            else:
                raise SpecError(f"feature spec: cyclical part {part!r}: expected hour or dow")
            angle = 2.0 * np.pi * frac
            out += [np.where(missing, 0.0, np.sin(angle)), np.where(missing, 0.0, np.cos(angle))]
        return out
    raise SpecError(
        f"feature spec: transforms[].op = {kind!r}: expected numeric, onehot, ordinal, hash or cyclical"
    )


def check_columns(spec: Mapping[str, Any], columns: Mapping[str, Any]) -> int:
    """The row count of ``columns``, after checking that every input of the spec is there, equally long."""
    needed = input_columns(spec)
    absent = [c for c in needed if c not in columns]
    if absent:
        raise SpecError(
            f"transform: input columns {absent} are missing (the spec {spec.get('digest', '?')[:12]} reads "
            f"{needed}); pass every input column, aggregates included"
        )
    lengths = {c: len(columns[c]) for c in needed}
    if len(set(lengths.values())) > 1:
        raise SpecError(f"transform: input columns have different lengths {lengths}; pass whole rows")
    return next(iter(lengths.values())) if lengths else 0


def check_width(spec: Mapping[str, Any]) -> None:
    """The transforms produce exactly the spec's named features (else the spec is inconsistent)."""
    produced = sum(len(_op_names(op)) for op in spec["transforms"])
    if produced != len(spec["feature_names"]):
        raise SpecError(
            f"transform: the transforms produce {produced} features but the spec names "
            f"{len(spec['feature_names'])}; the spec is inconsistent: refit it"
        )


def transform(spec: Mapping[str, Any], columns: Mapping[str, Any]) -> np.ndarray:
    """The feature matrix (float32, rows x ``spec["feature_names"]``) for the given input columns.

    The reference implementation (numpy only, used by the edge runtime); batch scoring uses
    ``pipelines.features.kernels.transform``, which gives the same matrix bit for bit in one compiled pass.
    """
    n = check_columns(spec, columns)
    check_width(spec)
    names = spec["feature_names"]
    blocks: list[tuple[int, list[np.ndarray] | Onehot]] = []
    at = 0
    for op in spec["transforms"]:
        block = apply_op(op, columns)
        blocks.append((at, block))
        at += block.width if isinstance(block, Onehot) else len(block)
    out = np.empty((n, len(names)), dtype=np.float32)
    # Fill the row-major matrix one tile of rows at a time: a column written down a whole chunk touches
    # a cache line per row; within a tile the lines stay in cache. Every cell is written exactly once
    # (one-hot blocks zeroed first), so the matrix is never zero-filled as a whole.
    tile = max(1, _TILE_BYTES // max(4 * len(names), 1))
    for lo in range(0, n, tile):
        hi = min(n, lo + tile)
        view = out[lo:hi]
        for start, block in blocks:
            if isinstance(block, Onehot):
                view[:, start : start + block.width] = 0.0
                view[np.arange(hi - lo), start + block.index[lo:hi]] = 1.0
            else:
                for j, col in enumerate(block):
                    view[:, start + j] = col[lo:hi]
    return out
