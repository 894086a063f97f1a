"""A small features directory with a known signal, for model and tuning tests (no lake, no labeling).

The label follows a logistic model with an interaction (online x large amount) and a missing-not-at-random
effect (new devices hide their age), so a tree ensemble can beat any one-column rule, and a one-column rule
beats a constant. The spec is fitted with the real feature code (``pipelines.features.build.fit_spec``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core.config import FeaturesConfig, SchemaConfig
from pipelines.edge import featurespec as fs
from pipelines.features.build import fit_spec, transform_columns

SCHEMA = SchemaConfig.model_validate(
    {
        "entity_key": "card_id",
        "columns": [
            {"name": "card_id", "type": "string", "nullable": False},
            {"name": "channel", "type": "category", "nullable": False},
            {"name": "amount", "type": "float", "nullable": False},
            {"name": "device_age_days", "type": "float", "nullable": True},
            {"name": "distance_km", "type": "float", "nullable": True},
        ],
    }
)
FEATURES = FeaturesConfig.model_validate({"cyclical": False, "aggregates": {"enabled": False}})


def events(n: int, *, seed: int, start: str = "2025-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    channel = rng.choice(["pos", "online", "atm"], size=n, p=[0.6, 0.3, 0.1])
    amount = rng.lognormal(3.5, 1.0, size=n)
    age = rng.exponential(200.0, size=n)
    distance = rng.exponential(30.0, size=n)
    z = (np.log(amount) - 3.5) / 1.0
    logit = (
        -4.6
        + 1.2 * (channel == "online")
        + 0.7 * z
        + 1.6 * (channel == "online") * (z > 0.8)
        + 1.4 * (age < 10)
        + 0.8 * (distance > 80)
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    age_seen = np.where(age < 10, np.nan, age)  # new devices hide their age (MNAR)
    times = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(
        np.sort(rng.integers(0, 86_400 * 20, n)), unit="s"
    )
    return pd.DataFrame(
        {
            "event_id": [f"e{seed}-{i}" for i in range(n)],
            "event_time": times,
            "card_id": [f"c{v}" for v in rng.integers(0, n // 4, n)],
            "channel": channel,
            "amount": amount,
            "device_age_days": age_seen,
            "distance_km": distance,
            "label": pd.array(y, dtype="Int8"),
            "label_source": "natural",
            "label_weight": 1.0,
            "sample_weight": 1.0,
        }
    )


def make_features(
    n_train: int = 6000, n_valid: int = 3000, n_test: int = 3000, *, seed: int = 0
) -> tuple[dict[str, pd.DataFrame], dict]:
    """Features frames (train/valid/test) and their spec; 2% of train labels are null (immature)."""
    raw = {
        "train": events(n_train, seed=seed),
        "valid": events(n_valid, seed=seed + 1, start="2025-01-22"),
        "test": events(n_test, seed=seed + 2, start="2025-02-12"),
    }
    unknown = np.random.default_rng(seed).random(n_train) < 0.02
    raw["train"].loc[unknown, "label"] = pd.NA
    spec = fit_spec(raw["train"], cfg=FEATURES, schema=SCHEMA)
    frames = {}
    for split, df in raw.items():
        x = transform_columns(spec, df)
        df = df.assign(split=split)
        frames[split] = pd.concat([df, pd.DataFrame(x, columns=spec["feature_names"])], axis=1)
    return frames, spec


def write_features_dir(path: Path, **kwargs) -> Path:
    frames, spec = make_features(**kwargs)
    path.mkdir(parents=True, exist_ok=True)
    for split, df in frames.items():
        df.to_parquet(path / f"{split}.parquet", index=False)
    (path / "spec.json").write_text(fs.dumps_spec(spec), encoding="utf-8")
    return path
