"""The compiled kernels equal their numpy references bit for bit, on inputs chosen to break them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import FeaturesConfig, SchemaConfig
from pipelines.edge import featurespec as fs
from pipelines.features import kernels
from pipelines.features.build import aggregate_arrays, fit_spec

SCHEMA = SchemaConfig.model_validate(
    {
        "entity_key": "card_id",
        "columns": [
            {"name": "card_id", "type": "string"},
            {"name": "merchant_id", "type": "category", "high_cardinality": True},
            {"name": "channel", "type": "category"},
            {"name": "country", "type": "category"},
            {"name": "amount", "type": "float", "nullable": False},
            {"name": "distance_km", "type": "float", "nullable": True},
            {"name": "age", "type": "float", "nullable": True},
            {"name": "score", "type": "float", "nullable": True},
        ],
    }
)
CFG = FeaturesConfig(
    min_category_count=2, hash_buckets=16, scaling="auto", scale_overrides={"score": "minmax", "age": "standard"},
    discretize={"amount": 6, "distance_km": 4}, missing_indicators="always",
    encoding_overrides={"country": "ordinal"}, crosses=[["channel", "country"]], cross_buckets=8,
)  # fmt: skip


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_time": pd.Timestamp("2025-01-06", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 30 * 86400, n), unit="s"),
            "card_id": rng.choice(["k1", "k2", "k3"], n),
            "merchant_id": rng.choice([f"m{i}" for i in range(40)], n),
            "channel": rng.choice(["pos", "online", "atm"], n),
            "country": rng.choice(["PT", "ES", "FR", "DE"], n),
            "amount": rng.gamma(1.5, 40.0, n),
            "distance_km": np.where(rng.random(n) < 0.2, np.nan, rng.exponential(20.0, n)),
            "age": np.where(rng.random(n) < 0.1, np.nan, rng.normal(40.0, 12.0, n)),
            "score": rng.uniform(-3.0, 3.0, n),
            "label": rng.integers(0, 2, n),
        }
    )


@pytest.fixture(scope="module")
def spec() -> dict:
    s = fit_spec(_frame(400, 1), cfg=CFG, schema=SCHEMA)
    kinds = {op["op"] for op in s["transforms"]}
    scales = {op.get("scale") for op in s["transforms"] if op["op"] == "numeric"}
    assert {"numeric", "onehot", "ordinal", "hash", "cyclical"} <= kinds and {
        "log",
        "standard",
        "minmax",
    } <= scales
    assert any(op.get("bins") for op in s["transforms"] if op["op"] == "numeric")
    return s


def _columns(n: int, seed: int) -> dict:
    """Adversarial serving rows: NaN, +-inf, negative amounts (log of max(x, 0)), values on and around the
    bin edges, unseen and missing categories, text numbers."""
    rng = np.random.default_rng(seed)
    amount = rng.gamma(1.5, 40.0, n)
    amount[rng.random(n) < 0.05] = np.nan
    amount[rng.random(n) < 0.02] = np.inf
    amount[rng.random(n) < 0.02] = -np.inf
    amount[rng.random(n) < 0.05] = -rng.random()
    amount[: min(n, 3)] = 0.0
    dist = np.where(rng.random(n) < 0.3, np.nan, rng.exponential(20.0, n))
    cats = np.array(["pos", "online", "atm", "satellite", None, ""], dtype=object)
    merchants = np.array([f"m{i}" for i in range(60)] + [None], dtype=object)
    return {
        "amount": amount,
        "distance_km": dist,
        "age": [None if v < 0.1 else str(round(40 + 30 * v, 3)) for v in rng.random(n)],  # text numbers
        "score": rng.uniform(-5.0, 5.0, n).astype(np.float32),  # float32 input
        "channel": cats[rng.integers(0, len(cats), n)],
        "country": np.array(["PT", "ES", "XX", None], dtype=object)[rng.integers(0, 4, n)],
        "merchant_id": merchants[rng.integers(0, len(merchants), n)],
        "event_time": pd.Timestamp("2025-03-01", tz="UTC").value // 1000 + rng.integers(0, 10**11, n),
    }


def _coded(values: np.ndarray) -> fs.Coded:
    vocab = sorted({v for v in values if v is not None}, reverse=True)
    index = {v: i for i, v in enumerate(vocab)}
    return fs.Coded(np.array([-1 if v is None else index[v] for v in values]), vocab)


def _edges_hit(spec: dict, columns: dict) -> dict:
    """Put some amounts exactly on the fitted bin edges (searchsorted side=right counts them)."""
    op = next(o for o in spec["transforms"] if o.get("column") == "amount")
    amount = columns["amount"].copy()
    amount[3 : 3 + len(op["bins"])] = op["bins"]
    return {**columns, "amount": amount}


@pytest.mark.parametrize("n", [0, 1, 257, 5000])
def test_transform_equals_the_numpy_reference_bit_for_bit(spec, n):
    columns = _edges_hit(spec, _columns(n, n)) if n > 20 else _columns(n, n)
    ref = fs.transform(spec, columns)
    got = kernels.transform(spec, columns)
    assert got.dtype == np.float32 and got.shape == ref.shape == (n, len(spec["feature_names"]))
    assert got.tobytes() == ref.tobytes()
    coded = {
        **columns,
        **{c: _coded(np.asarray(columns[c], dtype=object)) for c in ("channel", "country", "merchant_id")},
    }
    assert kernels.transform(spec, coded).tobytes() == ref.tobytes()


def test_transform_reuses_out_and_scratch_across_chunks_of_any_size(spec):
    scratch = kernels.Scratch()
    buf = np.full(6000 * len(spec["feature_names"]), np.nan, dtype=np.float32)
    for n, seed in ((5000, 1), (1200, 2), (6000, 3)):  # shrinking and growing: stale rows never leak
        columns = _columns(n, seed)
        out = buf[: n * len(spec["feature_names"])].reshape(n, -1)
        got = kernels.transform(spec, columns, out=out, scratch=scratch)
        assert got is out and got.tobytes() == fs.transform(spec, columns).tobytes()
    with pytest.raises(ValueError, match="C-contiguous float32"):
        kernels.transform(spec, _columns(10, 4), out=np.zeros((10, 3), dtype=np.float32))


def test_unsorted_bins_fall_back_to_the_reference_path(spec):
    """A hand-edited spec with descending edges: numpy's searchsorted answer, whatever it is, is kept."""
    bad = {**spec, "transforms": [dict(op) for op in spec["transforms"]]}
    op = next(o for o in bad["transforms"] if o.get("bins"))
    op["bins"] = list(reversed(op["bins"]))
    columns = _columns(3000, 9)
    assert kernels.transform(bad, columns).tobytes() == fs.transform(bad, columns).tobytes()


