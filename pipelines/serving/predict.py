"""Batch prediction stage: score lake partitions with a registered model (the champion by default).

``loopline predict`` scores one partition (``--date``), a range (``--start``/``--end``) or, by default, the
newest ``predict.window_days`` partitions, and writes ``<out>/date=D/part-<version>.parquet`` (atomic, via
pipelines.core.storage; a model other than XGBoost adds ``-<model>`` to the name) with, on every row:
``event_id``, ``event_time``, the entity key, ``score``, ``model``, ``model_version``, ``spec_digest`` and
the ``predict.extra_columns`` the lake has (slice columns for monitoring).

Point-in-time aggregates are computed exactly as in training (:func:`pipelines.features.build.entity_aggregates`,
window ``[t - w, t)``) over the lake history before the partition and the partition itself. The history
starts where the feature stage's did (the spec's fit-window start minus the longest window), so that
``secs_since_prev`` sees the same earlier events as in training, but never more than
``predict.lookback_days`` back (and always at least the longest window): the cost stays bounded, and a
card idle for longer than that gets a missing ``secs_since_prev`` (imputed), as a new card does. The aggregates are narrow (id, time, key, value); the wide inputs are streamed in
record batches of ``predict.chunk_rows`` rows through the spec transform and the model, so memory is bound
by the chunk size and the narrow columns, not by the partition's width. The model is loaded from verified
bytes only (the registry's sha256 check); a TFLite variant is checked against the version's quantize.json.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.core import storage
from pipelines.core.config import Params, PredictConfig
from pipelines.data.etl import lake_dates, partition_path, validate_date
from pipelines.edge import featurespec as fs
from pipelines.edge.featurespec import Coded, loads_spec
from pipelines.edge.runtime import EdgeModel
from pipelines.features.build import (
    aggregate_arrays,
    aggregate_columns,
    epoch_us,
    history_table,
    numba_available,
    parse_window,
)
from pipelines.registry.store import ALIASES, Registry, sha256_bytes
from pipelines.training import models

__all__ = [
    "LoadedModel", "PredictError", "iter_scored", "load_model", "resolve_dates", "run_predict", "score_partition",
]  # fmt: skip

log = logging.getLogger(__name__)


class PredictError(RuntimeError):
    """Batch prediction cannot run; the message names the registry/partition and the fix."""


@dataclass
class LoadedModel:
    name: str  # xgboost | keras | tflite:<variant>
    version: str
    spec: dict[str, Any]
    predict_matrix: Callable[[np.ndarray], np.ndarray]
    # what computes the scores: "compiled" (pipelines.serving.treescore) or "xgboost" for an XGBoost model, else
    # the model's name; a fallback during a run rewrites it with the reason
    scorer: str = ""

    def __post_init__(self) -> None:
        self.scorer = self.scorer or self.name


# --------------------------------------------------------------------------- dates (pure)


class NoChampionError(PredictError):
    """The registry has no model under the requested alias yet."""


def resolve_dates(
    available: Sequence[str], *, date: str | None, start: str | None, end: str | None, window_days: int
) -> list[str]:
    """The partitions to score: ``date``, the range ``start..end`` (inclusive), or the newest ``window_days``."""

    if date is not None and (start is not None or end is not None):
        raise PredictError("pass either --date or --start/--end, not both")
    if (start is None) != (end is None):
        raise PredictError("--start and --end go together (an inclusive date range)")
    if date is not None:
        date = validate_date(date, name="--date")
        if date not in available:
            raise PredictError(f"partition date={date} is not in the lake (newest: {available[-3:]})")
        return [date]
    if start is not None and end is not None:
        start, end = validate_date(start, name="--start"), validate_date(end, name="--end")
        if start > end:
            raise PredictError(f"--start {start} is after --end {end}")
        picked = [d for d in available if start <= d <= end]
        if not picked:
            raise PredictError(
                f"no lake partitions between {start} and {end} (have {available[:1]}..{available[-1:]})"
            )
        return picked
    return list(available[-window_days:])


# --------------------------------------------------------------------------- model loading


def load_model(registry: str, *, version: str | None, model: str, scorer: str = "auto") -> LoadedModel:
    """A registered model from verified bytes: ``xgboost`` (default), ``keras`` or ``tflite:<variant>``.

    ``scorer`` (XGBoost only): ``compiled`` scores with :mod:`pipelines.serving.treescore` (XGBoost's scores bit for
    bit, about half the CPU; checked against the booster on probe rows at load and on the first rows
    scored, falling back to XGBoost on any difference), ``xgboost`` with ``Booster.inplace_predict``,
    ``auto`` compiled where numba is installed and the booster is supported."""
    if scorer not in SCORERS:
        raise PredictError(f"scorer {scorer!r}: expected one of {SCORERS}")

    reg = Registry(registry)
    alias = version if version is None or version in ALIASES else None
    if alias is not None or version is None:
        resolved = reg.alias(alias or "champion")
        if resolved is None:
            raise NoChampionError(
                f"registry {registry} has no {alias or 'champion'} yet; train, evaluate and register a model "
                f"first (`loopline register --registry {registry}`), or promote a version with "
                f"`loopline registry promote <version> --registry {registry}`"
            )
        version = resolved
    assert version is not None
    blobs = reg.verify(version)
    spec = loads_spec(blobs[models.SPEC_FILE])
    if model == "xgboost":
        if models.XGB_FILE not in blobs:
            raise PredictError(f"version {version} in {registry} has no {models.XGB_FILE}")
        import json

        meta = json.loads(blobs[models.XGB_META])
        xgb_scorer = models.XGBoostScorer.from_bytes(
            blobs[models.XGB_FILE], spec=spec, best_iteration=int(meta["best_iteration"])
        )
        loaded = LoadedModel("xgboost", version, spec, lambda x: x)
        loaded.predict_matrix, loaded.scorer = _xgboost_predictor(
            xgb_scorer.booster, (0, xgb_scorer.best_iteration + 1), scorer=scorer, loaded=loaded
        )
        return loaded
    if model == "keras":
        import tempfile
        from pathlib import Path

        models.quiet_tensorflow()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / models.KERAS_FILE
            path.write_bytes(blobs[models.KERAS_FILE])
            keras_scorer = models.KerasScorer.from_file(str(path), spec=spec)
        return LoadedModel("keras", version, spec, keras_scorer.predict_matrix)
    if model.startswith("tflite:"):
        variant = model.split(":", 1)[1]
        vdir = reg.version_dir(version)
        report_loc = storage.join(vdir, "quantize.json")
        loc = storage.join(vdir, "tflite", f"{variant}.tflite")
        report = storage.read_json(report_loc) if storage.exists(report_loc) else None
        published = sorted((report or {}).get("published") or [])
        if variant not in published or not storage.exists(loc):
            if published:
                choices = ", ".join(f"tflite:{v}" for v in published)
                raise PredictError(
                    f"--model {model!r}: version {version} has no published {variant!r} TFLite model; choose one "
                    f"of {choices} (a variant failing the parity gate is not published)"
                )
            raise PredictError(
                f"{loc}: version {version} has no published TFLite model; run `loopline quantize "
                f"--registry {registry} --version {version}` (a variant failing the parity gate is not published)"
            )
        data = storage.read_bytes(loc)
        assert report is not None  # a published variant implies the report that lists it
        expected = report["variants"][variant]["sha256"]
        if sha256_bytes(data) != expected:
            raise PredictError(f"{loc}: sha256 does not match {report_loc}; re-run `loopline quantize`")
        edge = EdgeModel(data)
        return LoadedModel(model, version, spec, edge.predict_matrix)
    raise PredictError(f"--model {model!r}: expected xgboost, keras or tflite:<variant>")


SCORERS = ("auto", "compiled", "xgboost")
_CHECK_ROWS = 2048  # rows of a run's first chunk that the compiled scores are checked on against XGBoost


def _xgboost_predictor(
    booster: Any, rng: tuple[int, int], *, scorer: str, loaded: LoadedModel
) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """The matrix -> float64 probabilities function for a booster, and the scorer's name (see load_model)."""

    def xgb_predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(booster.inplace_predict(x, iteration_range=rng), dtype=np.float64)

    if scorer == "xgboost" or (scorer == "auto" and not numba_available()):
        return xgb_predict, "xgboost"
    if not numba_available():
        raise PredictError("scorer compiled needs numba (pip install numba), or set predict.scorer: xgboost")
    from pipelines.serving import treescore  # optional: numba; XGBoost scores without it

    try:
        compiled = treescore.compile_booster(booster, rng)
        compiled.verify(booster, rng)
    except (treescore.Unsupported, treescore.Mismatch) as e:
        if scorer == "compiled":
            raise PredictError(
                f"the compiled scorer cannot score this model ({e}); set predict.scorer: xgboost"
            ) from e
        log.info("predict: scoring with XGBoost (the compiled scorer: %s)", e)
        return xgb_predict, "xgboost"
    checked = False
    helper = _SplitScorer(compiled.predict)

    def compiled_predict(x: np.ndarray) -> np.ndarray:
        nonlocal checked
        if loaded.scorer != "compiled":  # fell back earlier in this run
            return xgb_predict(x)
        got = helper(x)
        if not checked and len(x):
            checked = True
            head = np.ascontiguousarray(x[:_CHECK_ROWS])
            ref = np.asarray(booster.inplace_predict(head, iteration_range=rng))
            if not np.array_equal(ref, got[: len(head)], equal_nan=True):
                loaded.scorer = "xgboost (the compiled scores differed on the first rows)"
                log.warning(
                    "predict: the compiled scores differ from XGBoost's on the first rows; using XGBoost"
                )
                return xgb_predict(x)
        return got.astype(np.float64)

    return compiled_predict, "compiled"


