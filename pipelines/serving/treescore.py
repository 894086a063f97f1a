"""Compiled scoring of an XGBoost tree ensemble: ``Booster.inplace_predict``'s probabilities, bit for bit,
in about half its CPU time.

XGBoost's CPU predictor walks each tree node by node for each row: a chain of dependent loads and a
branch the processor cannot predict. Here every tree is laid out as a *complete* binary tree of the
ensemble's depth (a leaf above the bottom level becomes a subtree whose leaves all hold its value, so the
way taken below it does not matter), and a block of rows is scored tree by tree, level by level, with
branch-free vector operations over the rows of a feature-major block:

- each real split ``(feature, threshold, default_left)`` is one comparison over the block's column of
  that feature; a row keeps the bit of the split its path has reached at that level
  (``prefix == node``), so no row ever branches;
- after the last level, the row's path *is* the leaf's index in the tree's leaf table.

The arithmetic is XGBoost's own: a split goes right when ``not (x < threshold)`` and a missing value
(NaN) takes the default side; the margin starts at the base score's margin and adds the trees' leaves in
float32, tree after tree; the probability is XGBoost's float32 sigmoid. :meth:`CompiledTrees.verify`
checks the result against the booster itself on rows built from the model's own thresholds (each value
just below, at and above a threshold, and missing), and :mod:`pipelines.serving.predict` also checks the first
rows of every run; any difference falls back to XGBoost.

Supported: ``gbtree`` boosters with numerical splits, one output (``binary:logistic`` or
``reg:logistic``; probabilities or margins), depth up to :data:`MAX_DEPTH`. Anything else raises
:class:`Unsupported`, and the caller scores with XGBoost. Only numpy and numba are needed at scoring
time; the booster is read once, from its JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

__all__ = ["MAX_DEPTH", "CompiledTrees", "Mismatch", "Unsupported", "compile_booster"]

MAX_DEPTH = 12  # leaf tables of 4,096 floats per tree; deeper (lossguide) trees stay with XGBoost
_BLOCK = 256  # rows per block: the block's columns (features x 256 float32) stay in the core's cache
_OBJECTIVES = ("binary:logistic", "reg:logistic")  # the output is the margin's sigmoid


class Unsupported(ValueError):
    """The booster has something this scorer does not reproduce exactly; score with XGBoost."""


class Mismatch(RuntimeError):
    """The compiled scores differ from XGBoost's on some row (never expected; the caller falls back)."""


@njit(nogil=True, cache=True)
def _base_margin(p):  # pragma: no cover - compiled
    # XGBoost's ProbToMargin for the logistic objectives, in float32 (the C library's logf)
    one = np.float32(1.0)
    return np.float32(-math.log(one / p - one))


@njit(nogil=True, cache=True)
def _score(
    x, node_ptr, node_pos, node_feat, node_thr, node_dl, leaf, base, depth, sigmoid, out
):  # pragma: no cover
    n, nf = x.shape
    n_trees = leaf.shape[0]
    xt = np.empty((nf, _BLOCK), dtype=np.float32)
    prefix = np.empty(_BLOCK, dtype=np.int32)
    bit = np.empty(_BLOCK, dtype=np.int32)
    acc = np.empty(_BLOCK, dtype=np.float32)
    for s in range(0, n, _BLOCK):
        m = min(n - s, _BLOCK)
        for f in range(nf):  # the block, feature-major: each split reads one contiguous column
            for r in range(m):
                xt[f, r] = x[s + r, f]
        for r in range(m):
            acc[r] = base
        for t in range(n_trees):
            for r in range(m):
                prefix[r] = 0
                bit[r] = 0
            level_start = 0  # complete-tree position of the current level's first node
            level = 0
            for q in range(node_ptr[t], node_ptr[t + 1]):  # real splits, in complete-tree order
                pos = node_pos[q]
                while pos >= 2 * level_start + 1:  # the next level: every path takes its bit
                    for r in range(m):
                        prefix[r] = 2 * prefix[r] + bit[r]
                        bit[r] = 0
                    level_start = 2 * level_start + 1
                    level += 1
                here = pos - level_start
                col = xt[node_feat[q]]
                thr = node_thr[q]
                if node_dl[q]:  # NaN >= thr is false: missing goes left
                    for r in range(m):
                        bit[r] |= (col[r] >= thr) & (prefix[r] == here)
                else:  # not (NaN < thr) is true: missing goes right
                    for r in range(m):
                        bit[r] |= (not (col[r] < thr)) & (prefix[r] == here)
            while level < depth:
                for r in range(m):
                    prefix[r] = 2 * prefix[r] + bit[r]
                    bit[r] = 0
                level += 1
            values = leaf[t]
            for r in range(m):
                acc[r] += values[prefix[r]]
        for r in range(m):
            if sigmoid:  # XGBoost's float32 sigmoid (common::Sigmoid)
                z = min(-acc[r], np.float32(88.7))
                out[s + r] = np.float32(1.0) / (np.float32(math.exp(z)) + np.float32(1.0) + np.float32(1e-16))
            else:
                out[s + r] = acc[r]


