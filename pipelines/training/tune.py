"""The tuning stage: Optuna TPE with pruning over the XGBoost search space in ``tune.space``.

One study lives in the storage at ``tune.storage`` (SQLite by default, PostgreSQL for several machines).
``tune.workers`` processes share it: each loads the study and optimizes its share of the remaining
trials, so a trial is claimed exactly once by the storage. The study is resumable: a rerun counts the
finished (COMPLETE + PRUNED) trials and runs only the rest up to ``tune.n_trials``; raising ``n_trials``
continues the same study. Failed trials do not count; a trial left RUNNING by a killed worker is failed by
Optuna's heartbeat once its grace period has passed.

``study_name: auto`` names the study after what makes its trials comparable: the feature spec digest, the
search space, the base parameters, the budget per trial and the seed. New features give a new study;
more trials or more workers continue the old one.

Each trial trains XGBoost (hist) on a stratified sample of the labelled train rows (``max_train_rows``)
with early stopping on valid; optuna-integration's XGBoost pruning callback reports the valid metric
every ``tune.prune_interval`` boosting rounds, and the median, percentile or Hyperband pruner (``tune.pruner``) stops the unpromising
trials early.

Outputs: ``<out>/best_params.json`` (consumed by ``loopline train``), ``<out>/summary.json`` (metrics)
and ``<out>/dvclive`` (one step per trial: value, running best, pruned flag, rounds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.core import storage
from pipelines.core.config import Params, TrainConfig, TuneConfig, params_file
from pipelines.edge.featurespec import loads_spec, spec_digest
from pipelines.training.imbalance import scale_pos_weight
from pipelines.training.models import SPEC_FILE, booster_params, labels, train_mask, weights

__all__ = [
    "TuneData",
    "auto_study_name",
    "best_params_document",
    "load_tune_data",
    "make_objective",
    "open_study",
    "redact_url",
    "run_tune",
    "split_trials",
    "suggest",
]

log = logging.getLogger(__name__)

MAXIMIZE = {"aucpr": True, "auc": True, "logloss": False}


# --------------------------------------------------------------------------- pure helpers


class TuneError(RuntimeError):
    """The study could not finish: no complete trial, or a worker failed (the message says which and why)."""


def _has_best(study: Any) -> bool:
    """Whether the study has a finished trial yet (``best_value`` raises before the first)."""
    try:
        study.best_value  # noqa: B018
    except ValueError:
        return False
    return True


def suggest(trial: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    """Sample one point of the search space (``tune.space``: name -> SearchDimension)."""
    out: dict[str, Any] = {}
    for name, dim in space.items():
        if dim.type == "categorical":
            out[name] = trial.suggest_categorical(name, list(dim.choices))
        elif dim.type == "int":
            out[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        else:
            out[name] = trial.suggest_float(name, float(dim.low), float(dim.high), log=dim.log)
    return out


def split_trials(remaining: int, workers: int) -> list[int]:
    """Split ``remaining`` trials over ``workers`` as evenly as possible (no zero shares)."""
    if remaining <= 0:
        return []
    base, extra = divmod(remaining, workers)
    return [s for s in (base + (1 if i < extra else 0) for i in range(workers)) if s > 0]


def auto_study_name(spec: Mapping[str, Any], *, tune: TuneConfig, train: TrainConfig, seed: int) -> str:
    """A name that changes whenever old trials stop being comparable (data, space, budget, base params)."""

    key = {
        "space": {k: v.model_dump() for k, v in sorted(tune.space.items())},
        "base": train.xgboost.params.model_dump(),
        "metric": train.xgboost.eval_metric,
        "scale_pos_weight": train.imbalance.scale_pos_weight,
        "budget": [
            tune.num_boost_round,
            tune.early_stopping_rounds,
            tune.max_train_rows,
            tune.pruner,
            tune.warmup_rounds,
            tune.startup_trials,
            tune.prune_interval,
            tune.percentile,
            tune.reduction_factor,
            # appended only when set, so the names of studies made before these settings existed stay resumable
            *([tune.prune_clock] if tune.prune_clock != "rounds" else []),
            *([tune.prune_startup_trials] if tune.prune_startup_trials is not None else []),
        ],
        "seed": seed,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"xgb-{spec_digest(spec)[:10]}-{digest}"


def redact_url(url: str) -> str:
    """A storage URL without its password, for reports."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: show only the scheme
        return url.split("://", 1)[0] + "://***"


