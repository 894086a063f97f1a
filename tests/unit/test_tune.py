"""The tuning stage on a tiny study: resumable, best params written, workers share one study."""

from __future__ import annotations

import json

import pytest
from synthetic_features import write_features_dir

from pipelines.training.tune import auto_study_name, redact_url, split_trials


def _tiny(params, **update):
    tune = params.tune.model_copy(
        update={
            "num_boost_round": 15,
            "early_stopping_rounds": 5,
            "max_train_rows": 2000,
            "startup_trials": 2,
            "warmup_rounds": 3,
            "timeout_s": 120,
            "threads_per_worker": 1,
            **update,
        }
    )
    return params.model_copy(update={"tune": tune})


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    return write_features_dir(
        tmp_path_factory.mktemp("tune") / "features", n_train=3000, n_valid=1500, n_test=10
    )


def _study(url, name):
    import optuna

    return optuna.load_study(study_name=name, storage=url)


def test_split_trials_is_even_and_never_empty():
    assert split_trials(7, 2) == [4, 3]
    assert split_trials(1, 4) == [1]
    assert split_trials(0, 3) == [] and split_trials(-2, 3) == []
    assert sum(split_trials(13, 5)) == 13


def test_redact_url_hides_the_password():
    assert redact_url("postgresql://bob:secret@db:5432/optuna") == "postgresql://bob:***@db:5432/optuna"
    assert "secret" not in redact_url("postgresql://bob:secret@db/x")


def test_auto_study_name_tracks_comparability_not_budget(params):
    spec = {"digest": "x", "feature_names": ["a"], "transforms": []}
    from pipelines.edge.featurespec import spec_digest

    spec = {**spec, "digest": spec_digest(spec)}
    base = auto_study_name(spec, tune=params.tune, train=params.train, seed=1)
    more = params.tune.model_copy(update={"n_trials": 99, "workers": 4, "timeout_s": 5})
    assert auto_study_name(spec, tune=more, train=params.train, seed=1) == base
    narrower = params.tune.model_copy(update={"num_boost_round": 7})
    assert auto_study_name(spec, tune=narrower, train=params.train, seed=1) != base
    assert auto_study_name(spec, tune=params.tune, train=params.train, seed=2) != base


@pytest.mark.slow
def test_rerun_continues_the_study_to_the_target(features, tmp_path, params):
    from pipelines.training.tune import run_tune

    url = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "tuning"
    first = run_tune(features=str(features), out=str(out), params=_tiny(params, n_trials=3), storage_url=url)
    assert first["finished_before"] == 0 and first["finished_after"] == 3
    second = run_tune(features=str(features), out=str(out), params=_tiny(params, n_trials=5), storage_url=url)
    assert second["study_name"] == first["study_name"]  # same study, continued
    assert second["finished_before"] == 3 and second["finished_after"] == 5
    study = _study(url, second["study_name"])
    assert len(study.trials) == 5
    assert sorted(t.number for t in study.trials) == list(range(5))
    best = json.loads((out / "best_params.json").read_text())
    assert set(best["xgboost"]) == set(params.tune.space)
    assert best["value"] == pytest.approx(study.best_value) and best["metric"] == "aucpr"
    assert (out / "summary.json").exists()
    assert (out / "dvclive" / "plots" / "metrics").is_dir()
    # a third run with the target already reached runs nothing and still writes the outputs
    third = run_tune(features=str(features), out=str(out), params=_tiny(params, n_trials=5), storage_url=url)
    assert third["finished_before"] == 5 and third["workers"] == 0
    assert len(_study(url, second["study_name"]).trials) == 5