class _SplitScorer:
    """Score a matrix in two halves, one on a helper thread (the compiled kernel releases the GIL), as
    XGBoost scores on all cores; one thread where there is one core or few rows."""

    def __init__(self, score: Callable[..., np.ndarray], min_rows: int = 16_384) -> None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        self.score = score
        self.min_rows = min_rows
        self.pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopline-trees")
            if (os.cpu_count() or 1) > 1
            else None
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x), dtype=np.float32)
        if self.pool is None or len(x) < self.min_rows:
            return self.score(x, out)
        half = len(x) // 2
        other = self.pool.submit(self.score, x[half:], out[half:])
        self.score(x[:half], out[:half])
        other.result()
        return out


# --------------------------------------------------------------------------- one partition


def _schema(loc: str) -> Any:
    """The Arrow schema of a parquet file from its footer (no data read)."""
    import io

    import pyarrow.parquet as pq

    path = storage.local_path(loc)
    return pq.read_schema(path if path is not None else io.BytesIO(storage.read_bytes(loc)))


def _part_name(m: LoadedModel) -> str:
    suffix = "" if m.name == "xgboost" else "-" + m.name.replace(":", "-")
    return f"part-{m.version}{suffix}.parquet"


def score_partition(
    lake: str,
    date: str,
    *,
    model: LoadedModel,
    params: Params,
    cfg: PredictConfig,
    progress: bool = True,
) -> Any:
    """Predictions for one lake partition as an Arrow table (pure apart from reading the lake)."""
    import pyarrow as pa

    batches = list(iter_scored(lake, date, model=model, params=params, cfg=cfg, progress=progress))
    return pa.Table.from_batches(batches)


