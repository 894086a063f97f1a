"""The tuning stage on a tiny study: resumable, best params written, workers share one study."""

from __future__ import annotations

import json

import pytest
from synthetic_features import write_features_dir

from pipelines.tune import auto_study_name, redact_url, split_trials


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
    from pipelines.featurespec import spec_digest

    spec = {**spec, "digest": spec_digest(spec)}
    base = auto_study_name(spec, tune=params.tune, train=params.train, seed=1)
    more = params.tune.model_copy(update={"n_trials": 99, "workers": 4, "timeout_s": 5})
    assert auto_study_name(spec, tune=more, train=params.train, seed=1) == base
    narrower = params.tune.model_copy(update={"num_boost_round": 7})
    assert auto_study_name(spec, tune=narrower, train=params.train, seed=1) != base
    assert auto_study_name(spec, tune=params.tune, train=params.train, seed=2) != base


@pytest.mark.slow
def test_rerun_continues_the_study_to_the_target(features, tmp_path, params):
    from pipelines.tune import run_tune

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

    from pipelines.tune import run_tune

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
