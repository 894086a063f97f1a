"""Sampling: statistical checks of each sampler over repeated seeds, and the honesty of the time split."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core import storage
from pipelines.core.config import ConfigError, SamplingConfig, SchemaConfig, parse_params
from pipelines.data.etl import lake_schema, partition_path
from pipelines.data.sampling import (
    ReservoirSampler,
    compute_windows,
    importance_weights,
    labels_at_cutoff,
    recency_weights,
    reservoir_sample,
    run_sampling,
    stratified_indices,
    weighted_indices,
)

UTC = dt.UTC
SCHEMA = SchemaConfig(
    entity_key="card_id",
    columns=[
        {"name": "card_id", "type": "string", "nullable": False},
        {"name": "channel", "type": "category"},
        {"name": "amount", "type": "float"},
    ],
)


def _batches(n: int, size: int) -> list[pa.RecordBatch]:
    t = pa.table({"i": np.arange(n)})
    return t.to_batches(max_chunksize=size)


@pytest.mark.slow
def test_reservoir_inclusion_probability_is_k_over_n() -> None:
    n, k, runs = 100, 10, 2000
    hits = np.zeros(n)
    batches = _batches(n, 23)  # several batches: the fill phase and replacements straddle batch edges
    for seed in range(runs):
        sample, seen = reservoir_sample(batches, k=k, seed=seed)
        assert seen == n and sample.num_rows == k
        idx = sample.column("i").to_numpy()
        assert len(set(idx.tolist())) == k  # no row twice
        hits[idx] += 1
    freq = hits / runs
    p = k / n
    sigma = np.sqrt(p * (1 - p) / runs)
    assert np.abs(freq - p).max() < 5 * sigma
    # first and last rows of the stream are equally likely (the classic bias of a wrong reservoir)
    assert abs(freq[:k].mean() - freq[-k:].mean()) < 4 * sigma


def test_reservoir_does_not_depend_on_batch_boundaries_and_bounds_memory() -> None:
    a, _ = reservoir_sample(_batches(5000, 5000), k=50, seed=7)
    b, _ = reservoir_sample(_batches(5000, 13), k=50, seed=7)
    assert sorted(a.column("i").to_pylist()) == sorted(b.column("i").to_pylist())
    sampler = ReservoirSampler(50, seed=1)
    for batch in _batches(20_000, 64):
        sampler.add(batch)
        assert sampler._stored <= 2 * 50 + 64  # kept copies are compacted: memory stays O(k + batch)


def test_reservoir_keeps_everything_from_a_short_stream() -> None:
    sample, seen = reservoir_sample(_batches(30, 4), k=100, seed=0)
    assert seen == 30 and sorted(sample.column("i").to_pylist()) == list(range(30))
    with pytest.raises(ValueError, match="positive"):
        ReservoirSampler(0, seed=0)


def test_stratified_keeps_proportions_and_is_uniform_within_strata() -> None:
    strata = np.array(["a"] * 7000 + ["b"] * 2500 + ["c"] * 500)
    counts = np.zeros(len(strata))
    for seed in range(200):
        idx, w = stratified_indices(strata, size=1000, rng=np.random.default_rng(seed))
        assert len(idx) == 1000
        vals, n = np.unique(strata[idx], return_counts=True)
        assert dict(zip(vals.tolist(), n.tolist(), strict=True)) == {"a": 700, "b": 250, "c": 50}
        assert np.allclose(w, 10.0)  # N_h / n_h
        counts[idx] += 1
    freq = counts / 200
    assert abs(freq[:7000].mean() - 0.1) < 0.005 and abs(freq[-500:].mean() - 0.1) < 0.005


def test_stratified_min_per_stratum_lifts_small_strata_and_weights_them_down() -> None:
    strata = np.array(["big"] * 9900 + ["rare"] * 100)
    idx, w = stratified_indices(strata, size=500, rng=np.random.default_rng(0), min_per_stratum=50)
    picked = strata[idx]
    assert (picked == "rare").sum() == 50
    # Horvitz–Thompson weights still add up to each stratum's population
    assert w[picked == "rare"].sum() == pytest.approx(100)
    assert w[picked == "big"].sum() == pytest.approx(9900)


def test_weighted_single_draw_probability_is_proportional_to_weight() -> None:
    w = np.array([1.0, 2.0, 3.0, 4.0, 0.0])
    runs = 20_000
    rng = np.random.default_rng(3)
    picks = np.array([weighted_indices(w, size=1, rng=rng)[0] for _ in range(runs)])
    freq = np.bincount(picks, minlength=5) / runs
    expected = w / w.sum()
    assert np.abs(freq - expected).max() < 5 * np.sqrt(0.25 / runs)
    assert freq[4] == 0  # weight zero is never drawn


def test_recency_weights_halve_every_half_life() -> None:
    cutoff = dt.datetime(2025, 3, 1, tzinfo=UTC)
    times = [cutoff, cutoff - dt.timedelta(days=7), cutoff - dt.timedelta(days=14)]
    us = np.array([int(t.timestamp() * 1e6) for t in times])
    assert recency_weights(us, cutoff=cutoff, half_life_days=7) == pytest.approx([1.0, 0.5, 0.25])


def test_importance_weights_correct_a_biased_sample_mean() -> None:
    # population: 70% group a (y ~ 1), 30% group b (y ~ 5) -> mean 2.2; the sample over-draws b
    target = {"a": 0.7, "b": 0.3}
    errors_weighted, errors_plain = [], []
    for seed in range(50):
        rng = np.random.default_rng(seed)
        group = np.where(rng.random(4000) < 0.3, "a", "b")  # Q: 30% a, 70% b
        y = np.where(group == "a", rng.normal(1, 1, 4000), rng.normal(5, 1, 4000))
        w, info = importance_weights(group, target=target)
        errors_weighted.append(np.average(y, weights=w) - 2.2)
        errors_plain.append(y.mean() - 2.2)
        assert info["uncovered_target"] == 0
    assert abs(np.mean(errors_weighted)) < 0.02 and np.std(errors_weighted) < 0.1
    assert np.mean(errors_plain) > 1.0  # the bias that the weights remove


def test_importance_weights_report_uncovered_target_and_zero_unwanted_values() -> None:
    w, info = importance_weights(np.array(["a", "a", "c"]), target={"a": 0.5, "b": 0.5})
    assert info["uncovered_target"] == 0.5
    assert w[2] == 0.0  # c is not in the target: it gets no weight


def _ts(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s).replace(tzinfo=UTC)


def test_label_after_cutoff_is_unlabelled_not_negative() -> None:
    cutoff = _ts("2025-02-01T00:00:00")
    t = pa.table({
        "label": pa.array([0, 1, 0, None], pa.int8()),
        "label_time": pa.array([_ts("2025-01-20T00:00:00"), _ts("2025-01-31T23:59:59"),
                                _ts("2025-02-01T00:00:01"), None], pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    out = labels_at_cutoff(t, cutoff)
    assert out.column("label").to_pylist() == [0, 1, None, None]
    assert out.column("label_time").to_pylist()[2:] == [None, None]  # the future arrival time is hidden too


def _write_lake(lake: str, days: int, per_day: int, *, seed: int = 0, delay_days: float = 10.0) -> None:
    rng = np.random.default_rng(seed)
    start = dt.date(2025, 1, 1)
    for d in range(days):
        day = start + dt.timedelta(days=d)
        base = dt.datetime.combine(day, dt.time(), UTC)
        secs = np.sort(rng.integers(0, 86_400, per_day))
        et = [base + dt.timedelta(seconds=int(s)) for s in secs]
        label = (rng.random(per_day) < 0.1).astype(np.int8)
        t = pa.table({
            "event_id": [f"e{day:%m%d}-{i:05d}" for i in range(per_day)],
            "event_time": pa.array(et, pa.timestamp("us", tz="UTC")),
            "card_id": [f"c{int(x)}" for x in rng.integers(0, 50, per_day)],
            "channel": rng.choice(["pos", "online", "atm"], per_day, p=[0.6, 0.3, 0.1]),
            "amount": rng.exponential(50, per_day),
            "label": pa.array(label, pa.int8()),
            "label_time": pa.array([e + dt.timedelta(days=delay_days) for e in et], pa.timestamp("us", tz="UTC")),
        }).cast(lake_schema(SCHEMA))  # fmt: skip
        storage.write_parquet(storage.join(partition_path(lake, day.isoformat()), "part-x.parquet"), t)


def _cfg(**kw) -> SamplingConfig:
    base = {"label_maturity_days": 10, "test_days": 3, "valid_days": 3, "gap_days": 1}
    return SamplingConfig(**{**base, **kw})


def test_splits_are_time_ordered_with_gaps_and_disjoint(tmp_path) -> None:
    lake, out = str(tmp_path / "lake"), str(tmp_path / "training")
    _write_lake(lake, days=30, per_day=200)
    report = run_sampling(lake=lake, out=out, cfg=_cfg(), schema=SCHEMA, seed=1, progress=False)
    tables = {s: pq.read_table(f"{out}/{s}.parquet") for s in ("train", "valid", "test")}
    times = {s: t.column("event_time").to_pylist() for s, t in tables.items()}
    gap = dt.timedelta(days=1)
    assert max(times["train"]) < min(times["valid"]) - gap + dt.timedelta(seconds=86_400)
    assert min(times["valid"]) - max(times["train"]) > gap
    assert min(times["test"]) - max(times["valid"]) > gap
    ids = [set(t.column("event_id").to_pylist()) for t in tables.values()]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    # every split window lies before the immature tail: its labels (10-day delay) have all matured
    for s, t in tables.items():
        assert t.column("label").null_count == 0, s
        assert t.column("split").to_pylist() == [s] * t.num_rows
        assert t.column("sample_weight").to_numpy().mean() == pytest.approx(1.0)
    # the tail (newest 10 days) is unlabelled at the cutoff, never negative
    unl = pq.read_table(f"{out}/unlabelled.parquet")
    assert unl.column("label").null_count == unl.num_rows == 10 * 200
    assert set(unl.column("split").to_pylist()) == {"tail"}
    assert report["windows"]["train"]["days"] == 30 - 10 - 3 - 3 - 2
    assert report["counts"]["test"]["rows"] == 3 * 200


def test_premature_negative_inside_a_split_is_unlabelled(tmp_path) -> None:
    # a maturity horizon too short for a 10-day label delay: the newest test rows are not yet known
    lake, out = str(tmp_path / "lake"), str(tmp_path / "training")
    _write_lake(lake, days=20, per_day=100)
    report = run_sampling(
        lake=lake, out=out, cfg=_cfg(label_maturity_days=5), schema=SCHEMA, seed=1, progress=False
    )
    test = pq.read_table(f"{out}/test.parquet")
    labels = test.column("label").to_pylist()
    assert None in labels  # unmatured rows stay unlabelled ...
    lake_rows = pa.concat_tables(
        [pq.read_table(p) for p in storage.list_files(lake, "*.parquet", recursive=True)]
    )
    truth = dict(
        zip(lake_rows.column("event_id").to_pylist(), lake_rows.column("label").to_pylist(), strict=True)
    )
    cutoff = dt.datetime.fromisoformat(report["windows"]["cutoff"])
    for eid, lab, et in zip(
        test.column("event_id").to_pylist(), labels, test.column("event_time").to_pylist(), strict=True
    ):
        if et + dt.timedelta(days=10) > cutoff:
            assert lab is None, eid  # ... never turned into negatives
        else:
            assert lab == truth[eid]
    assert report["counts"]["test"]["unlabelled"] == labels.count(None) > 0


@pytest.mark.parametrize("method,extra", [
    ("random", {"fraction": 0.5}),
    ("stratified", {"fraction": 0.5, "stratify_by": ["label", "channel"]}),
    ("weighted", {"n": 300}),
    ("reservoir", {"n": 300, "batch_size": 50}),
    ("importance", {"importance": {"column": "channel", "target": {"pos": 1, "online": 1, "atm": 1}}}),
])  # fmt: skip
def test_each_method_samples_train_only(tmp_path, method, extra) -> None:
    lake, out = str(tmp_path / "lake"), str(tmp_path / "training")
    _write_lake(lake, days=25, per_day=100)
    report = run_sampling(
        lake=lake, out=out, cfg=_cfg(method=method, **extra), schema=SCHEMA, seed=3, progress=False
    )
    pop = report["train_sampling"]["population_rows"]
    train = pq.read_table(f"{out}/train.parquet")
    expected = {
        "random": pop // 2,
        "stratified": pop // 2,
        "weighted": 300,
        "reservoir": 300,
        "importance": pop,
    }
    assert train.num_rows == expected[method]
    assert report["counts"]["valid"]["rows"] == report["counts"]["test"]["rows"] == 300  # complete
    w = train.column("sample_weight").to_numpy()
    assert w.mean() == pytest.approx(1.0)
    if method == "importance":
        ch = np.array(train.column("channel").to_pylist())
        shares = [w[ch == c].sum() / w.sum() for c in ("pos", "online", "atm")]
        assert shares == pytest.approx([1 / 3] * 3, abs=1e-9)


def test_windows_without_history_fail_with_a_fix() -> None:
    with pytest.raises(ValueError, match="no history"):
        compute_windows(_cfg(), oldest=dt.date(2025, 1, 1), newest=dt.date(2025, 1, 15))
    w = compute_windows(_cfg(train_days=2), oldest=dt.date(2025, 1, 1), newest=dt.date(2025, 1, 31))
    assert w.cutoff == _ts("2025-02-01T00:00:00")
    assert w.test == (_ts("2025-01-19T00:00:00"), _ts("2025-01-22T00:00:00"))  # then a 10-day tail
    assert w.valid == (_ts("2025-01-15T00:00:00"), _ts("2025-01-18T00:00:00"))  # one gap day before test
    assert w.train == (_ts("2025-01-12T00:00:00"), _ts("2025-01-14T00:00:00"))


def test_config_rejects_inconsistent_sampling(params) -> None:
    raw = {"schema": params.schema.model_dump(mode="json"), "sampling": {"method": "reservoir"}}
    with pytest.raises(ConfigError, match=r"sampling = .*method reservoir needs n"):
        parse_params(raw)
    raw["sampling"] = {"fraction": 0.5, "n": 10}
    with pytest.raises(ConfigError, match="either fraction or n"):
        parse_params(raw)
    raw["sampling"] = {"gap_days": -1}
    with pytest.raises(ConfigError, match=r"sampling\.gap_days"):
        parse_params(raw)