def iter_scored(
    lake: str,
    date: str,
    *,
    model: LoadedModel,
    params: Params,
    cfg: PredictConfig,
    progress: bool = True,
) -> Iterator[Any]:
    """Predictions for one lake partition as Arrow record batches of at most ``cfg.chunk_rows`` rows.

    Arrow to numpy without pandas: categorical inputs go to the spec dictionary-coded (each distinct
    value transformed once). The model scores chunk ``i`` on its own threads (XGBoost, TFLite and
    TensorFlow release the GIL) while chunk ``i + 1`` is read and transformed and chunk ``i - 1`` is
    consumed (encoded by :func:`pipelines.core.storage.write_parquet_batches`): the model's time overlaps the
    rest instead of adding to it. The feature matrix comes from the compiled kernel
    (:func:`pipelines.features.kernels.transform`, the numpy reference's matrix bit for bit; the reference itself
    when numba is not installed), written into two matrices used in turn, so a chunk costs no fresh
    memory (page faults of a new 100 MB matrix cost as much as filling it).
    """
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    if numba_available():
        from pipelines.features import kernels  # optional: numba; the numpy transform runs without it

        scratch: Any = kernels.Scratch()

        def to_matrix(columns: dict[str, Any], n: int, chunk: int) -> np.ndarray:
            # two matrices in turn: the model reads one while the next chunk fills the other
            out = scratch.get(f"matrix{chunk % 2}", (n, len(spec["feature_names"])), np.float32)
            return kernels.transform(spec, columns, out=out, scratch=scratch)
    else:  # the numpy reference: the same matrix, slower

        def to_matrix(columns: dict[str, Any], n: int, chunk: int) -> np.ndarray:
            return fs.transform(spec, columns)

    spec = model.spec
    key = params.schema.entity_key
    agg_cols: list[str] = list(spec.get("aggregates", {}).get("columns") or [])
    windows = list(spec.get("aggregates", {}).get("windows") or [])
    value = spec.get("aggregates", {}).get("value_column")
    inputs = [c for c in fs.input_columns(spec) if c not in agg_cols]
    parts = storage.list_files(partition_path(lake, date), "part-*.parquet")
    if not parts:
        raise PredictError(f"{partition_path(lake, date)}: no parquet parts to score")
    aggregates: dict[str, np.ndarray] | None = None
    agg_ids: Any = None
    if agg_cols and set(aggregate_columns(key, windows, value)) != set(agg_cols):
        raise PredictError(f"spec aggregates {agg_cols} do not match its windows {windows}; refit the spec")
    extra = [c for c in cfg.extra_columns if c not in ("event_id", "event_time", key)]
    read_cols = list(dict.fromkeys(["event_id", "event_time", key, *inputs, *extra]))
    total = sum(_num_rows(p) for p in parts)
    consts = [("model", model.name), ("model_version", model.version), ("spec_digest", spec["digest"])]
    offset = 0
    scored = 0
    chunk = 0
    from tqdm import tqdm

    def finish(batch: Any, keep: list[str], scores: np.ndarray) -> Any:
        n = batch.num_rows
        names = [*keep, "score", *(name for name, _ in consts)]
        # the constants as one-value dictionaries: nothing for the writer to encode
        zeros = pa.array(np.zeros(n, dtype=np.int32))
        arrays = [*(batch.column(c) for c in keep), pa.array(scores, type=pa.float64()),
                  *(pa.DictionaryArray.from_arrays(zeros, pa.array([v], type=pa.string())) for _, v in consts)]  # fmt: skip
        bar.update(n)
        return pa.RecordBatch.from_arrays(arrays, names=names)

    with (
        tqdm(total=total, desc=f"predict {date}", unit="row", disable=not progress, leave=False) as bar,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopline-score") as pool,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopline-aggregates") as fronts,
    ):
        # the aggregates (history read, one sweep; GIL released) on their own thread while the first
        # chunk is read here: the chunk needs them only when its matrix is filled
        front = (
            fronts.submit(_partition_aggregates, lake, date, parts, spec=spec, cfg=cfg, key=key, progress=progress)
            if agg_cols else None
        )  # fmt: skip
        pending = None
        for p in parts:
            schema = _schema(p)
            cols = [c for c in read_cols if c in schema.names]
            # text columns (not the unique ids) arrive dictionary-coded: the spec wants codes anyway and
            # the predictions file writes a dictionary as it is
            coded = [c for c in cols if c != "event_id" and pa.types.is_string(schema.field(c).type)]
            batches = storage.iter_parquet_batches(
                p, batch_size=cfg.chunk_rows, columns=cols, read_dictionary=coded
            )
            for batch in batches:
                n = batch.num_rows
                columns = arrow_columns(batch, inputs)
                if front is not None:
                    if aggregates is None:
                        aggregates, agg_ids = front.result()
                    if not pa.chunked_array([batch.column("event_id")]).equals(agg_ids.slice(offset, n)):
                        raise PredictError(f"{p}: rows changed while scoring (event ids out of step); re-run")
                    for c in agg_cols:
                        columns[c] = aggregates[c][offset : offset + n]
                x = to_matrix(columns, n, chunk)
                chunk += 1
                keep = ["event_id", "event_time", key, *[c for c in extra if c in batch.schema.names]]
                job = ((batch, keep), pool.submit(model.predict_matrix, x))
                if pending is not None:
                    scored += pending[0][0].num_rows
                    yield finish(*pending[0], pending[1].result())
                pending = job
                offset += n
        if pending is not None:
            scored += pending[0][0].num_rows
            yield finish(*pending[0], pending[1].result())
    if not scored:
        raise PredictError(f"{partition_path(lake, date)}: the partition has no rows to score")