def best_params_document(study: Any, *, metric: str) -> dict[str, Any]:
    """``best_params.json``: the best COMPLETE trial's parameters and where they came from."""
    import optuna

    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not finished:
        raise TuneError(
            f"study {study.study_name!r} has no complete trial (all pruned or failed); "
            "raise tune.n_trials or tune.timeout_s, or lower tune.warmup_rounds"
        )
    best = study.best_trial
    return {
        "xgboost": dict(best.params),
        "value": float(best.value),
        "metric": metric,
        "trial": best.number,
        "best_iteration": best.user_attrs.get("best_iteration"),
        "study_name": study.study_name,
    }


def make_pruner(tune: TuneConfig) -> Any:
    """The Optuna pruner of ``tune.pruner``; steps are boosting rounds (0-based), reported every
    ``tune.prune_interval`` rounds. With ``tune.prune_clock: progress`` a step is a round at the space's
    highest learning rate (``progress_step``), and every round count below is on that clock: a trial at the
    highest rate sees exactly the rounds clock, a slower one reaches each step later, up to
    ``num_boost_round`` x its rate / the highest rate.

    ``median`` and ``percentile`` compare a trial's best valid score so far with the ``tune.percentile``-th
    percentile (median: 50th) of the finished trials' scores at the same round, once
    ``prune_startup_trials`` (default ``startup_trials``) trials have finished and after ``warmup_rounds``
    rounds. ``hyperband`` runs successive halving brackets from ``warmup_rounds`` up to ``num_boost_round``
    rounds with ``tune.reduction_factor``.
    """
    import optuna

    if tune.pruner in ("median", "percentile"):
        return optuna.pruners.PercentilePruner(
            50.0 if tune.pruner == "median" else tune.percentile,
            n_startup_trials=(
                tune.startup_trials if tune.prune_startup_trials is None else tune.prune_startup_trials
            ),
            n_warmup_steps=tune.warmup_rounds,
        )
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, tune.warmup_rounds),
            max_resource=tune.num_boost_round,
            reduction_factor=tune.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def reports_at(epoch: int, every: int) -> bool:
    """Whether boosting round ``epoch`` (0-based) reports to the pruner: after every ``every``-th round."""
    return (epoch + 1) % every == 0


def progress_step(epoch: int, learning_rate: float, top_rate: float) -> int:
    """The pruner step of boosting round ``epoch`` (0-based) on the progress clock: the rounds done, weighted
    by ``learning_rate / top_rate`` (``top_rate``: the space's highest learning rate), 0-based like the
    rounds clock (-1 until the first whole step).

    Why: XGBoost's shrinkage makes a trial at half the learning rate need about twice the rounds for the same
    fit, so at equal rounds the pruner mostly ranks learning rates, not configurations. Why the highest rate
    as the unit: each round then advances a trial by at most one step, so every trial passes every step and
    reports at the same steps as the others; Optuna's percentile pruner compares only at identical steps. At
    ``learning_rate == top_rate`` the two clocks agree."""
    if learning_rate <= 0 or top_rate <= 0:
        raise ValueError(f"learning rates must be > 0, got {learning_rate} and {top_rate}")
    return math.floor((epoch + 1) * min(learning_rate, top_rate) / top_rate + 1e-9) - 1


class _CompletedSnapshot:
    """What Optuna's percentile/median pruner reads from a study (its direction and its complete trials),
    from a snapshot held in this process. Only complete trials are held: that pruner asks for no others."""

    def __init__(self, direction: Any, completed: list[Any]) -> None:
        self.direction, self._completed = direction, completed

    def get_trials(self, deepcopy: bool = False, states: Any = None) -> list[Any]:
        return self._completed


