"""The pandas side of the feature spec: DataFrame columns as the arrays :func:`featurespec.transform` reads.

Below the stages that fit or apply a spec (features, models, batch scoring, backtest); the transform itself
lives in ``featurespec`` (numpy only, the edge runtime's copy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipelines.edge import featurespec as fs

__all__ = ["epoch_us", "frame_to_columns", "transform_columns"]


def epoch_us(times: pd.Series) -> np.ndarray:
    """A time column (tz-aware, naive-as-UTC or text) as int64 epoch microseconds."""
    # already tz-aware: skip to_datetime, whose cache probe iterates the values in Python
    t = times if isinstance(times.dtype, pd.DatetimeTZDtype) else pd.to_datetime(times, utc=True)
    return t.dt.tz_convert(None).to_numpy(dtype="datetime64[us]").astype(np.int64)


def frame_to_columns(df: pd.DataFrame, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The DataFrame columns as numpy arrays for :func:`featurespec.transform` (missing -> None/NaN)."""
    cols: dict[str, np.ndarray] = {}
    for name in names:
        s = df[name]
        if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(s.dtype):
            cols[name] = epoch_us(s)
        elif pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
            cols[name] = s.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            cols[name] = s.astype(object).where(s.notna(), None).to_numpy(dtype=object)
    return cols


def transform_columns(spec: Mapping[str, Any], df: pd.DataFrame) -> np.ndarray:
    """The production path: DataFrame -> arrays -> the one numpy transform."""
    return fs.transform(spec, frame_to_columns(df, fs.input_columns(spec)))
