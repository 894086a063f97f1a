"""Batch prediction stage: score lake partitions with a registered model (the champion by default).

``loopline predict`` scores one partition (``--date``), a range (``--start``/``--end``) or, by default, the
newest ``predict.window_days`` partitions, and writes ``<out>/date=D/part-<version>.parquet`` (atomic, via
pipelines.storage; a model other than XGBoost adds ``-<model>`` to the name) with, on every row:
``event_id``, ``event_time``, the entity key, ``score``, ``model``, ``model_version``, ``spec_digest`` and
the ``predict.extra_columns`` the lake has (slice columns for monitoring).

Point-in-time aggregates are computed exactly as in training (:func:`pipelines.features.entity_aggregates`,
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import Params, PredictConfig

__all__ = ["LoadedModel", "PredictError", "load_model", "resolve_dates", "run_predict", "score_partition"]

log = logging.getLogger(__name__)


class PredictError(RuntimeError):
    """Batch prediction cannot run; the message names the registry/partition and the fix."""


@dataclass
class LoadedModel:
    name: str  # xgboost | keras | tflite:<variant>
    version: str
    spec: dict[str, Any]
    predict_matrix: Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- dates (pure)


class NoChampionError(PredictError):
    """The registry has no model under the requested alias yet."""


def resolve_dates(
    available: Sequence[str], *, date: str | None, start: str | None, end: str | None, window_days: int
) -> list[str]:
    """The partitions to score: ``date``, the range ``start..end`` (inclusive), or the newest ``window_days``."""
    from pipelines.etl import validate_date

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


def load_model(registry: str, *, version: str | None, model: str) -> LoadedModel:
    """A registered model from verified bytes: ``xgboost`` (default), ``keras`` or ``tflite:<variant>``."""
    from pipelines import models, storage
    from pipelines.featurespec import loads_spec
    from pipelines.registry import ALIASES, Registry, sha256_bytes

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
        scorer = models.XGBoostScorer.from_bytes(
            blobs[models.XGB_FILE], spec=spec, best_iteration=int(meta["best_iteration"])
        )
        rng = (0, scorer.best_iteration + 1)

        def xgb_predict(x: np.ndarray) -> np.ndarray:
            return np.asarray(scorer.booster.inplace_predict(x, iteration_range=rng), dtype=np.float64)

        return LoadedModel("xgboost", version, spec, xgb_predict)
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
        from pipelines.edge import EdgeModel

        variant = model.split(":", 1)[1]
        vdir = reg.version_dir(version)
        report_loc = storage.join(vdir, "quantize.json")
        loc = storage.join(vdir, "tflite", f"{variant}.tflite")
        if not storage.exists(report_loc) or not storage.exists(loc):
            raise PredictError(
                f"{loc}: version {version} has no published {variant} TFLite model; run `loopline quantize "
                f"--registry {registry} --version {version}` (a variant failing the parity gate is not published)"
            )
        data = storage.read_bytes(loc)
        expected = storage.read_json(report_loc)["variants"][variant]["sha256"]
        if sha256_bytes(data) != expected:
            raise PredictError(f"{loc}: sha256 does not match {report_loc}; re-run `loopline quantize`")
        edge = EdgeModel(data)
        return LoadedModel(model, version, spec, edge.predict_matrix)
    raise PredictError(f"--model {model!r}: expected xgboost, keras or tflite:<variant>")


# --------------------------------------------------------------------------- one partition


def _schema_names(loc: str) -> list[str]:
    """Column names of a parquet file from its footer (no data read)."""
    import io

    import pyarrow.parquet as pq

    from pipelines import storage

    path = storage.local_path(loc)
    return list(pq.read_schema(path if path is not None else io.BytesIO(storage.read_bytes(loc))).names)


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

    from pipelines import featurespec as fs
    from pipelines import storage
    from pipelines.etl import partition_path
    from pipelines.features import (
        aggregate_columns,
        entity_aggregates,
        load_history,
        parse_window,
    )

    spec = model.spec
    key = params.schema.entity_key
    agg_cols: list[str] = list(spec.get("aggregates", {}).get("columns") or [])
    windows = list(spec.get("aggregates", {}).get("windows") or [])
    value = spec.get("aggregates", {}).get("value_column")
    inputs = [c for c in fs.input_columns(spec) if c not in agg_cols]
    parts = storage.list_files(partition_path(lake, date), "part-*.parquet")
    if not parts:
        raise PredictError(f"{partition_path(lake, date)}: no parquet parts to score")
    narrow = ["event_id", "event_time", key, *([value] if value else [])]
    aggregates: pd.DataFrame | None = None
    if agg_cols:
        if set(aggregate_columns(key, windows, value)) != set(agg_cols):
            raise PredictError(
                f"spec aggregates {agg_cols} do not match its windows {windows}; refit the spec"
            )
        day = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)
        max_window = dt.timedelta(seconds=max(parse_window(w) for w in windows))
        # Training read history from the fit window's start minus the longest window, so an entity's
        # secs_since_prev saw every earlier event since then: read the same, bounded by lookback_days.
        fit_start = dt.datetime.fromisoformat(spec["fit"]["window"]["start"]) - max_window
        start = max(min(fit_start, day - max_window), day - dt.timedelta(days=cfg.lookback_days))
        before = day - dt.timedelta(microseconds=1)
        history = load_history(lake, start=start, end=before, columns=narrow)
        current = pa.concat_tables([storage.read_parquet(p, columns=narrow) for p in parts]).to_pandas()
        events = pd.concat([history, current], ignore_index=True) if len(history) else current
        aggs = entity_aggregates(events, entity_key=key, windows=windows, value_column=value)
        aggregates = aggs.iloc[len(events) - len(current) :].reset_index(drop=True)
    extra = [c for c in cfg.extra_columns if c not in ("event_id", "event_time", key)]
    read_cols = list(dict.fromkeys(["event_id", "event_time", key, *inputs, *extra]))
    total = sum(_num_rows(p) for p in parts)
    out: list[pa.RecordBatch] = []
    agg_ids = aggregates["event_id"].to_numpy() if aggregates is not None else None
    offset = 0
    from tqdm import tqdm

    with tqdm(total=total, desc=f"predict {date}", unit="row", disable=not progress, leave=False) as bar:
        for p in parts:
            present = set(_schema_names(p))
            cols = [c for c in read_cols if c in present]
            for batch in storage.iter_parquet_batches(p, batch_size=cfg.chunk_rows, columns=cols):
                n = batch.num_rows
                columns = arrow_columns(batch, [c for c in fs.input_columns(spec) if c not in agg_cols])
                if aggregates is not None and agg_ids is not None:
                    ids = batch.column("event_id").to_numpy(zero_copy_only=False)
                    if not np.array_equal(agg_ids[offset : offset + n], ids):
                        raise PredictError(f"{p}: rows changed while scoring (event ids out of step); re-run")
                    for c in agg_cols:
                        columns[c] = aggregates[c].to_numpy()[offset : offset + n]
                scores = model.predict_matrix(fs.transform(spec, columns))
                keep = ["event_id", "event_time", key, *[c for c in extra if c in batch.schema.names]]
                out.append(batch.select(keep).append_column("score", pa.array(scores, type=pa.float64())))
                offset += n
                bar.update(n)
    if not out:
        raise PredictError(f"{partition_path(lake, date)}: the partition has no rows to score")
    result = pa.Table.from_batches(out)
    n = result.num_rows
    for name, value in (
        ("model", model.name),
        ("model_version", model.version),
        ("spec_digest", spec["digest"]),
    ):
        result = result.append_column(name, pa.array([value] * n, type=pa.string()))
    return result


def _num_rows(loc: str) -> int:
    import io

    import pyarrow.parquet as pq

    from pipelines import storage

    path = storage.local_path(loc)
    return int(
        pq.ParquetFile(path if path is not None else io.BytesIO(storage.read_bytes(loc))).metadata.num_rows
    )


def arrow_columns(batch: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrow columns as the arrays :func:`featurespec.transform` takes, without pandas: numbers as float64
    (null -> NaN), timestamps as int64 epoch microseconds, strings through their dictionary (null -> "",
    which the spec reads as missing). Gives the same features as ``features.frame_to_columns``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, np.ndarray] = {}
    for name in names:
        col = batch.column(name)
        typ = col.type
        if pa.types.is_timestamp(typ):
            us = pc.cast(pc.cast(col, pa.timestamp("us", tz=typ.tz)), pa.int64())
            out[name] = us.to_numpy(zero_copy_only=False)
        elif pa.types.is_integer(typ) or pa.types.is_floating(typ):
            out[name] = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        else:
            enc = pc.dictionary_encode(pc.cast(col, pa.string()) if not pa.types.is_dictionary(typ) else col)
            vocab = np.array([*(str(v) for v in enc.dictionary.to_pylist()), ""], dtype=str)
            idx = pc.fill_null(enc.indices, len(vocab) - 1).to_numpy(zero_copy_only=False)
            out[name] = vocab[idx]
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
    import pyarrow.compute as pc

    from pipelines import storage
    from pipelines.etl import lake_dates

    started = time.perf_counter()
    available = lake_dates(lake)
    if not available:
        raise PredictError(f"lake {lake} has no partitions; run `loopline etl` first")
    dates = resolve_dates(available, date=date, start=start, end=end, window_days=cfg.window_days)
    loaded = load_model(registry, version=version, model=model)
    written: dict[str, Any] = {}
    rows = 0
    for d in dates:
        t0 = time.perf_counter()
        pred = score_partition(lake, d, model=loaded, params=params, cfg=cfg, progress=progress)
        loc = storage.join(out, f"date={d}", _part_name(loaded))
        storage.write_parquet(loc, pred)
        mean = pc.mean(pred.column("score")).as_py()
        written[d] = {"file": loc, "rows": pred.num_rows, "seconds": round(time.perf_counter() - t0, 3),
                      "mean_score": mean}  # fmt: skip
        rows += pred.num_rows
        log.info("predict: %s %d rows -> %s", d, pred.num_rows, loc)
    wall = time.perf_counter() - started
    return {
        "model": loaded.name,
        "model_version": loaded.version,
        "spec_digest": loaded.spec["digest"],
        "dates": dates,
        "partitions": written,
        "rows": rows,
        "wall_seconds": round(wall, 3),
        "rows_per_second": rows / wall if wall > 0 else 0.0,
    }


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    return [f"{d}: {v['rows']} rows, mean score {v['mean_score']}" for d, v in summary["partitions"].items()]