def pruning_callback_class() -> type:
    """``optuna_integration.XGBoostPruningCallback``, consulted every ``every`` steps only: the stock
    callback reports every round, and each report is a storage write.

    With the median/percentile pruner the decision is taken in this process: the trial's own intermediate
    values are the ones it reported, and the complete trials (which never change) come from a snapshot
    refreshed at most every ``snapshot_seconds``. The stock ``trial.should_prune()`` reads the running trial
    and the study's unfinished trials back from storage at every check: measured at one check per round,
    those reads and the report writes were 30% of a pruned study's CPU, as much as half its boosting. The
    decision is Optuna's own (``pruner.prune``); only its inputs are local. Hyperband keeps the stock path
    (its rungs live in storage).

    ``rate_scale`` (learning rate / the space's highest) switches to the progress clock (``progress_step``):
    a step is reported at the first round that reaches it. A pruned trial records the rounds it ran in the
    ``rounds`` user attribute, since on that clock its last step is not its round count."""
    import optuna
    from optuna_integration import XGBoostPruningCallback

    class PruningCallback(XGBoostPruningCallback):
        def __init__(
            self,
            trial: Any,
            *,
            dataset: str,
            metric: str,
            every: int,
            rate_scale: float | None = None,
            snapshot_seconds: float = 5.0,
        ) -> None:
            super().__init__(trial, f"{dataset}-{metric}")
            self.dataset, self.metric, self.every, self.rate_scale = dataset, metric, every, rate_scale
            self.last_step = -1
            pruner = getattr(getattr(trial, "study", None), "pruner", None)
            self.local = isinstance(pruner, optuna.pruners.PercentilePruner)  # median is one too
            self.values: dict[int, float] = {}
            self.snapshot_seconds = snapshot_seconds
            self._snapshot: _CompletedSnapshot | None = None
            self._taken = 0.0

        def _should_prune(self) -> bool:
            if not self.local:
                return bool(self._trial.should_prune())
            study = self._trial.study
            now = time.monotonic()
            if self._snapshot is None or now - self._taken > self.snapshot_seconds:
                done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                self._snapshot, self._taken = _CompletedSnapshot(study.direction, done), now
            me = optuna.trial.FrozenTrial(
                number=self._trial.number, state=optuna.trial.TrialState.RUNNING, value=None,
                datetime_start=None, datetime_complete=None, params={}, distributions={}, user_attrs={},
                system_attrs={}, intermediate_values=dict(self.values), trial_id=self._trial._trial_id,
            )  # fmt: skip
            return bool(study.pruner.prune(self._snapshot, me))

        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            if self.rate_scale is None:
                if not reports_at(epoch, self.every):
                    return False
                step = epoch
            else:
                step = progress_step(epoch, self.rate_scale, 1.0)
                if step <= self.last_step or not reports_at(step, self.every):
                    return False
                self.last_step = step
            value = float(evals_log[self.dataset][self.metric][-1])
            self._trial.report(value, step=step)
            self.values[step] = value
            if self._should_prune():
                self._trial.set_user_attr("rounds", epoch + 1)
                on = "" if self.rate_scale is None else f" (progress step {step})"
                raise optuna.TrialPruned(f"Trial was pruned at iteration {epoch}{on}.")
            return False

    return PruningCallback


# --------------------------------------------------------------------------- data and objective


@dataclass
class TuneData:
    x_tr: np.ndarray
    y_tr: np.ndarray
    w_tr: np.ndarray
    x_va: np.ndarray
    y_va: np.ndarray
    feature_names: list[str]


