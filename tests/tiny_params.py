"""Budgets shrunk for a 45-day x 600-row lake: tests that check the pipeline's wiring, not its models."""

from __future__ import annotations

from typing import Any


def shrink_for_wiring(params: dict[str, Any], *, days: int = 45, rows_per_day: int = 600) -> dict[str, Any]:
    """Shrink a parsed params.yaml in place (and return it): tiny data, tiny tuning and training budgets,
    and a gate that lets a tiny model through, so that every stage after register has a champion."""
    params["synthetic"].update({"days": days, "rows_per_day": rows_per_day})
    params["validation"]["min_rows_per_partition"] = 100
    params["tune"].update({"n_trials": 3, "timeout_s": 60, "num_boost_round": 40})
    keras = params["train"].setdefault("keras", {})  # params.yaml holds only what differs from the defaults
    keras.update({"epochs": 2, "hidden_units": [32, 16]})
    keras.setdefault("distillation", {})["compare"] = False
    params["train"].setdefault("xgboost", {})["num_boost_round"] = 60
    params["gate"].update({"require_behavioural": False, "baseline_margin": 0.0})
    return params