def test_transform_checks_like_the_reference(spec):
    with pytest.raises(fs.SpecError, match="missing"):
        kernels.transform(spec, {"amount": np.zeros(3)})
    columns = _columns(10, 1)
    columns["amount"] = columns["amount"][:5]
    with pytest.raises(fs.SpecError, match="different lengths"):
        kernels.transform(spec, columns)
    broken = {**spec, "feature_names": spec["feature_names"][:-1]}
    with pytest.raises(fs.SpecError, match="inconsistent"):
        kernels.transform(broken, _columns(10, 1))


def _agg_inputs(seed: int, n: int):
    rng = np.random.default_rng(seed)
    step = rng.choice([1, 10**6, 3600 * 10**6])  # microsecond, second or hour ticks: few or many ties
    t = rng.integers(0, 40 * 86400 * 10**6 // step, n).astype(np.int64) * step
    if rng.random() < 0.5:
        t = np.sort(t)  # a lake's nearly time-ordered events, and arbitrary order
    codes = rng.integers(-1, int(rng.integers(1, 50)), n)  # -1: a missing key, its own entity
    value = np.where(rng.random(n) < 0.2, np.nan, rng.gamma(2.0, 30.0, n))
    if n:
        value[0] = -0.0  # np.cumsum keeps a leading -0.0: the kernel must too
    return t, codes, value


@pytest.mark.parametrize("seed", range(12))
def test_entity_windows_equal_the_numpy_reference_bit_for_bit(seed, monkeypatch):
    calls = []
    real = kernels.entity_windows
    monkeypatch.setattr(kernels, "entity_windows", lambda *a: calls.append(1) or real(*a))  # the kernel ran
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(0, 4000))
    t, codes, value = _agg_inputs(seed, n)
    kw = {"entity_key": "k", "windows": ["1h", "24h", "7d"]}
    for val, column in ((value, "v"), (None, None)):
        kw["value_column"] = column
        for rows in (None, slice(int(rng.integers(0, max(n, 1))), n)):
            got = aggregate_arrays(t, codes, val, rows=rows, **kw)
            ref = aggregate_arrays(t, codes, val, rows=rows, engine="numpy", **kw)
            assert list(got) == list(ref)
            for name in ref:
                assert got[name].tobytes() == ref[name].tobytes(), name  # NaN bits and signed zeros too
    assert len(calls) == 4  # every compiled call above went through the kernel (not the numpy fallback)


def test_entity_time_order_is_the_stable_argsort_of_the_key():
    rng = np.random.default_rng(7)
    for codes in (rng.integers(0, 30, 5000), rng.integers(0, 10**12, 500)):  # dense and sparse codes
        t = rng.integers(0, 1000, len(codes)).astype(np.int64)  # many (entity, time) ties
        dense = np.unique(codes, return_inverse=True)[1].ravel()
        key = dense * np.int64(1001) + t
        assert np.array_equal(kernels.entity_time_order(codes, t), np.argsort(key, kind="stable"))