def _stratified_rows(y: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    if max_rows is None or len(y) <= max_rows:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = max(1, round(max_rows * len(idx) / len(y)))
        keep.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def load_tune_data(features: str, *, max_rows: int | None, seed: int) -> TuneData:
    """Labelled train (stratified sample) and valid rows as matrices, reading only the needed columns."""

    spec = loads_spec(storage.read_bytes(storage.join(features, SPEC_FILE)))
    names = list(spec["feature_names"])
    frames = {}
    for split in ("train", "valid"):
        loc = storage.join(features, f"{split}.parquet")
        if not storage.exists(loc):
            raise FileNotFoundError(
                f"{loc}: the {split} split is missing; run the feature stage (loopline features)"
            )
        present = set(_schema_names(loc))
        cols = [c for c in (*names, "label", "label_weight", "sample_weight") if c in present]
        table = storage.read_parquet(loc, columns=cols)
        df = table.to_pandas()
        frames[split] = df[train_mask(df)]
    tr, va = frames["train"], frames["valid"]
    y_tr = labels(tr)
    rows = _stratified_rows(y_tr, max_rows, seed)
    return TuneData(
        x_tr=tr[names].to_numpy(np.float32)[rows],
        y_tr=y_tr[rows],
        w_tr=weights(tr)[rows],
        x_va=va[names].to_numpy(np.float32),
        y_va=labels(va),
        feature_names=names,
    )


def _schema_names(loc: str) -> list[str]:
    import pyarrow.parquet as pq

    path = storage.local_path(loc)
    if path is not None:
        return list(pq.read_schema(path).names)
    return list(storage.read_parquet(loc).schema.names)


def make_objective(data: TuneData, *, tune: TuneConfig, train: TrainConfig, seed: int, nthread: int) -> Any:
    """The Optuna objective: train one XGBoost with early stopping and pruning; returns the best valid score."""
    import xgboost as xgb

    PruningCallback = pruning_callback_class()
    metric = train.xgboost.eval_metric
    base = train.xgboost.params.model_dump()
    if "max_bin" in tune.space:  # the histogram cuts change per trial: plain matrices, sketched per trial
        dtr = xgb.DMatrix(data.x_tr, label=data.y_tr, weight=data.w_tr, feature_names=data.feature_names)
        dva = xgb.DMatrix(data.x_va, label=data.y_va, feature_names=data.feature_names)
    else:  # sketch the quantile cuts once for every trial instead of once per trial
        threads = {"nthread": nthread} if nthread > 0 else {}
        dtr = xgb.QuantileDMatrix(
            data.x_tr,
            label=data.y_tr,
            weight=data.w_tr,
            feature_names=data.feature_names,
            max_bin=base["max_bin"],
            **threads,
        )
        dva = xgb.QuantileDMatrix(
            data.x_va, label=data.y_va, feature_names=data.feature_names, ref=dtr, **threads
        )
    spw = train.imbalance.scale_pos_weight
    if spw == "auto":
        spw = scale_pos_weight(data.y_tr)

    def objective(trial: Any) -> float:
        sampled = suggest(trial, tune.space)
        params = booster_params(
            {**base, **sampled}, eval_metric=metric, seed=seed, nthread=nthread, scale_pos_weight=float(spw)
        )
        rate_scale = None
        if tune.prune_clock == "progress":
            top = tune.space["learning_rate"].high
            assert top is not None  # TuneConfig refuses prune_clock: progress without a learning_rate range
            rate_scale = float(params["learning_rate"]) / float(top)
        callbacks = (
            []
            if tune.pruner == "none"
            else [
                PruningCallback(
                    trial, dataset="valid", metric=metric, every=tune.prune_interval, rate_scale=rate_scale
                )
            ]
        )
        booster = xgb.train(
            params,
            dtr,
            num_boost_round=tune.num_boost_round,
            evals=[(dva, "valid")],
            early_stopping_rounds=tune.early_stopping_rounds,
            callbacks=callbacks,
            verbose_eval=False,
        )
        trial.set_user_attr("best_iteration", int(booster.best_iteration))
        trial.set_user_attr("rounds", int(booster.num_boosted_rounds()))
        return float(booster.best_score)

    return objective


# --------------------------------------------------------------------------- study and workers


def engine_url(url: str) -> str:
    """A PostgreSQL URL with an explicit driver: SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3, while
    the pipeline environment ships psycopg2 (binary); an explicit ``postgresql+driver://`` is kept."""
    if url.startswith(("postgresql://", "postgres://")):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def _storage(url: str) -> Any:
    import optuna

    url = engine_url(url)

    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # several processes on one SQLite file: wait for the lock rather than fail at once
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5; they fail stale trials
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=20, grace_period=120
        )
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        _sqlite_wal(storage.engine)
    return storage


def _sqlite_wal(engine: Any) -> None:
    """Write-ahead log and ``synchronous=NORMAL`` on every connection of a SQLite study: each report of an
    intermediate value is a commit, and in the default rollback journal every commit waits for fsyncs (4 ms
    a report measured here). WAL lets readers and the writer proceed together (several workers); NORMAL
    never corrupts the file, and a power cut may lose the last few commits of a tuning study."""
    from sqlalchemy import event

    def pragmas(conn: Any, _record: Any) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened while the storage was set up get the pragmas on reopening


def open_study(
    *, storage: str, study_name: str, tune: TuneConfig, metric: str, seed: int, worker: int = 0
) -> Any:
    """Create or load the shared study with its TPE sampler (seeded per worker) and pruner."""
    import optuna

    sampler = optuna.samplers.TPESampler(
        seed=seed + worker, n_startup_trials=tune.startup_trials, constant_liar=tune.workers > 1
    )
    return optuna.create_study(
        storage=_storage(storage),
        study_name=study_name,
        direction="maximize" if MAXIMIZE[metric] else "minimize",
        sampler=sampler,
        pruner=make_pruner(tune),
        load_if_exists=True,
    )


