"""The numpy-only feature spec: hashing, unknown categories, imputation, cyclical time, JSON round trip."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import FeaturesConfig, SchemaConfig
from pipelines.edge import featurespec as fs
from pipelines.features.build import fit_spec, transform_columns

SCHEMA = SchemaConfig.model_validate(
    {
        "entity_key": "card_id",
        "columns": [
            {"name": "card_id", "type": "string"},
            {"name": "merchant_id", "type": "category", "high_cardinality": True},
            {"name": "channel", "type": "category"},
            {"name": "amount", "type": "float", "nullable": False},
            {"name": "distance_km", "type": "float", "nullable": True},
        ],
    }
)


def _train() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": ["a", "b", "c", "d", "e", "f"],
            "event_time": pd.to_datetime(
                [
                    "2025-01-06T00:00Z",
                    "2025-01-06T06:00Z",
                    "2025-01-06T12:00Z",
                    "2025-01-07T18:00Z",
                    "2025-01-08T00:00Z",
                    "2025-01-12T23:59Z",
                ]
            ),
            "card_id": ["k1", "k1", "k2", "k2", "k3", "k3"],
            "merchant_id": ["m1", "m2", "m3", "m1", "m2", "m9"],
            "channel": ["pos", "pos", "online", "pos", "online", "atm"],
            "amount": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
            "distance_km": [1.0, np.nan, 3.0, 5.0, np.nan, 100.0],
            "label": [0, 0, 1, 0, 0, 1],
        }
    )


CFG = FeaturesConfig(
    min_category_count=1, hash_buckets=8, scaling="standard", discretize={"amount": 3},
    crosses=[["channel", "merchant_id"]], cross_buckets=4,
)  # fmt: skip


def _spec() -> dict:
    return fit_spec(_train(), cfg=CFG, schema=SCHEMA)


def _column(spec: dict, matrix: np.ndarray, name: str) -> np.ndarray:
    return matrix[:, spec["feature_names"].index(name)]


def test_stable_hash_is_crc32_and_independent_of_the_process(root):
    values = np.array(["m1", "m2", "\u00e9t\u00e9"])
    got = fs.stable_hash(values, "merchant_id")
    seed = zlib.crc32(b"merchant_id")
    assert list(got) == [zlib.crc32(v.encode("utf-8"), seed) for v in values]
    # a fresh interpreter with a different PYTHONHASHSEED gives the same buckets
    code = "import numpy as np, pipelines.edge.featurespec as f; print(f.stable_hash(np.array(['m1','m2']), 'merchant_id').tolist())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={"PYTHONHASHSEED": "123"},
    ).stdout
    assert out.strip() == str([int(x) for x in got[:2]])


def test_hash_bucket_and_cross_features_are_one_hot():
    spec = _spec()
    m = fs.transform(spec, {"merchant_id": ["m1", "zzz-never-seen"], "channel": ["pos", None],
                             "amount": [1.0, 2.0], "distance_km": [1.0, 2.0],
                             "event_time": ["2025-01-06T00:00:00Z"] * 2})  # fmt: skip
    hashed = [i for i, n in enumerate(spec["feature_names"]) if n.startswith("merchant_id__h")]
    cross = [i for i, n in enumerate(spec["feature_names"]) if n.startswith("channel_x_merchant_id__h")]
    assert len(hashed) == 8 and len(cross) == 4
    np.testing.assert_array_equal(m[:, hashed].sum(axis=1), [1, 1])  # an unseen ID still lands in a bucket
    np.testing.assert_array_equal(m[:, cross].sum(axis=1), [1, 1])
    bucket = zlib.crc32(b"m1", zlib.crc32(b"merchant_id")) % 8
    assert m[0, hashed[bucket]] == 1.0


def test_unknown_and_missing_categories_go_to_the_unknown_slot():
    spec = _spec()
    op = next(o for o in spec["transforms"] if o.get("column") == "channel")
    assert op["op"] == "onehot" and op["categories"] == ["pos", "online", "atm"]  # by frequency, then name
    cols = {"merchant_id": ["m1"] * 3, "channel": ["online", "satellite", None], "amount": [1.0] * 3,
            "distance_km": [1.0] * 3, "event_time": ["2025-01-06T00:00:00Z"] * 3}  # fmt: skip
    m = fs.transform(spec, cols)
    assert _column(spec, m, "channel==online").tolist() == [1, 0, 0]
    assert _column(spec, m, "channel==__unknown__").tolist() == [0, 1, 1]
    ordinal = fit_spec(_train(), cfg=CFG.model_copy(update={"onehot_max_categories": 2}), schema=SCHEMA)
    assert _column(ordinal, fs.transform(ordinal, cols), "channel__ord").tolist() == [2, 0, 0]


def test_imputation_uses_the_train_median_and_flags_missing_values():
    spec = _spec()
    op = next(o for o in spec["transforms"] if o.get("column") == "distance_km")
    assert op["impute"] == 4.0  # median of 1, 3, 5, 100
    assert op["indicator"] is True
    amount = next(o for o in spec["transforms"] if o.get("column") == "amount")
    assert amount["indicator"] is False  # not nullable in the schema
    cols = {"merchant_id": ["m1"] * 3, "channel": ["pos"] * 3, "amount": ["", "35", "NaN"],
            "distance_km": [np.nan, "4", None], "event_time": ["2025-01-06T00:00:00Z"] * 3}  # fmt: skip
    m = fs.transform(spec, cols)
    assert _column(spec, m, "distance_km__missing").tolist() == [1, 0, 1]
    d = _column(spec, m, "distance_km__standard")
    assert d[0] == d[1] == d[2]  # imputed = the train median, which is exactly 4
    a = _column(spec, m, "amount__standard")
    assert a[0] == pytest.approx(0.0, abs=1e-6)  # amount median 35 equals its mean: standardizes to 0
    assert _column(spec, m, "amount__bin").tolist() == [1.0, 1.0, 1.0]  # edges at the 1/3, 2/3 quantiles


def test_scaling_variants():
    for scale in ("minmax", "log", "none"):
        cfg = CFG.model_copy(update={"scale_overrides": {"amount": scale}})
        spec = fit_spec(_train(), cfg=cfg, schema=SCHEMA)
        cols = {"merchant_id": ["m1"] * 2, "channel": ["pos"] * 2, "amount": [10.0, 60.0],
                "distance_km": [1.0, 1.0], "event_time": ["2025-01-06T00:00:00Z"] * 2}  # fmt: skip
        a = _column(spec, fs.transform(spec, cols), f"amount__{scale}")
        if scale == "minmax":
            np.testing.assert_allclose(a, [0.0, 1.0])
        elif scale == "none":
            np.testing.assert_allclose(a, [10.0, 60.0])
        else:
            logs = np.log1p(np.array([10.0, 20, 30, 40, 50, 60]))
            np.testing.assert_allclose(a, (np.log1p([10.0, 60.0]) - logs.mean()) / logs.std(), rtol=1e-6)


def test_cyclical_hour_and_day_of_week():
    spec = _spec()
    # 2025-01-06 is a Monday (dow 0); 06:00 is a quarter of a day; the same instant as epoch us and text.
    t = pd.Timestamp("2025-01-06T06:00:00Z")
    epoch_us = np.array([t.value // 1000], dtype=np.int64)
    for given in (["2025-01-06T06:00:00+00:00"], ["2025-01-06 07:00:00+01:00"], epoch_us,
                  np.array(["2025-01-06T06:00:00"], dtype="datetime64[us]")):  # fmt: skip
        cols = {
            "merchant_id": ["m1"],
            "channel": ["pos"],
            "amount": [1.0],
            "distance_km": [1.0],
            "event_time": given,
        }
        m = fs.transform(spec, cols)
        assert _column(spec, m, "event_time__hour_sin")[0] == pytest.approx(1.0, abs=1e-6)
        assert _column(spec, m, "event_time__hour_cos")[0] == pytest.approx(0.0, abs=1e-6)
        assert _column(spec, m, "event_time__dow_sin")[0] == pytest.approx(0.0, abs=1e-6)
        assert _column(spec, m, "event_time__dow_cos")[0] == pytest.approx(1.0, abs=1e-6)


def test_json_round_trip_and_digest():
    spec = _spec()
    text = fs.dumps_spec(spec)
    back = fs.loads_spec(text)
    assert back == spec and back["digest"] == fs.spec_digest(spec) and len(back["digest"]) == 64
    assert fs.dumps_spec(fs.loads_spec(text)) == text  # byte-identical
    frame = _train()
    np.testing.assert_array_equal(transform_columns(back, frame), transform_columns(spec, frame))
    tampered = json.loads(text)
    tampered["transforms"][0]["impute"] = 123.0
    with pytest.raises(fs.SpecError, match="digest"):
        fs.loads_spec(json.dumps(tampered))
    assert spec["fit"]["rows"] == 6 and spec["fit"]["split"] == "train"


def test_missing_input_column_is_named():
    with pytest.raises(fs.SpecError, match="distance_km"):
        fs.transform(_spec(), {"merchant_id": ["m1"], "channel": ["pos"], "amount": [1.0], "event_time": [0]})


def test_featurespec_imports_numpy_only(root):
    code = (
        "import sys, pipelines.edge.featurespec\n"
        "heavy = sorted(m for m in ('pandas', 'pyarrow', 'pydantic', 'sklearn', 'scipy', 'yaml') if m in sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_pandas_reference_and_numpy_agree_with_missing_values_in_hashed_columns():
    from pipelines.features.build import transform_frame

    spec = _spec()
    frame = _train().assign(
        merchant_id=["m1", None, "m3", None, "m2", "new"], channel=[None, "pos", "online", None, "x", "atm"]
    )
    np.testing.assert_allclose(
        transform_columns(spec, frame), transform_frame(spec, frame).to_numpy(), atol=1e-6
    )
    m = transform_columns(spec, frame)
    hashed = [i for i, n in enumerate(spec["feature_names"]) if n.startswith("merchant_id__h")]
    missing_bucket = zlib.crc32(fs.MISSING_TOKEN.encode(), zlib.crc32(b"merchant_id")) % 8
    assert m[1, hashed[missing_bucket]] == m[3, hashed[missing_bucket]] == 1.0


def test_dictionary_coded_columns_give_the_same_features_as_text():
    spec = _spec()
    merchants = ["m1", None, "m3", "", "m2", "never-seen", "m1", "NA"]
    channels = [None, "pos", "online", "pos", "satellite", "atm", "pos", "online"]
    amounts = ["10", None, "30", "40", "", "60", "1e3", "7"]  # numbers as text categories: still parsed

    def coded(values: list) -> fs.Coded:
        vocab = sorted({v for v in values if v is not None}, reverse=True)  # any vocabulary order
        return fs.Coded(np.array([-1 if v is None else vocab.index(v) for v in values]), vocab)

    base = {"distance_km": np.arange(8.0), "event_time": ["2025-01-06T10:00:00Z"] * 8}
    plain = fs.transform(spec, {**base, "merchant_id": merchants, "channel": channels, "amount": amounts})
    as_codes = fs.transform(
        spec, {**base, "merchant_id": coded(merchants), "channel": coded(channels), "amount": coded(amounts)}
    )
    np.testing.assert_array_equal(as_codes, plain)
    mixed = fs.transform(
        spec, {**base, "merchant_id": coded(merchants), "channel": channels, "amount": amounts}
    )
    np.testing.assert_array_equal(mixed, plain)  # a cross of a coded and a plain column falls back to text


def test_distinct_counts_small_code_spaces_and_sorts_large_ones() -> None:
    """The hash cross's distinct combinations: equal to np.unique's, by counting or by sorting."""
    from pipelines.edge.featurespec import _distinct

    rng = np.random.default_rng(3)
    for space, n in ((40, 5000), (70_000, 20), (2**40, 3000)):
        codes = rng.integers(0, space, n)
        uniq, inverse = _distinct(codes, space)
        ref_u, ref_i = np.unique(codes, return_inverse=True)
        assert np.array_equal(uniq, ref_u) and np.array_equal(inverse, ref_i.ravel())
        assert np.array_equal(uniq[inverse], codes)