def _partition_aggregates(
    lake: str,
    date: str,
    parts: list[str],
    *,
    spec: Mapping[str, Any],
    cfg: PredictConfig,
    key: str,
    progress: bool,
) -> tuple[dict[str, np.ndarray], Any]:
    """The point-in-time aggregates of a partition's rows (in file order) and their event ids."""
    import pyarrow as pa

    windows = list(spec["aggregates"]["windows"])
    value = spec["aggregates"].get("value_column")
    narrow = ["event_id", "event_time", key, *([value] if value else [])]
    day = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)
    max_window = dt.timedelta(seconds=max(parse_window(w) for w in windows))
    # Training read history from the fit window's start minus the longest window, so an entity's
    # secs_since_prev saw every earlier event since then: read the same, bounded by lookback_days.
    fit_start = dt.datetime.fromisoformat(spec["fit"]["window"]["start"]) - max_window
    start = max(min(fit_start, day - max_window), day - dt.timedelta(days=cfg.lookback_days))
    before = day - dt.timedelta(microseconds=1)
    counted = narrow[1:]  # the history's event ids are never needed
    history = history_table(lake, start=start, end=before, columns=counted, progress=progress)
    current = pa.concat_tables(
        [storage.read_parquet(p, columns=narrow) for p in parts], promote_options="default"
    )
    events = (
        current.select(counted)
        if history is None
        else pa.concat_tables([history.select(counted), current.select(counted)], promote_options="default")
    )
    n_hist = events.num_rows - current.num_rows
    aggregates = aggregate_arrays(
        _epoch_us(events.column("event_time")), _codes(events.column(key)),
        _floats(events.column(value)) if value else None,
        entity_key=key, windows=windows, value_column=value, rows=slice(n_hist, events.num_rows),
    )  # fmt: skip
    return aggregates, current.column("event_id")