@pytest.mark.slow
def test_two_worker_processes_share_one_study_without_loss_or_duplicates(features, tmp_path, params):
    import optuna

    from pipelines.training.tune import run_tune

    url = f"sqlite:///{tmp_path / 'study.db'}"
    summary = run_tune(
        features=str(features),
        out=str(tmp_path / "tuning"),
        params=_tiny(params, n_trials=6, workers=2),
        storage_url=url,
    )
    assert summary["workers"] == 2
    trials = _study(url, summary["study_name"]).trials
    done = [
        t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(trials) == 6 and len(done) == 6
    assert sorted(t.number for t in done) == list(range(6))  # unique and contiguous: none lost or duplicated
    # both workers' samplers ran: TPE seeded per worker gives distinct parameter sets
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6


def test_pruner_follows_the_tune_settings(params):
    import optuna

    from pipelines.training.tune import make_pruner

    def tune(**update):
        return params.tune.model_validate({**params.tune.model_dump(), **update})

    median = make_pruner(
        tune(pruner="median", percentile=10, warmup_rounds=7, startup_trials=3, prune_startup_trials=None)
    )
    assert isinstance(median, optuna.pruners.PercentilePruner)
    assert median._percentile == 50.0  # median ignores tune.percentile
    assert median._n_warmup_steps == 7 and median._n_startup_trials == 3
    later = make_pruner(tune(pruner="median", startup_trials=3, prune_startup_trials=8))
    assert later._n_startup_trials == 8  # the pruner waits longer than TPE's random start
    assert make_pruner(tune(pruner="percentile", prune_startup_trials=0))._n_startup_trials == 0
    assert make_pruner(tune(pruner="percentile", percentile=30))._percentile == 30
    hyper = make_pruner(tune(pruner="hyperband", warmup_rounds=5, reduction_factor=4, num_boost_round=80))
    assert isinstance(hyper, optuna.pruners.HyperbandPruner)
    assert (hyper._min_resource, hyper._max_resource, hyper._reduction_factor) == (5, 80, 4)
    assert isinstance(make_pruner(tune(pruner="none")), optuna.pruners.NopPruner)


@pytest.mark.parametrize(
    "update, key",
    [
        ({"prune_interval": 0}, "prune_interval"),
        ({"percentile": 100}, "percentile"),
        ({"reduction_factor": 1}, "reduction_factor"),
        ({"pruner": "patient"}, "pruner"),
        ({"prune_startup_trials": -1}, "prune_startup_trials"),
        ({"prune_interval": 121, "num_boost_round": 120}, "prune_interval"),
    ],
)
def test_bad_pruner_settings_are_rejected_naming_the_key(params, update, key):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=key):
        params.tune.model_validate({**params.tune.model_dump(), **update})


def test_prune_interval_may_exceed_the_rounds_without_a_pruner(params):
    tune = params.tune.model_validate(
        {**params.tune.model_dump(), "pruner": "none", "prune_interval": 500, "num_boost_round": 120}
    )
    assert tune.prune_interval == 500


class _Trial:
    """Records reports; prunes once ``prune_from`` reports have been made."""

    def __init__(self, prune_from=None):
        self.reports, self.prune_from, self.user_attrs = [], prune_from, {}

    def report(self, value, step):
        self.reports.append((step, value))

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value

    def should_prune(self):
        return self.prune_from is not None and len(self.reports) >= self.prune_from


def test_pruning_callback_reports_the_valid_metric_every_interval():
    from pipelines.training.tune import pruning_callback_class, reports_at

    assert [e for e in range(12) if reports_at(e, 1)] == list(range(12))
    assert [e for e in range(12) if reports_at(e, 5)] == [4, 9]
    cb = pruning_callback_class()(trial := _Trial(), dataset="valid", metric="aucpr", every=3)
    log = {"train": {"aucpr": []}, "valid": {"aucpr": []}}
    for epoch in range(7):
        log["valid"]["aucpr"].append(0.1 * epoch)
        log["train"]["aucpr"].append(0.9)
        assert cb.after_iteration(None, epoch, log) is False
    assert trial.reports == [(2, pytest.approx(0.2)), (5, pytest.approx(0.5))]


def test_pruning_callback_raises_trial_pruned_when_the_pruner_says_so():
    import optuna

    from pipelines.training.tune import pruning_callback_class

    cb = pruning_callback_class()(trial := _Trial(prune_from=2), dataset="valid", metric="aucpr", every=2)
    log = {"valid": {"aucpr": []}}
    for epoch in range(3):
        log["valid"]["aucpr"].append(0.5)
        cb.after_iteration(None, epoch, log)  # reports at epoch 1, does not prune yet
    log["valid"]["aucpr"].append(0.5)
    with pytest.raises(optuna.TrialPruned, match="iteration 3"):
        cb.after_iteration(None, 3, log)
    assert [step for step, _ in trial.reports] == [1, 3]
    assert trial.user_attrs == {"rounds": 4}  # what the benchmark counts for a pruned trial


