"""Point-in-time entity aggregates: values computed by hand on a five-event history."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipelines.features.build import aggregate_columns, entity_aggregates, parse_window

T0 = pd.Timestamp("2025-03-03T10:00:00Z")


def _events() -> pd.DataFrame:
    # Card A: e1 10:00 (50), e2 10:30 (20), e3 10:30 (missing amount: a tie with e2), e4 11:30 (100)
    # Card B: e5 10:45 (7). Rows are deliberately shuffled: order must not matter.
    rows = [
        ("e4", T0 + pd.Timedelta(minutes=90), "A", 100.0),
        ("e1", T0, "A", 50.0),
        ("e5", T0 + pd.Timedelta(minutes=45), "B", 7.0),
        ("e3", T0 + pd.Timedelta(minutes=30), "A", np.nan),
        ("e2", T0 + pd.Timedelta(minutes=30), "A", 20.0),
    ]
    return pd.DataFrame(rows, columns=["event_id", "event_time", "card_id", "amount"])


def test_five_event_history_matches_hand_computed_values():
    agg = entity_aggregates(_events(), entity_key="card_id", windows=["1h", "2h"], value_column="amount")
    by = agg.set_index("event_id")
    assert list(agg["event_id"]) == ["e4", "e1", "e5", "e3", "e2"]  # same row order as the input
    # Computed by hand; the window is [t - w, t): the event itself and same-time events are excluded.
    expected = {
        # id: (n_1h, sum_1h, mean_1h, n_2h, sum_2h, mean_2h, secs_since_prev)
        "e1": (0, 0.0, math.nan, 0, 0.0, math.nan, math.nan),  # first event of card A
        "e2": (1, 50.0, 50.0, 1, 50.0, 50.0, 1800.0),  # sees e1 only, not its tie e3
        "e3": (1, 50.0, 50.0, 1, 50.0, 50.0, 1800.0),  # sees e1 only, not its tie e2
        "e4": (2, 20.0, 20.0, 3, 70.0, 35.0, 3600.0),  # 1h: [10:30, 11:30) holds e2, e3 (e1 at 10:00 is out);
        #                                              mean skips e3's missing amount
        "e5": (0, 0.0, math.nan, 0, 0.0, math.nan, math.nan),  # card B has no earlier event
    }
    cols = [
        "card_id__n_1h", "card_id__sum_amount_1h", "card_id__mean_amount_1h",
        "card_id__n_2h", "card_id__sum_amount_2h", "card_id__mean_amount_2h", "card_id__secs_since_prev",
    ]  # fmt: skip
    assert list(agg.columns) == ["event_id", *aggregate_columns("card_id", ["1h", "2h"], "amount")]
    for eid, values in expected.items():
        got = by.loc[eid, cols].to_numpy(dtype=float)
        np.testing.assert_allclose(got, np.array(values, dtype=float), equal_nan=True, err_msg=eid)


def test_window_start_is_inclusive_and_no_event_sees_itself_or_a_later_one():
    ev = _events()
    agg = entity_aggregates(ev, entity_key="card_id", windows=["1h"], value_column="amount").set_index(
        "event_id"
    )
    # e4 at 11:30 with a 1h window starts at exactly 10:30: e2 and e3 count (closed on the left).
    assert agg.loc["e4", "card_id__n_1h"] == 2
    # Moving any event later must never change the aggregates of the events before it.
    later = ev.copy()
    later.loc[later["event_id"] == "e4", "amount"] = 1e6
    later.loc[len(later)] = ["e6", T0 + pd.Timedelta(minutes=91), "A", 5.0]
    agg2 = entity_aggregates(later, entity_key="card_id", windows=["1h"], value_column="amount").set_index(
        "event_id"
    )
    for eid in ("e1", "e2", "e3", "e4", "e5"):  # e4 included: its own amount changed
        pd.testing.assert_series_equal(agg.loc[eid], agg2.loc[eid])


def test_brute_force_agrees_on_random_history():
    rng = np.random.default_rng(3)
    n = 400
    ev = pd.DataFrame(
        {
            "event_id": [f"x{i}" for i in range(n)],
            # minute resolution over one day: many ties
            "event_time": T0 + pd.to_timedelta(rng.integers(0, 24 * 60, n), unit="min"),
            "card_id": rng.choice(["a", "b", "c", None], n),
            "amount": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2.0, 30.0, n)),
        }
    )
    agg = entity_aggregates(ev, entity_key="card_id", windows=["3h"], value_column="amount")
    t = ev["event_time"].to_numpy()
    for i in range(n):
        if ev["card_id"][i] is None:
            assert agg["card_id__n_3h"][i] == 0  # a missing key never pools events
            continue
        same = (ev["card_id"] == ev["card_id"][i]).to_numpy()
        win = same & (t < t[i]) & (t >= t[i] - np.timedelta64(3, "h"))
        assert agg["card_id__n_3h"][i] == win.sum()
        assert agg["card_id__sum_amount_3h"][i] == pytest.approx(np.nansum(ev["amount"][win]))


def test_parse_window_rejects_bad_text():
    assert parse_window("7d") == 7 * 86400
    with pytest.raises(ValueError, match="'7w'"):
        parse_window("7w")


def test_rows_subset_equals_the_same_rows_of_the_full_computation():
    from pipelines.features.build import aggregate_arrays

    rng = np.random.default_rng(5)
    n = 2000
    t = rng.integers(0, 10 * 3600, n).astype(np.int64) * 1_000_000  # second resolution: ties
    codes = rng.integers(-1, 40, n)  # -1: a missing key
    value = np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2.0, 30.0, n))
    kw = {"entity_key": "k", "windows": ["1h", "6h"], "value_column": "v"}
    full = aggregate_arrays(t, codes, value, **kw)
    tail = aggregate_arrays(t, codes, value, rows=slice(n - 300, n), **kw)
    picked = aggregate_arrays(t, codes, value, rows=np.array([7, 3, 1999]), **kw)
    assert list(full) == list(aggregate_columns("k", ["1h", "6h"], "v"))
    for name in full:
        np.testing.assert_array_equal(tail[name], full[name][n - 300 :], err_msg=name)
        np.testing.assert_array_equal(picked[name], full[name][[7, 3, 1999]], err_msg=name)


@pytest.mark.parametrize("years", [1, 400])  # 400 years x 5000 entities overflows the direct int64 key
def test_direct_and_rank_compressed_keys_agree_with_brute_force(years):
    from pipelines.features.build import aggregate_arrays

    rng = np.random.default_rng(years)
    n = 600
    year_us = 365 * 86400 * 1_000_000
    t = rng.integers(0, years * 12, n).astype(np.int64) * (year_us // 12)  # monthly ticks: many ties
    codes = rng.choice([0, 1, 2, 4999, -1], n)
    value = np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2.0, 30.0, n))
    window = f"{years * 365 // 4}d"
    w_us = (years * 365 // 4) * 86400 * 1_000_000
    out = aggregate_arrays(t, codes, value, entity_key="k", windows=[window], value_column="v")
    for i in range(n):
        if codes[i] < 0:
            assert out[f"k__n_{window}"][i] == 0
            continue
        win = (codes == codes[i]) & (t < t[i]) & (t >= t[i] - w_us)
        assert out[f"k__n_{window}"][i] == win.sum()
        assert out[f"k__sum_v_{window}"][i] == pytest.approx(np.nansum(value[win]))
        earlier = (codes == codes[i]) & (t < t[i])
        gap = (t[i] - t[earlier].max()) / 1e6 if earlier.any() else np.nan
        np.testing.assert_equal(out["k__secs_since_prev"][i], gap)
