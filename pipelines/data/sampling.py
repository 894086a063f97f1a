"""Sampling stage: lake -> time-ordered train/valid/test sets as of a cutoff, with honest labels.

Windows are calendar days counted back from the cutoff (the end of ``sampling.as_of``, by default the
lake's newest partition)::

    [ train ][gap][ valid ][gap][ test ][ label_maturity_days: the immature tail ]  cutoff

* A label counts only if it had matured by the cutoff (``label_time <= cutoff``). Otherwise the row is
  *unlabelled* (label and label_time set to null: the arrival time of a future label is itself a leak),
  never a negative. Taking the tail's matured labels would keep its fast-arriving positives and drop
  its slow negatives, so the tail is in no split; its unlabelled rows go to ``unlabelled.parquet``.
* The gaps keep a card's burst of events from straddling two splits.
* The sampling ``method`` applies to the train split only; valid and test stay complete so that
  evaluation is unbiased. Methods: all, random, stratified, weighted (recency), reservoir (streaming,
  Algorithm L, bounded memory) and importance (weights P/Q on a categorical column).

Every sampler is a pure function of arrays and a seed; the I/O lives in :func:`run_sampling`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import InputError
from pipelines.core import storage
from pipelines.core.config import SamplingConfig, SchemaConfig
from pipelines.core.samplers import simple_random_indices, stratified_indices
from pipelines.data.etl import TS, lake_dates, lake_schema, partition_path

__all__ = [
    "SPLITS",
    "ReservoirSampler",
    "SplitWindows",
    "compute_windows",
    "importance_weights",
    "labels_at_cutoff",
    "recency_weights",
    "reservoir_sample",
    "run_sampling",
    "sample_train",
    "simple_random_indices",
    "split_of",
    "stratified_indices",
    "weighted_indices",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
NULL_KEY = "<null>"
DAY = dt.timedelta(days=1)


# --------------------------------------------------------------------------- windows and labels


@dataclass(frozen=True)
class SplitWindows:
    """Half-open [start, end) UTC intervals of each split, and the cutoff."""

    cutoff: dt.datetime
    train: tuple[dt.datetime, dt.datetime]
    valid: tuple[dt.datetime, dt.datetime]
    test: tuple[dt.datetime, dt.datetime]
    tail: tuple[dt.datetime, dt.datetime]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cutoff": self.cutoff.isoformat()}
        for name in (*SPLITS, "tail"):
            start, end = getattr(self, name)
            out[name] = {"start": start.isoformat(), "end": end.isoformat(), "days": (end - start).days}
        return out


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def compute_windows(cfg: SamplingConfig, *, oldest: dt.date, newest: dt.date) -> SplitWindows:
    """The split windows for a lake holding partitions ``oldest..newest``. Raises if train is empty."""
    as_of = cfg.as_of or newest
    cutoff = _midnight(as_of) + DAY
    tail_start = cutoff - cfg.label_maturity_days * DAY
    test = (tail_start - cfg.test_days * DAY, tail_start)
    valid_end = test[0] - cfg.gap_days * DAY
    valid = (valid_end - cfg.valid_days * DAY, valid_end)
    train_end = valid[0] - cfg.gap_days * DAY
    lake_start = _midnight(oldest)
    train_start = max(lake_start, train_end - cfg.train_days * DAY) if cfg.train_days else lake_start
    if train_end <= lake_start:
        raise InputError(
            f"sampling: the train window would end {train_end.date()} but the lake starts {oldest}; "
            f"cutoff {cutoff.isoformat()} minus label_maturity_days={cfg.label_maturity_days}, "
            f"test_days={cfg.test_days}, valid_days={cfg.valid_days} and 2 x gap_days={cfg.gap_days} leaves "
            "no history. Load more days, set sampling.as_of later, or shorten those windows."
        )
    return SplitWindows(cutoff=cutoff, train=(train_start, train_end), valid=valid, test=test,
                        tail=(tail_start, cutoff))  # fmt: skip


def _ts_us(t: dt.datetime) -> int:
    return int((t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))


def split_of(event_time_us: np.ndarray, windows: SplitWindows) -> np.ndarray:
    """Per row: train | valid | test | tail | '' (in a gap, before train or after the cutoff)."""
    out = np.full(len(event_time_us), "", dtype=object)
    for name in (*SPLITS, "tail"):
        start, end = (_ts_us(t) for t in getattr(windows, name))
        out[(event_time_us >= start) & (event_time_us < end)] = name
    return out


def labels_at_cutoff(table: pa.Table, cutoff: dt.datetime) -> pa.Table:
    """Labels as known at ``cutoff``: a label whose ``label_time`` is later (or missing) becomes null.

    label_time is nulled with it: when a future label will arrive is information from after the cutoff
    (a chargeback arrives sooner than a clean label's window closes). The one rule the sample stage, the
    retrain's stateful update and the monitor's live performance apply; a table without labels is returned
    as it is.
    """
    if "label" not in table.column_names or "label_time" not in table.column_names:
        return table
    lt = table.column("label_time")
    known = pc.fill_null(pc.less_equal(lt, pa.scalar(cutoff, lt.type)), False)
    label = pc.if_else(known, table.column("label"), pa.scalar(None, table.schema.field("label").type))
    ltime = pc.if_else(known, lt, pa.scalar(None, lt.type))
    table = table.set_column(table.schema.get_field_index("label"), table.schema.field("label"), label)
    return table.set_column(
        table.schema.get_field_index("label_time"), table.schema.field("label_time"), ltime
    )


def _size(n_rows: int, *, fraction: float | None, n: int | None) -> int:
    if n is not None:
        return min(n, n_rows)
    if fraction is not None:
        return round(fraction * n_rows)
    return n_rows


def recency_weights(event_time_us: np.ndarray, *, cutoff: dt.datetime, half_life_days: float) -> np.ndarray:
    """Exponential recency weights: 1 at the cutoff, halving every ``half_life_days``."""
    if half_life_days <= 0:
        raise InputError(f"half_life_days={half_life_days} must be positive")
    age_days = (_ts_us(cutoff) - event_time_us.astype(np.int64)) / 86_400e6
    return np.power(0.5, np.maximum(age_days, 0.0) / half_life_days)


def weighted_indices(weights: np.ndarray, *, size: int, rng: np.random.Generator) -> np.ndarray:
    """Weighted sampling without replacement (Efraimidis–Spirakis A-ES): keys log(u)/w, the top ``size``.

    For ``size=1`` the chance of row i is exactly w_i / sum(w).
    """
    w = np.asarray(weights, dtype=float)
    if (w < 0).any() or not np.isfinite(w).all():
        raise InputError("weights must be finite and non-negative")
    if not 0 <= size <= int((w > 0).sum()):
        raise InputError(f"size={size} must be within [0, {(w > 0).sum()}] (rows with a positive weight)")
    with np.errstate(divide="ignore"):
        keys = np.where(w > 0, np.log(rng.random(len(w))) / np.where(w > 0, w, 1.0), -np.inf)
    if size == 0:
        return np.array([], dtype=np.int64)
    top = np.argpartition(-keys, size - 1)[:size]
    return np.sort(top)


def importance_weights(
    values: np.ndarray, *, target: dict[str, float], max_weight: float = np.inf
) -> tuple[np.ndarray, dict[str, Any]]:
    """Weights P(v)/Q(v) that reweight a sample whose mix of ``values`` is Q to the target mix P.

    Q is the sample's own empirical mix. Values absent from the target get weight 0; target mass on
    values absent from the sample cannot be represented and is reported as ``uncovered_target``.
    Non-zero weights are clipped to [1/max_weight, max_weight]. Returns (weights, info).
    """
    total = float(sum(target.values()))
    if total <= 0:
        raise InputError(f"importance target {target!r} must have a positive total")
    p = {str(k): v / total for k, v in target.items()}
    keys, inverse, counts = np.unique(values.astype(str), return_inverse=True, return_counts=True)
    q = counts / counts.sum()
    ratio = np.array([p.get(k, 0.0) for k in keys]) / q
    nz = ratio > 0
    ratio[nz] = np.clip(ratio[nz], 1.0 / max_weight, max_weight)
    info = {
        "sample_mix": {str(k): round(float(v), 6) for k, v in zip(keys, q, strict=True)},
        "target_mix": {k: round(v, 6) for k, v in sorted(p.items())},
        "weights": {str(k): round(float(v), 6) for k, v in zip(keys, ratio, strict=True)},
        "uncovered_target": round(sum(v for k, v in p.items() if k not in set(keys)), 6),
    }
    return ratio[inverse], info


class ReservoirSampler:
    """Algorithm L (Li, 1994): ``k`` rows uniformly from a stream of record batches of unknown length.

    Memory is bounded by about 2k rows plus one batch: chosen rows are copied out of each batch, and the
    kept copies are compacted once they exceed 2k. Algorithm L's skips are drawn in vectorised blocks
    (log W is a cumulative sum), so the cost per replacement is a few numpy operations, and the draws do
    not depend on how the stream is cut into batches: the sample depends only on the rows and the seed.
    """

    BLOCK = 4096  # replacements drawn at a time

    def __init__(self, k: int, *, seed: int | np.random.SeedSequence | list[int]) -> None:
        if k <= 0:
            raise InputError(f"reservoir size k={k} must be positive")
        self.k = k
        self._rng = np.random.default_rng(seed)
        self.seen = 0
        self._chunks: list[pa.Table] = []
        self._stored = 0
        self._slot_pos = np.full(k, -1, dtype=np.int64)  # row of the concatenated chunks held by each slot
        self._log_w = math.log(self._rng.random()) / k
        self._next = float(k + self._skips(np.array([self._log_w]))[0] - 1)  # stream index of the next take
        self._pending_pos = np.array([], dtype=np.int64)
        self._pending_slot = np.array([], dtype=np.int64)

    def _skips(self, log_w: np.ndarray) -> np.ndarray:
        """floor(log(u) / log(1 - W)) + 1 per W (capped: once W underflows, nothing more is taken)."""
        denom = np.log1p(-np.exp(log_w))
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.floor(np.log(self._rng.random(len(log_w))) / denom) + 1
        return np.where(np.isfinite(s), np.minimum(s, 2.0**52), 2.0**52)

    def _draw_block(self) -> None:
        b = self.BLOCK
        slots = self._rng.integers(0, self.k, b)
        log_w = self._log_w + np.cumsum(np.log(self._rng.random(b)) / self.k)
        skips = self._skips(log_w)
        pos = self._next + np.concatenate([[0.0], np.cumsum(skips[:-1])])
        self._log_w = float(log_w[-1])
        self._next = float(min(pos[-1] + skips[-1], 2.0**62))
        self._pending_pos = np.minimum(pos, 2.0**62).astype(np.int64)
        self._pending_slot = slots

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        m = batch.num_rows
        start, end = self.seen, self.seen + m
        rows_parts: list[np.ndarray] = []
        slot_parts: list[np.ndarray] = []
        if start < self.k:
            fill = min(self.k, end) - start
            rows_parts.append(np.arange(fill))
            slot_parts.append(np.arange(start, start + fill))
        while True:
            if len(self._pending_pos) == 0:
                if self._next >= end:
                    break
                self._draw_block()
            cut = int(np.searchsorted(self._pending_pos, end))
            if cut:
                rows_parts.append(self._pending_pos[:cut] - start)
                slot_parts.append(self._pending_slot[:cut])
                self._pending_pos, self._pending_slot = self._pending_pos[cut:], self._pending_slot[cut:]
            if len(self._pending_pos):
                break
        self.seen = end
        if not rows_parts:
            return
        r, s = np.concatenate(rows_parts), np.concatenate(slot_parts)
        if len(r) == 0:
            return
        last = (
            len(s) - 1 - np.unique(s[::-1], return_index=True)[1]
        )  # a slot replaced twice keeps the later row
        r, s = r[last], s[last]
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        self._chunks.append(table.take(pa.array(r)))
        self._slot_pos[s] = self._stored + np.arange(len(r))
        self._stored += len(r)
        if self._stored > 2 * self.k and len(self._chunks) > 1:
            self._compact()

    def _compact(self) -> None:
        filled = self._slot_pos[self._slot_pos >= 0]
        table = pa.concat_tables(self._chunks, promote_options="default").take(pa.array(filled))
        self._chunks = [table]
        self._slot_pos[self._slot_pos >= 0] = np.arange(len(filled))
        self._stored = len(filled)

    def result(self) -> pa.Table:
        if not self._chunks:
            raise InputError("reservoir: the stream was empty")
        filled = self._slot_pos[self._slot_pos >= 0]
        return pa.concat_tables(self._chunks, promote_options="default").take(pa.array(filled))


def reservoir_sample(
    batches: Iterable[pa.RecordBatch | pa.Table], *, k: int, seed: int | list[int]
) -> tuple[pa.Table, int]:
    """A uniform sample of ``k`` rows (all of them if fewer) from a stream; returns (sample, rows seen)."""
    sampler = ReservoirSampler(k, seed=seed)
    for b in batches:
        sampler.add(b)
    return sampler.result(), sampler.seen


# --------------------------------------------------------------------------- train sampling


def _column_strings(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        raise InputError(
            f"sampling: column {name!r} is not in the event table; choose one of {table.column_names}"
        )
    arr = table.column(name)
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    return np.asarray(pc.fill_null(arr, NULL_KEY).to_numpy(zero_copy_only=False), dtype=object)


def _strata(table: pa.Table, columns: list[str]) -> np.ndarray:
    parts = [_column_strings(table, c) for c in columns]
    key = parts[0].astype(str)
    for p in parts[1:]:
        key = np.char.add(np.char.add(key, "|"), p.astype(str))
    return key


def sample_train(
    train: pa.Table,
    cfg: SamplingConfig,
    *,
    seed: int | list[int],
    cutoff: dt.datetime,
    importance_target: dict[str, float] | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """Apply ``cfg.method`` to the (in-memory) train split; adds ``sample_weight`` with mean 1.

    ``reservoir`` is streamed by :func:`run_sampling`; here it runs over the table's batches.
    """
    rng = np.random.default_rng(seed)
    n_rows = train.num_rows
    size = _size(n_rows, fraction=cfg.fraction, n=cfg.n)
    info: dict[str, Any] = {"method": cfg.method, "population_rows": n_rows}
    weights: np.ndarray
    if cfg.method == "all":
        idx, weights = np.arange(n_rows), np.ones(n_rows)
    elif cfg.method == "random":
        idx = simple_random_indices(n_rows, size=size, rng=rng)
        weights = np.ones(len(idx))
    elif cfg.method == "stratified":
        strata = _strata(train, cfg.stratify_by)
        idx, weights = stratified_indices(strata, size=size, rng=rng, min_per_stratum=cfg.min_per_stratum)
        info["stratify_by"] = list(cfg.stratify_by)
        info["strata"] = {
            str(k): int(v) for k, v in zip(*np.unique(strata[idx], return_counts=True), strict=True)
        }
    elif cfg.method == "weighted":
        et = train.column("event_time").cast(pa.int64()).to_numpy()
        w = recency_weights(et, cutoff=cutoff, half_life_days=cfg.recency_half_life_days)
        idx = weighted_indices(w, size=size, rng=rng)
        weights = np.ones(len(idx))  # the emphasis on recent rows lives in the selection itself
        info["recency_half_life_days"] = cfg.recency_half_life_days
    elif cfg.method == "reservoir":
        assert cfg.n is not None
        sample, _ = reservoir_sample(train.to_batches(max_chunksize=cfg.batch_size), k=cfg.n, seed=seed)
        return _with_weight(_sorted(sample), np.ones(sample.num_rows)), {**info, "k": cfg.n}
    elif cfg.method == "importance":
        if importance_target is None:
            raise InputError("sampling.method importance needs a target mix (sampling.importance.target)")
        values = _column_strings(train, cfg.importance.column)
        weights, imp = importance_weights(
            values, target=importance_target, max_weight=cfg.importance.max_weight
        )
        idx = np.arange(n_rows)
        info["importance"] = {"column": cfg.importance.column, **imp}
    else:  # pragma: no cover - the config's Literal forbids it
        raise InputError(f"unknown sampling method {cfg.method!r}")
    out = train.take(pa.array(idx, pa.int64()))
    return _with_weight(out, weights), info


def _with_weight(table: pa.Table, weights: np.ndarray) -> pa.Table:
    w = np.asarray(weights, dtype=np.float64)
    if len(w) and w.sum() > 0:
        w = w * (len(w) / w.sum())  # mean 1: keeps the loss scale of an unweighted fit
    if "sample_weight" in table.column_names:
        table = table.drop_columns(["sample_weight"])
    return table.append_column(pa.field("sample_weight", pa.float64()), pa.array(w, pa.float64()))


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("event_time", "ascending"), ("event_id", "ascending")])


def split_stats(table: pa.Table) -> dict[str, Any]:
    """Rows, labelled rows, positives and the label rate (positives / labelled) of a split."""
    n = table.num_rows
    label = table.column("label")
    labelled = n - label.null_count
    positives = int(pc.sum(pc.cast(pc.equal(label, 1), pa.int64())).as_py() or 0) if n else 0
    return {
        "rows": n,
        "labelled": labelled,
        "unlabelled": n - labelled,
        "positives": positives,
        "label_rate": round(positives / labelled, 6) if labelled else None,
        "labelled_share": round(labelled / n, 6) if n else None,
    }


# --------------------------------------------------------------------------- I/O


def _partition_parts(lake: str, start: dt.datetime, end: dt.datetime, dates: list[str]) -> list[str]:
    lo, hi = start.date().isoformat(), (end - dt.timedelta(microseconds=1)).date().isoformat()
    parts: list[str] = []
    for d in dates:
        if lo <= d <= hi:
            parts.extend(storage.list_files(partition_path(lake, d), "part-*.parquet"))
    return parts


def _iter_window(
    parts: list[str], schema: pa.Schema, start: dt.datetime, end: dt.datetime, batch_size: int
) -> Iterator[pa.Table]:
    lo, hi = pa.scalar(start, TS), pa.scalar(end, TS)
    for part in parts:
        for batch in storage.iter_parquet_batches(part, batch_size=batch_size):
            t = pa.Table.from_batches([batch]).cast(schema)
            et = t.column("event_time")
            yield t.filter(pc.and_(pc.greater_equal(et, lo), pc.less(et, hi)))


def _read_window(
    lake: str, dates: list[str], schema: pa.Schema, start: dt.datetime, end: dt.datetime
) -> pa.Table:
    parts = _partition_parts(lake, start, end, dates)
    tables = list(_iter_window(parts, schema, start, end, 1 << 20))
    return pa.concat_tables(tables) if tables else schema.empty_table()


def params_digest(cfg: SamplingConfig, seed: int) -> str:
    blob = json.dumps({"sampling": cfg.model_dump(mode="json"), "seed": seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_sampling(
    *, lake: str, out: str, cfg: SamplingConfig, schema: SchemaConfig, seed: int, progress: bool = True
) -> dict[str, Any]:
    """Build ``out/{train,valid,test,unlabelled}.parquet`` and ``out/sampling.json``; returns the report."""
    dates = lake_dates(lake)
    if not dates:
        raise InputError(f"sampling: no partitions under lake {lake!r}; run `loopline etl` first")
    windows = compute_windows(
        cfg, oldest=dt.date.fromisoformat(dates[0]), newest=dt.date.fromisoformat(dates[-1])
    )
    tschema = lake_schema(schema)
    cutoff = windows.cutoff
    log.info("sampling: cutoff %s, windows %s", cutoff.isoformat(), windows.as_dict())
    seed_seq = [seed, 0x5A3B]

    # train: streamed for the reservoir (bounded memory), read whole otherwise
    train_start, train_end = windows.train
    importance_target = None
    if cfg.method == "importance":
        importance_target = cfg.importance.target
        if importance_target is None:
            recent = _read_window(lake, dates, tschema, cutoff - cfg.importance.recent_days * DAY, cutoff)
            if recent.num_rows == 0:
                raise InputError(
                    f"sampling.importance: no rows in the {cfg.importance.recent_days} days before the cutoff"
                )
            vals, freq = np.unique(
                _column_strings(recent, cfg.importance.column).astype(str), return_counts=True
            )
            importance_target = {str(v): float(c) for v, c in zip(vals, freq, strict=True)}
    if cfg.method == "reservoir":
        assert cfg.n is not None
        parts = _partition_parts(lake, train_start, train_end, dates)
        population = {"rows": 0, "labelled": 0, "positives": 0}

        def counted() -> Iterator[pa.Table]:
            from tqdm import tqdm

            for t in tqdm(_iter_window(parts, tschema, train_start, train_end, cfg.batch_size),
                          desc="reservoir", unit="batch", disable=not progress):  # fmt: skip
                t = labels_at_cutoff(t, cutoff)
                s = split_stats(t)
                for key in population:
                    population[key] += s[key]
                yield t

        sample, seen = reservoir_sample(counted(), k=cfg.n, seed=seed_seq)
        train = _with_weight(_sorted(sample), np.ones(sample.num_rows))
        info: dict[str, Any] = {"method": "reservoir", "k": cfg.n, "population_rows": seen,
                                "batch_size": cfg.batch_size, "population": population}  # fmt: skip
    else:
        full = labels_at_cutoff(_read_window(lake, dates, tschema, train_start, train_end), cutoff)
        train, info = sample_train(_sorted(full), cfg, seed=seed_seq, cutoff=cutoff,
                                   importance_target=importance_target)  # fmt: skip
        info["population"] = split_stats(full)
        train = _sorted(train)

    frames: dict[str, pa.Table] = {"train": train}
    for name in ("valid", "test"):
        t = labels_at_cutoff(_read_window(lake, dates, tschema, *getattr(windows, name)), cutoff)
        frames[name] = _with_weight(_sorted(t), np.ones(t.num_rows))
    tail = labels_at_cutoff(_read_window(lake, dates, tschema, *windows.tail), cutoff)
    tail_stats = split_stats(tail)

    seen_ids: set[str] = set()
    for name in SPLITS:  # by construction no event is in two splits; check it, it is cheap
        ids = set(frames[name].column("event_id").to_pylist())
        if seen_ids & ids:
            raise AssertionError(
                f"sampling: {len(seen_ids & ids)} event_id(s) in two splits (e.g. {sorted(seen_ids & ids)[0]})"
            )
        seen_ids |= ids

    split_field = pa.field("split", pa.string())
    unlabelled_parts = []
    counts: dict[str, Any] = {}
    for name in SPLITS:
        t = frames[name]
        t = t.append_column(split_field, pa.array([name] * t.num_rows, pa.string()))
        frames[name] = t
        counts[name] = split_stats(t)
        unlabelled_parts.append(t.filter(pc.is_null(t.column("label"))))
        if counts[name]["labelled_share"] is not None and counts[name]["labelled_share"] < 0.9:
            log.warning(
                "sampling: only %.0f%% of %s labels had matured by the cutoff; raise "
                "sampling.label_maturity_days or move sampling.as_of",
                100 * counts[name]["labelled_share"],
                name,
            )
        storage.write_parquet(storage.join(out, f"{name}.parquet"), t)
    tail_unl = tail.filter(pc.is_null(tail.column("label")))
    tail_unl = _with_weight(tail_unl, np.ones(tail_unl.num_rows))
    tail_unl = tail_unl.append_column(split_field, pa.array(["tail"] * tail_unl.num_rows, pa.string()))
    unlabelled = pa.concat_tables([*unlabelled_parts, tail_unl])
    storage.write_parquet(storage.join(out, "unlabelled.parquet"), unlabelled)

    report = {
        "method": cfg.method,
        "seed": seed,
        "params_digest": params_digest(cfg, seed),
        "as_of": (cfg.as_of or dt.date.fromisoformat(dates[-1])).isoformat(),
        "lake_dates": {"first": dates[0], "last": dates[-1], "count": len(dates)},
        "windows": windows.as_dict(),
        "counts": counts,
        "label_rates": {name: counts[name]["label_rate"] for name in SPLITS},
        "train_sampling": info,
        "tail": {**tail_stats, "matured_excluded": tail_stats["labelled"],
                 "note": "tail labels are excluded: only its fast-arriving (mostly positive) labels have matured"},
        "unlabelled_rows": unlabelled.num_rows,
    }  # fmt: skip
    storage.write_json(storage.join(out, "sampling.json"), report)
    log.info("sampling: %s", {k: (v["rows"], v["label_rate"]) for k, v in counts.items()})
    return report