def test_progress_step_weights_rounds_by_the_learning_rate():
    from pipelines.training.tune import progress_step

    assert [progress_step(e, 0.3, 0.3) for e in range(5)] == [0, 1, 2, 3, 4]  # top rate: the rounds clock
    assert [progress_step(e, 0.15, 0.3) for e in range(6)] == [-1, 0, 0, 1, 1, 2]  # half rate, half as fast
    assert progress_step(119, 0.02, 0.3) == 7  # 120 rounds at 0.02 ~ 8 rounds at 0.3
    for rate in (0.02, 0.037, 0.1, 0.29, 0.3):  # every trial passes every step, so reports line up
        steps = {progress_step(e, rate, 0.3) for e in range(120)} - {-1}
        assert steps == set(range(max(steps) + 1))
    with pytest.raises(ValueError, match="> 0"):
        progress_step(3, 0.0, 0.3)


def test_pruning_callback_reports_on_the_progress_clock():
    import optuna

    from pipelines.training.tune import pruning_callback_class

    cls = pruning_callback_class()
    cb = cls(trial := _Trial(), dataset="valid", metric="aucpr", every=2, rate_scale=0.5)
    log = {"valid": {"aucpr": []}}
    for epoch in range(9):
        log["valid"]["aucpr"].append(0.01 * epoch)
        assert cb.after_iteration(None, epoch, log) is False
    # half the top rate: step s is first reached after 2(s+1) rounds; every 2nd step reports (1, 3)
    assert trial.reports == [(1, pytest.approx(0.03)), (3, pytest.approx(0.07))]
    cb = cls(trial := _Trial(prune_from=1), dataset="valid", metric="aucpr", every=1, rate_scale=0.25)
    log = {"valid": {"aucpr": []}}
    with pytest.raises(optuna.TrialPruned, match="progress step 0"):
        for epoch in range(9):
            log["valid"]["aucpr"].append(0.5)
            cb.after_iteration(None, epoch, log)
    assert trial.reports == [(0, 0.5)] and trial.user_attrs == {"rounds": 4}  # rounds, not steps


def test_progress_clock_needs_a_tuned_learning_rate(params):
    from pydantic import ValidationError

    base = params.tune.model_dump()
    space = {k: v for k, v in base["space"].items() if k != "learning_rate"}
    with pytest.raises(ValidationError, match="prune_clock"):
        params.tune.model_validate({**base, "space": space, "prune_clock": "progress"})
    assert params.tune.model_validate({**base, "space": space}).prune_clock == "rounds"
    with pytest.raises(ValidationError, match="prune_clock"):
        params.tune.model_validate({**base, "prune_clock": "epochs"})


def test_auto_study_name_tracks_the_pruner_settings(params):
    from pipelines.edge.featurespec import spec_digest

    spec = {"digest": "x", "feature_names": ["a"], "transforms": []}
    spec = {**spec, "digest": spec_digest(spec)}
    base = auto_study_name(spec, tune=params.tune, train=params.train, seed=1)
    for update in (
        {"prune_interval": 7},
        {"percentile": 33.0},
        {"reduction_factor": 5},
        {"prune_clock": "progress"},
        {"prune_startup_trials": 12},
    ):
        other = params.tune.model_copy(update=update)
        assert auto_study_name(spec, tune=other, train=params.train, seed=1) != base


def test_a_pruned_study_records_intermediate_values_only_at_the_interval(features, tmp_path, params):
    import optuna

    small = _tiny(params, pruner="percentile", percentile=40.0, prune_interval=4, startup_trials=1).tune
    study = _small_study(small, features, tmp_path, params)
    steps = {s for t in study.trials for s in t.intermediate_values}
    assert steps and steps <= {3, 7, 11}  # rounds 4, 8, 12 of 15
    first = study.trials[0]
    assert first.state == optuna.trial.TrialState.COMPLETE
    reported = max(first.intermediate_values.values())  # the valid aucpr of some rounds: the best bounds them
    assert first.value - 0.05 <= reported <= first.value + 1e-6