def _count_finished(study: Any) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def run_worker(
    *,
    features: str,
    storage: str,
    study_name: str,
    n_trials: int,
    tune: TuneConfig,
    train: TrainConfig,
    seed: int,
    worker: int,
    nthread: int,
) -> int:
    """One worker: load the data and the study, optimize ``n_trials`` trials. Returns trials run."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_tune_data(features, max_rows=tune.max_train_rows, seed=seed)
    study = open_study(
        storage=storage,
        study_name=study_name,
        tune=tune,
        metric=train.xgboost.eval_metric,
        seed=seed,
        worker=worker,
    )
    objective = make_objective(data, tune=tune, train=train, seed=seed, nthread=nthread)

    from tqdm import tqdm

    bar = tqdm(total=n_trials, desc=f"tune worker {worker}", unit="trial")

    def _log(study: Any, trial: Any) -> None:
        bar.update(1)  # the bar shows progress; each trial's line only with -v (the summary names the best)
        bar.set_postfix_str(f"best {study.best_value:.4f}" if _has_best(study) else "", refresh=False)
        log.debug("worker %d: trial %d %s value %s", worker, trial.number, trial.state.name, trial.value)

    try:
        study.optimize(objective, n_trials=n_trials, timeout=tune.timeout_s, callbacks=[_log], catch=())
    finally:
        bar.close()
    return n_trials


def _worker_main(kwargs: dict[str, Any]) -> None:  # process entry point (spawn): rebuild typed configs
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", str(kwargs["nthread"]))
    kwargs = dict(kwargs)
    kwargs["tune"] = TuneConfig.model_validate(kwargs["tune"])
    kwargs["train"] = TrainConfig.model_validate(kwargs["train"])
    run_worker(**kwargs)


def run_workers(
    *,
    features: str,
    storage: str,
    study_name: str,
    shares: list[int],
    tune: TuneConfig,
    train: TrainConfig,
    seed: int,
    nthread: int,
) -> None:
    """Run one worker in this process, or several worker processes (spawned) on the shared study."""
    common: dict[str, Any] = {
        "features": features,
        "storage": storage,
        "study_name": study_name,
        "seed": seed,
        "nthread": nthread,
    }
    if len(shares) == 1:
        run_worker(n_trials=shares[0], tune=tune, train=train, worker=0, **common)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork after XGBoost/OpenMP initialisation is unsafe
    procs = []
    for i, n in enumerate(shares):
        kwargs = {
            **common,
            "n_trials": n,
            "worker": i,
            "tune": tune.model_dump(),
            "train": train.model_dump(),
        }
        p = ctx.Process(target=_worker_main, args=(kwargs,), name=f"loopline-tune-{i}")
        p.start()
        procs.append(p)
    for p in procs:
        p.join()
    failed = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    if failed:
        raise TuneError(worker_failure(failed, workers=len(shares), max_rows=tune.max_train_rows))


def worker_failure(failed: list[tuple[str, int | None]], *, workers: int, max_rows: int | None) -> str:
    """What to say when tuning workers die: a SIGKILL is nearly always the kernel's out-of-memory killer,
    which otherwise shows only as 'exit code -9'."""
    killed = [name for name, code in failed if code == -9]
    text = f"tuning workers failed: {failed}"
    if killed:
        text += (
            f"; {', '.join(killed)} killed by SIGKILL, most likely out of memory (each of the {workers} workers "
            f"holds its own copy of up to tune.max_train_rows = {max_rows or 'all'} rows): lower tune.workers or "
            f"tune.max_train_rows in {params_file()}. The finished trials are kept; a rerun continues the study"
        )
    else:
        text += "; see their log lines above"
    return text


def available_memory() -> int | None:
    """Bytes the kernel says it can give without swapping (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def workers_for_memory(workers: int, *, rows: int, columns: int, available: int | None) -> int:
    """At most as many workers as the free memory holds: each trains XGBoost on up to ``rows`` x ``columns``
    float32 values, about 6 copies' worth with its histogram index, gradients and the loaded frame, plus a
    process of about 400 MB (Python, XGBoost, pandas); half the free memory stays for everything else."""
    if available is None:
        return workers
    per_worker = rows * columns * 4 * 6 + (400 << 20)
    fits = max(1, int(available * 0.5 // per_worker))
    return max(1, min(workers, fits))


def _train_rows(features: str, cap: int | None) -> int | None:
    """Rows a worker trains on (the train split, at most ``cap``); None where the split is not on local disk."""
    import pyarrow.parquet as pq

    local = storage.local_path(storage.join(features, "train.parquet"))
    if local is None or not local.exists():
        return cap
    n = int(pq.ParquetFile(local).metadata.num_rows)
    return n if cap is None else min(n, cap)


def _log_dvclive(study: Any, *, live_dir: str, maximize: bool) -> None:
    import optuna
    from dvclive import Live

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    trials = sorted((t for t in study.get_trials(deepcopy=False) if t.state in done), key=lambda t: t.number)
    best = -math.inf if maximize else math.inf
    with Live(dir=live_dir, save_dvc_exp=False, dvcyaml=None) as live:
        for t in trials:
            pruned = t.state == optuna.trial.TrialState.PRUNED
            last = (
                t.value
                if not pruned
                else (
                    t.intermediate_values[max(t.intermediate_values)]
                    if t.intermediate_values
                    else float("nan")
                )
            )
            if not pruned and t.value is not None:
                best = max(best, t.value) if maximize else min(best, t.value)
            live.log_metric("trial/value", float(last))
            live.log_metric("trial/pruned", int(pruned))
            live.log_metric("trial/rounds", len(t.intermediate_values))
            if math.isfinite(best):
                live.log_metric("best_value", float(best))
            live.next_step()


def run_tune(*, features: str, out: str, params: Params, storage_url: str | None = None) -> dict[str, Any]:
    """Continue (or start) the study up to ``tune.n_trials`` finished trials; write best params and logs."""
    import optuna

    started = time.perf_counter()
    tune, train, seed = params.tune, params.train, params.seed
    url = storage_url or tune.storage
    metric = train.xgboost.eval_metric
    spec = loads_spec(storage.read_bytes(storage.join(features, SPEC_FILE)))
    name = (
        auto_study_name(spec, tune=tune, train=train, seed=seed)
        if tune.study_name == "auto"
        else tune.study_name
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(storage=url, study_name=name, tune=tune, metric=metric, seed=seed)
    before = _count_finished(study)
    rows = _train_rows(features, tune.max_train_rows)
    workers = (
        tune.workers
        if rows is None
        else workers_for_memory(
            tune.workers, rows=rows, columns=len(spec["feature_names"]), available=available_memory()
        )
    )
    if workers < tune.workers:
        log.warning("tune: %d worker(s) instead of tune.workers = %d: the free memory (%.1f GiB) holds no more "
                    "copies of the training rows", workers, tune.workers, (available_memory() or 0) / 2**30)  # fmt: skip
    shares = split_trials(tune.n_trials - before, workers)
    nthread = tune.threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, len(shares)))
    log.info(
        "tune: study %s on %s has %d/%d finished trials; running %s with %d thread(s) each",
        name,
        redact_url(url),
        before,
        tune.n_trials,
        shares or "none",
        nthread,
    )
    if shares:
        run_workers(
            features=features,
            storage=url,
            study_name=name,
            shares=shares,
            tune=tune,
            train=train,
            seed=seed,
            nthread=nthread,
        )
    study = open_study(storage=url, study_name=name, tune=tune, metric=metric, seed=seed)
    doc = best_params_document(study, metric=metric)
    doc["storage"] = redact_url(url)
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    summary = {
        "study_name": name,
        "storage": redact_url(url),
        "best_value": doc["value"],
        "best_trial": doc["trial"],
        "metric": metric,
        "trials": {s: states.count(s) for s in sorted(set(states))},
        "finished_before": before,
        "finished_after": _count_finished(study),
        "workers": len(shares),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    storage.write_json(storage.join(out, "best_params.json"), doc)
    storage.write_json(storage.join(out, "summary.json"), summary)
    live_dir = storage.local_path(storage.join(out, "dvclive"))
    if live_dir is not None:
        _log_dvclive(study, live_dir=str(live_dir), maximize=MAXIMIZE[metric])
    log.info(
        "tune: best %s %.5f (trial %d), %s, %.1f s",
        metric,
        doc["value"],
        doc["trial"],
        summary["trials"],
        summary["wall_seconds"],
    )
    return summary