@dataclass(frozen=True)
class CompiledTrees:
    """A tree ensemble as complete-tree tables (see the module docstring); :meth:`predict` scores."""

    n_features: int
    depth: int
    node_ptr: np.ndarray  # int64 [trees + 1]: tree t's real splits are node_ptr[t]:node_ptr[t + 1]
    node_pos: np.ndarray  # int64: a split's position in its complete tree (level order)
    node_feat: np.ndarray  # int64
    node_thr: np.ndarray  # float32
    node_dl: np.ndarray  # bool: missing goes left
    leaf: np.ndarray  # float32 [trees, 2**depth]
    base_margin: float
    sigmoid: bool  # probabilities (True) or margins

    @property
    def n_trees(self) -> int:
        return int(self.leaf.shape[0])

    def predict(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """float32 scores of a float32 ``rows x features`` matrix (NaN missing), as XGBoost's ``inplace_predict``."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected a rows x {self.n_features} matrix, got shape {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if out is None:
            out = np.empty(len(x), dtype=np.float32)
        _score(
            x, self.node_ptr, self.node_pos, self.node_feat, self.node_thr, self.node_dl, self.leaf,
            np.float32(self.base_margin), self.depth, self.sigmoid, out,
        )  # fmt: skip
        return out

    def probe_rows(self, rows: int = 4096, seed: int = 0) -> np.ndarray:
        """Rows that take every split both ways and the missing way: each feature's value is one of its
        thresholds, the float32 just below one, or NaN (a feature no split uses: 0 or NaN)."""
        rng = np.random.default_rng(seed)
        x = np.empty((rows, self.n_features), dtype=np.float32)
        for f in range(self.n_features):
            thr = np.unique(self.node_thr[self.node_feat == f])
            below = np.nextafter(thr, np.float32(-np.inf)).astype(np.float32)
            pool = np.concatenate([thr, below, np.array([np.nan, 0.0], dtype=np.float32)])
            x[:, f] = pool[rng.integers(0, len(pool), rows)]
        return x

    def verify(self, booster: Any, iteration_range: tuple[int, int], x: np.ndarray | None = None) -> int:
        """Raise :class:`Mismatch` unless the scores equal ``booster.inplace_predict`` exactly on ``x``
        (default: :meth:`probe_rows`); returns the number of rows checked."""
        x = self.probe_rows() if x is None else np.ascontiguousarray(x, dtype=np.float32)
        kind = "value" if self.sigmoid else "margin"
        ref = np.asarray(booster.inplace_predict(x, iteration_range=iteration_range, predict_type=kind))
        got = self.predict(x)
        differ = np.flatnonzero(~((ref == got) | (np.isnan(ref) & np.isnan(got))))
        if len(differ):
            r = int(differ[0])
            raise Mismatch(
                f"compiled trees differ from XGBoost on {len(differ)} of {len(x)} rows "
                f"(row {r}: {got[r]!r} vs {ref[r]!r})"
            )
        return len(x)


def compile_booster(
    booster: Any, iteration_range: tuple[int, int] | None = None, *, margin: bool = False
) -> CompiledTrees:
    """The trees of ``iteration_range`` (``[begin, end)`` boosting rounds; all by default) of an
    ``xgboost.Booster``, scoring probabilities (or, with ``margin``, ``predict_type="margin"``); raises
    :class:`Unsupported` naming what is not reproduced."""
    model = json.loads(bytes(booster.save_raw("json")))
    learner = model["learner"]
    objective = learner["objective"]["name"]
    if objective not in _OBJECTIVES:
        raise Unsupported(f"objective {objective} (supported: {sorted(_OBJECTIVES)})")
    mparam = learner["learner_model_param"]
    if int(mparam.get("num_class", "0")) > 1 or int(mparam.get("num_target", "1")) != 1:
        raise Unsupported("more than one output (multi-class or multi-target)")
    gb = learner["gradient_booster"]
    if gb["name"] != "gbtree":
        raise Unsupported(f"booster {gb['name']} (only gbtree; dart weighs its trees at prediction)")
    trees_json = gb["model"]["trees"]
    per_round = int(gb["model"].get("gbtree_model_param", {}).get("num_parallel_tree", "1"))
    indptr = gb["model"].get("iteration_indptr") or list(range(0, len(trees_json) + 1, per_round))
    n_rounds = len(indptr) - 1
    begin, end = iteration_range or (0, n_rounds)
    end = n_rounds if end == 0 else end  # XGBoost: (0, 0) is every round
    if not 0 <= begin < end <= n_rounds:
        raise Unsupported(f"iteration_range {iteration_range} outside the model's {n_rounds} rounds")
    chosen = trees_json[indptr[begin] : indptr[end]]
    n_features = int(mparam["num_feature"])
    depth = 0
    for t in chosen:
        if any(int(s) != 0 for s in t["split_type"]):
            raise Unsupported("categorical splits")
        if int(t["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise Unsupported("vector leaves")
        depth = max(depth, _depth(t))
    if depth > MAX_DEPTH:
        raise Unsupported(f"tree depth {depth} > {MAX_DEPTH}")
    depth = max(depth, 1)
    n_leaves = 1 << depth
    n_inner = n_leaves - 1
    leaf = np.zeros((len(chosen), n_leaves), dtype=np.float32)
    ptr, pos_l, feat_l, thr_l, dl_l = [0], [], [], [], []
    for ti, t in enumerate(chosen):
        left, right = t["left_children"], t["right_children"]
        splits: list[tuple[int, int, float, bool]] = []
        stack = [(0, 0, 0)]  # (node, complete position, level)
        while stack:
            nid, pos, level = stack.pop()
            if left[nid] == -1:  # a leaf: its value fills the leaf slots under its position
                lo = hi = pos
                for _ in range(depth - level):
                    lo, hi = 2 * lo + 1, 2 * hi + 2
                leaf[ti, lo - n_inner : hi - n_inner + 1] = np.float32(t["split_conditions"][nid])
                continue
            f = int(t["split_indices"][nid])
            if not 0 <= f < n_features:
                raise Unsupported(f"tree {ti}: split on feature {f} of {n_features}")
            splits.append((pos, f, t["split_conditions"][nid], bool(t["default_left"][nid])))
            stack += [(left[nid], 2 * pos + 1, level + 1), (right[nid], 2 * pos + 2, level + 1)]
        splits.sort()
        for pos, f, thr, dl in splits:
            pos_l.append(pos)
            feat_l.append(f)
            thr_l.append(thr)
            dl_l.append(dl)
        ptr.append(len(pos_l))
    base = (
        json.loads(mparam["base_score"]) if mparam["base_score"].startswith("[") else [mparam["base_score"]]
    )
    p = np.float32(float(base[0]))
    if not 0.0 < p < 1.0:
        raise Unsupported(f"base_score {p} is not a probability")
    return CompiledTrees(
        n_features=n_features, depth=depth, node_ptr=np.asarray(ptr, dtype=np.int64),
        node_pos=np.asarray(pos_l, dtype=np.int64), node_feat=np.asarray(feat_l, dtype=np.int64),
        node_thr=np.asarray(thr_l, dtype=np.float32), node_dl=np.asarray(dl_l, dtype=np.bool_),
        leaf=leaf, base_margin=float(_base_margin(p)), sigmoid=not margin,
    )  # fmt: skip


def _depth(tree: dict[str, Any]) -> int:
    left, right = tree["left_children"], tree["right_children"]
    deepest = 0
    stack = [(0, 0)]
    while stack:
        nid, level = stack.pop()
        deepest = max(deepest, level)
        if left[nid] != -1:
            stack += [(left[nid], level + 1), (right[nid], level + 1)]
    return deepest