def test_a_study_on_the_progress_clock_reports_at_learning_rate_weighted_steps(features, tmp_path, params):
    from pipelines.training.tune import progress_step

    small = _tiny(params, pruner="median", prune_clock="progress", prune_interval=1, startup_trials=1).tune
    top = small.space["learning_rate"].high
    study = _small_study(small, features, tmp_path, params)
    for t in study.trials:
        rounds = t.user_attrs["rounds"]
        expected = {progress_step(e, t.params["learning_rate"], top) for e in range(rounds)} - {-1}
        assert set(t.intermediate_values) == expected, (t.number, t.params["learning_rate"], rounds)
    assert any(max(t.intermediate_values, default=0) < t.user_attrs["rounds"] - 1 for t in study.trials)


def _small_study(tune, features, tmp_path, params, *, n_trials: int = 4):
    """A real study of ``n_trials`` one-thread trials on the test features (a fresh SQLite file)."""
    import optuna

    from pipelines.training.tune import load_tune_data, make_objective, open_study

    data = load_tune_data(str(features), max_rows=tune.max_train_rows, seed=params.seed)
    study = open_study(
        storage=f"sqlite:///{tmp_path / 's.db'}", study_name="t", tune=tune, metric="aucpr", seed=params.seed
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(
        make_objective(data, tune=tune, train=params.train, seed=params.seed, nthread=1), n_trials=n_trials
    )
    return study


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask/tell by hand: no heartbeat thread here
@pytest.mark.parametrize("pruner", ["median", "percentile"])
def test_local_pruning_decision_equals_optunas_own(tmp_path, pruner):
    """The callback decides from its own reported values and a snapshot of the complete trials; on a real
    SQLite study it prunes exactly when ``trial.should_prune()`` (which reads everything back) does."""
    import numpy as np
    import optuna

    from pipelines.core.config import TuneConfig
    from pipelines.training.tune import _storage, make_pruner, pruning_callback_class

    tune = TuneConfig(
        pruner=pruner,
        percentile=40,
        startup_trials=3,
        prune_startup_trials=3,
        warmup_rounds=2,
        prune_interval=1,
    )
    study = optuna.create_study(storage=_storage(f"sqlite:///{tmp_path / 's.db'}"), direction="maximize",
                                pruner=make_pruner(tune), study_name="t")  # fmt: skip
    rng = np.random.default_rng(0)
    for _ in range(5):  # complete trials with curves
        t = study.ask()
        curve = np.sort(rng.uniform(0.2, 0.6, 8))
        for step, v in enumerate(curve):
            t.report(float(v), step)
        study.tell(t, float(curve[-1]))
    cls = pruning_callback_class()
    decisions = 0
    for level in (0.1, 0.35, 0.45, 0.7):
        trial = study.ask()
        cb = cls(trial, dataset="valid", metric="aucpr", every=1)
        assert cb.local
        log: dict = {"valid": {"aucpr": []}}
        for epoch in range(8):
            log["valid"]["aucpr"].append(level + 0.01 * epoch)
            try:
                cb.after_iteration(None, epoch, log)
                pruned = False
            except optuna.TrialPruned:
                pruned = True
            assert pruned == trial.should_prune(), (level, epoch)  # the stock check, from storage
            if pruned:
                decisions += 1
                break
        study.tell(trial, state=optuna.trial.TrialState.PRUNED if pruned else optuna.trial.TrialState.FAIL)
    assert decisions >= 1  # the low curves were pruned, so the comparison covered both outcomes


def test_a_worker_killed_for_memory_is_named_as_such_and_workers_fit_the_free_memory() -> None:
    """Tuning workers on a 142k-row table died with 'exit code -9' and nothing else. Now the message says
    out of memory and which knob to lower, and fewer workers start when the free memory holds fewer copies."""
    from pipelines.training.tune import worker_failure, workers_for_memory

    text = worker_failure([("loopline-tune-1", -9)], workers=2, max_rows=60_000)
    assert "loopline-tune-1 killed by SIGKILL, most likely out of memory" in text
    assert "lower tune.workers or tune.max_train_rows in params.yaml" in text and "rerun continues" in text
    assert "out of memory" not in worker_failure([("loopline-tune-0", 1)], workers=2, max_rows=None)
    gib = 2**30
    assert workers_for_memory(4, rows=150_000, columns=100, available=16 * gib) == 4
    assert workers_for_memory(4, rows=2_000_000, columns=300, available=16 * gib) == 1  # 14 GiB a worker
    assert workers_for_memory(3, rows=150_000, columns=100, available=None) == 3  # unknown: as configured
