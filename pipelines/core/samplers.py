"""Row samplers on plain arrays: which rows a sample keeps, and their weights. No I/O, numpy only.

Below every stage that samples: the sampling stage (train split), drift checks and monitoring (row budgets).
"""

from __future__ import annotations

import numpy as np

__all__ = ["simple_random_indices", "stratified_indices"]


def simple_random_indices(n_rows: int, *, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` distinct row indices, uniformly without replacement, sorted."""
    if not 0 <= size <= n_rows:
        raise ValueError(f"size={size} must be within [0, {n_rows}] (the number of rows)")
    return np.sort(rng.choice(n_rows, size=size, replace=False))


def stratified_indices(
    strata: np.ndarray, *, size: int, rng: np.random.Generator, min_per_stratum: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Proportional allocation: each stratum keeps its share of ``size`` (largest remainder rounding).

    Strata smaller than their allocation keep what they have; ``min_per_stratum`` raises small strata's
    allocation. Returns (sorted indices, Horvitz–Thompson weights N_h / n_h of the chosen rows).
    """
    n_rows = len(strata)
    if not 0 <= size <= n_rows:
        raise ValueError(f"size={size} must be within [0, {n_rows}] (the number of rows)")
    keys, inverse, counts = np.unique(strata.astype(str), return_inverse=True, return_counts=True)
    exact = counts * (size / n_rows) if n_rows else counts.astype(float)
    alloc = np.floor(exact).astype(np.int64)
    short = size - int(alloc.sum())
    if short > 0:
        alloc[np.argsort(-(exact - alloc), kind="stable")[:short]] += 1
    alloc = np.minimum(np.maximum(alloc, np.minimum(min_per_stratum, counts)), counts)
    chosen, weights = [], []
    for h in range(len(keys)):
        members = np.flatnonzero(inverse == h)
        if alloc[h] == 0:
            continue
        pick = rng.choice(members, size=int(alloc[h]), replace=False)
        chosen.append(pick)
        weights.append(np.full(len(pick), counts[h] / alloc[h]))
    if not chosen:
        return np.array([], dtype=np.int64), np.array([], dtype=float)
    idx, w = np.concatenate(chosen), np.concatenate(weights)
    order = np.argsort(idx, kind="stable")
    return idx[order], w[order]