def _epoch_us(col: Any) -> np.ndarray:
    """A timestamp (or time text) column as int64 epoch microseconds."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(col.type):
        return pc.cast(pc.cast(col, pa.timestamp("us", tz=col.type.tz)), pa.int64()).to_numpy(
            zero_copy_only=False
        )

    return epoch_us(col.to_pandas())


def _codes(col: Any) -> np.ndarray:
    """Entity codes of a key column (equal values, equal codes; null -> -1)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return pc.fill_null(pc.dictionary_encode(arr).indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _floats(col: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)


def _num_rows(loc: str) -> int:
    import io

    import pyarrow.parquet as pq

    path = storage.local_path(loc)
    return int(
        pq.ParquetFile(path if path is not None else io.BytesIO(storage.read_bytes(loc))).metadata.num_rows
    )


def arrow_columns(batch: Any, names: Sequence[str]) -> dict[str, Any]:
    """Arrow columns as the arrays :func:`featurespec.transform` takes, without pandas: numbers as float64
    (null -> NaN), timestamps as int64 epoch microseconds, strings dictionary-coded
    (:class:`featurespec.Coded`, null -> missing). Gives the same features as ``features.frame_to_columns``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, Any] = {}
    for name in names:
        col = batch.column(name)
        typ = col.type
        if pa.types.is_timestamp(typ):
            out[name] = _epoch_us(col)
        elif pa.types.is_integer(typ) or pa.types.is_floating(typ):
            out[name] = _floats(col)
        else:
            enc = pc.dictionary_encode(pc.cast(col, pa.string()) if not pa.types.is_dictionary(typ) else col)
            codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False)
            out[name] = Coded(codes, [str(v) for v in enc.dictionary.to_pylist()])
    return out


# --------------------------------------------------------------------------- the stage (I/O edge)


def run_predict(
    *,
    lake: str,
    registry: str,
    out: str,
    date: str | None = None,
    start: str | None = None,
    end: str | None = None,
    model: str = "xgboost",
    version: str | None = None,
    cfg: PredictConfig,
    params: Params,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the chosen partitions and write one predictions file per date; returns a run summary."""

    started = time.perf_counter()
    available = lake_dates(lake)
    if not available:
        raise PredictError(f"lake {lake} has no partitions; run `loopline etl` first")
    dates = resolve_dates(available, date=date, start=start, end=end, window_days=cfg.window_days)
    loaded = load_model(registry, version=version, model=model, scorer=cfg.scorer)
    written: dict[str, Any] = {}
    rows = 0
    for d in dates:
        t0 = time.perf_counter()
        loc = storage.join(out, f"date={d}", _part_name(loaded))
        sums = [0.0, 0]  # score total, rows: the day's mean score without keeping the scores
        n = storage.write_parquet_batches(
            loc, _tally(iter_scored(lake, d, model=loaded, params=params, cfg=cfg, progress=progress), sums),
            no_dictionary=["event_id", "event_time", "score"], statistics=["event_time", "score"],
            store_schema=False,  # text columns come dictionary-coded; readers get plain strings
        )  # fmt: skip
        written[d] = {"file": loc, "rows": n, "seconds": round(time.perf_counter() - t0, 3),
                      "mean_score": sums[0] / sums[1] if sums[1] else None}  # fmt: skip
        rows += n
        log.info("predict: %s %d rows -> %s", d, n, loc)
    wall = time.perf_counter() - started
    return {
        "model": loaded.name,
        "model_version": loaded.version,
        "scorer": loaded.scorer,
        "spec_digest": loaded.spec["digest"],
        "dates": dates,
        "partitions": written,
        "rows": rows,
        "wall_seconds": round(wall, 3),
        "rows_per_second": rows / wall if wall > 0 else 0.0,
    }


def _tally(batches: Iterator[Any], sums: list[Any]) -> Iterator[Any]:
    """Pass the batches through, adding their score total and row count to ``sums``."""
    import pyarrow.compute as pc

    for b in batches:
        sums[0] += pc.sum(b.column("score")).as_py() or 0.0
        sums[1] += b.num_rows
        yield b


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    return [f"{d}: {v['rows']} rows, mean score {v['mean_score']}" for d, v in summary["partitions"].items()]
