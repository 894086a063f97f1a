"""The backtest's window clock: event time (rows by when they happened) or label time (rows by when their
label arrived), and labels as known at the cutoff either way."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipelines.lifecycle.backtest import Timeline, _Ctx, _us

DAY = dt.timedelta(days=1)
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
NEVER = np.iinfo(np.int64).max


def _timeline() -> Timeline:
    # five bookings, time-ordered; label delays 1, 40, 2, 90 days and one never labelled
    booked = [0, 10, 20, 25, 30]
    delay = [1, 40, 2, 90, None]
    t_us = np.array([_us(T0 + d * DAY) for d in booked], dtype=np.int64)
    lt = np.array(
        [_us(T0 + (b + d) * DAY) if d is not None else NEVER for b, d in zip(booked, delay, strict=True)]
    )
    label = np.array([1.0, 0.0, 0.0, 1.0, np.nan])
    return Timeline(frame=pd.DataFrame({"x": range(5)}), t_us=t_us, label_time_us=lt.astype(np.int64),
                    label=label, agg_columns={}, first=T0.date(), last=(T0 + 30 * DAY).date())  # fmt: skip


def _ctx(split_on: str) -> _Ctx:
    return _Ctx(_timeline(), params=None, maturity_days=0, holdout_days=10, train_days=365,  # type: ignore[arg-type]
                monitored={}, split_on=split_on)  # fmt: skip


def test_event_time_windows_hold_only_rows_whose_label_is_known_at_the_cutoff() -> None:
    ctx = _ctx("event_time")
    cutoff = T0 + 60 * DAY
    # rows booked in [0, 31) days; row 3's label arrives on day 115, row 4's never
    assert ctx.rows(T0, T0 + 31 * DAY, cutoff).tolist() == [0, 1, 2]
    assert ctx.rows(T0, T0 + 31 * DAY, T0 + 200 * DAY).tolist() == [0, 1, 2, 3]


def test_label_time_windows_select_by_label_arrival_whatever_the_row_age() -> None:
    ctx = _ctx("label_time")
    cutoff = T0 + 60 * DAY
    # labels arrived on days 1, 50, 22 (row 3: day 115, after the cutoff; row 4: never)
    assert ctx.rows(T0 + 45 * DAY, cutoff, cutoff).tolist() == [1]  # a 40-day-old booking, newly matured
    assert ctx.rows(T0, T0 + 45 * DAY, cutoff).tolist() == [0, 2]
    # a window past the cutoff never sees labels from after it
    assert ctx.rows(T0, T0 + 500 * DAY, cutoff).tolist() == [0, 1, 2]
    assert ctx.rows(T0, T0 + 500 * DAY, T0 + 200 * DAY).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("split_on", ["event_time", "label_time"])
def test_train_and_holdout_windows_never_share_a_row(split_on: str) -> None:
    ctx = _ctx(split_on)
    cutoff = T0 + 200 * DAY
    train_end, holdout = ctx.windows(cutoff)
    train = set(ctx.rows(T0 - 400 * DAY, train_end, cutoff).tolist())
    hold = set(ctx.rows(*holdout, cutoff).tolist())
    assert not train & hold


def test_coded_timeline_columns_give_the_same_matrix_as_the_frame_path(synthetic_lake, params) -> None:
    """The backtest transforms dictionary-coded timeline columns; the matrix must be the frame path's, byte for
    byte, on any row subset (text with missing values, numbers, times, the aggregates)."""
    from pipelines.features.build import fit_spec, transform_columns
    from pipelines.lifecycle.backtest import load_timeline

    tl = load_timeline(str(synthetic_lake / "lake"), params)
    ctx = _Ctx(tl, params, maturity_days=0, holdout_days=7, train_days=30, monitored={})
    rng = np.random.default_rng(0)
    fit_rows = np.sort(rng.choice(len(tl.frame), size=5000, replace=False))
    agg = params.features.aggregates
    spec = fit_spec(tl.frame.iloc[fit_rows], cfg=params.features, schema=params.schema,
                    aggregates=tl.agg_columns or None, aggregate_windows=agg.windows if tl.agg_columns else (),
                    aggregate_value=agg.value_column if tl.agg_columns else None)  # fmt: skip
    for size in (1, 777, 12000):
        idx = np.sort(rng.choice(len(tl.frame), size=size, replace=False))
        frame_path = transform_columns(spec, tl.frame.iloc[idx])
        assert ctx.matrix(spec, idx).tobytes() == frame_path.tobytes()
    assert ctx.matrix(spec, idx) is ctx.matrix(spec, idx)  # kept, not recomputed
    with pytest.raises(ValueError):
        ctx.matrix(spec, idx)[0, 0] = 1.0  # shared, so read-only
