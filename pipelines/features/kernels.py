"""Compiled (numba) kernels for the two hot loops of batch scoring, each equal to its numpy reference bit for bit.

- :func:`transform`: :func:`pipelines.edge.featurespec.transform` fused into one pass over the rows. The numpy
  reference builds every numeric feature through a handful of whole-column temporaries and then fills the
  float32 matrix tile by tile; here the matrix is filled in row tiles that stay in cache, straight from
  the input columns, with no temporaries. Whatever is not plain IEEE arithmetic stays numpy's, so the two agree exactly on every machine:
  ``log1p`` is numpy's (computed on the column before the kernel), and categorical, hash and cyclical
  blocks come from the reference's own code (:func:`pipelines.edge.featurespec.apply_op`, vocabulary-sized work
  plus a gather); the kernel does the imputation, scaling, indicators, bins and the assembly.
- :func:`entity_windows`: the per-event window bounds of :func:`pipelines.features.build.aggregate_arrays` as
  one sweep over the (entity, time)-sorted events (two pointers per window) instead of a binary search
  per event and window, with the running sums and the outputs in the same pass.

Both release the GIL, so the model can score one chunk on its own threads while the next is built.
The numpy references stay the definition (and the edge runtime, which imports only numpy, uses them);
tests/unit/test_kernels.py checks equality on adversarial inputs. Compiled code is cached on disk
(``__pycache__``, or ``NUMBA_CACHE_DIR``): the first call after an install compiles for a few seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit

from pipelines.edge import featurespec as fs

__all__ = ["Scratch", "entity_time_order", "entity_windows", "transform"]

# numeric program columns (int64): input row, log row (-1: identity scale), value column, indicator
# column (-1: none), bin column (-1: none), first bin edge, number of edges
_N_INT = 7
# numeric program constants (float64): impute, g(impute) for log scaling, shift, divisor
_N_FLOAT = 4


@njit(nogil=True, cache=True)
def _fill(out, xs, logs, num_i, num_f, edges, dense, dense_col, hot, hot_start):  # pragma: no cover
    # Row tiles small enough to stay in cache; within a tile, one input column at a time (sequential
    # reads, a handful of streams), the tile zeroed first so one-hot blocks only write their ones.
    n = out.shape[0]
    tile = 256
    for lo in range(0, n, tile):
        hi = min(n, lo + tile)
        out[lo:hi, :] = np.float32(0.0)
        for k in range(num_i.shape[0]):
            xr, lr, vc, ic, bc = num_i[k, 0], num_i[k, 1], num_i[k, 2], num_i[k, 3], num_i[k, 4]
            e0, ne = num_i[k, 5], num_i[k, 6]
            impute, g_impute, shift, divisor = num_f[k, 0], num_f[k, 1], num_f[k, 2], num_f[k, 3]
            for i in range(lo, hi):
                x = xs[xr, i]
                missing = not np.isfinite(x)
                xi = impute if missing else x
                g = (g_impute if missing else logs[lr, i]) if lr >= 0 else xi
                out[i, vc] = np.float32((g - shift) / divisor)
                if ic >= 0 and missing:
                    out[i, ic] = np.float32(1.0)
                if bc >= 0:
                    # searchsorted(edges, xi, side="right") on ascending edges: the edges <= xi
                    a, b = e0, e0 + ne
                    while a < b:
                        mid = (a + b) // 2
                        if edges[mid] <= xi:
                            a = mid + 1
                        else:
                            b = mid
                    out[i, bc] = np.float32(a - e0)
        for k in range(dense.shape[0]):
            c = dense_col[k]
            for i in range(lo, hi):
                out[i, c] = np.float32(dense[k, i])
        for k in range(hot.shape[0]):
            s = hot_start[k]
            for i in range(lo, hi):
                out[i, s + hot[k, i]] = np.float32(1.0)


class Scratch:
    """Reusable work arrays for :func:`transform` across chunks of one scoring run.

    Fresh large arrays are zero pages until first written, and on a virtual machine the page faults of
    filling a new chunk's arrays can cost more than the arithmetic; the same arrays, reused, do not fault.
    """

    def __init__(self) -> None:
        self._flat: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        size = int(np.prod(shape))
        flat = self._flat.get(name)
        if flat is None or flat.dtype != np.dtype(dtype) or flat.size < size:
            flat = self._flat[name] = np.empty(size, dtype=dtype)
        return flat[:size].reshape(shape)


def transform(
    spec: Mapping[str, Any],
    columns: Mapping[str, Any],
    *,
    out: np.ndarray | None = None,
    scratch: Scratch | None = None,
) -> np.ndarray:
    """:func:`pipelines.edge.featurespec.transform` (same arguments, same float32 matrix, bit for bit).

    ``out``: a C-contiguous float32 array of rows x features to fill (else a new one); ``scratch``: work
    arrays to reuse between calls (see :class:`Scratch`).
    """
    n = fs.check_columns(spec, columns)
    names = spec["feature_names"]
    fs.check_width(spec)
    scratch = scratch or Scratch()
    numeric = [op for op in spec["transforms"] if op["op"] == "numeric" and _sorted(op.get("bins"))]
    n_log = sum(op["scale"] == "log" for op in numeric)
    xs = scratch.get("xs", (len(numeric), n), np.float64)
    logs = scratch.get("logs", (n_log, n), np.float64)
    num_i = np.zeros((len(numeric), _N_INT), dtype=np.int64)
    num_f = np.zeros((len(numeric), _N_FLOAT), dtype=np.float64)
    edges: list[float] = []
    dense: list[tuple[int, np.ndarray]] = []
    hot: list[tuple[int, fs.Onehot]] = []
    at = 0
    k = j = 0
    for op in spec["transforms"]:
        if op["op"] != "numeric" or not _sorted(op.get("bins")):
            block = fs.apply_op(op, columns)
            if isinstance(block, fs.Onehot):
                hot.append((at, block))
                at += block.width
            else:
                dense += [(at + c, col) for c, col in enumerate(block)]
                at += len(block)
            continue
        col = columns[op["column"]]
        # a float64 column goes in as it is: the kernel treats every non-finite value as missing, as
        # as_float (which maps them to NaN) and the reference do
        is_f64 = isinstance(col, np.ndarray) and col.dtype == np.float64 and col.ndim == 1
        xs[k] = col if is_f64 else fs.as_float(col)
        impute = float(op["impute"])
        num_i[k] = [k, -1, at, -1, -1, len(edges), 0]
        g_impute = impute
        if op["scale"] == "log":
            # numpy's own log1p on the column (NaN stays NaN: the kernel takes g(impute) for those)
            np.maximum(xs[k], 0.0, out=logs[j])
            np.log1p(logs[j], out=logs[j])
            num_i[k, 1] = j
            g_impute = float(np.log1p(np.maximum(np.array([impute]), 0.0))[0])
            j += 1
        width = 1
        if op.get("indicator"):
            num_i[k, 3] = at + width
            width += 1
        if op.get("bins") is not None:
            num_i[k, 4], num_i[k, 6] = at + width, len(op["bins"])
            edges += [float(b) for b in op["bins"]]
            width += 1
        num_f[k] = [impute, g_impute, float(op["shift"]), float(op["divisor"])]
        at += width
        k += 1
    dense_rows = scratch.get("dense", (len(dense), n), np.float64)
    for r, (_, col) in enumerate(dense):
        dense_rows[r] = col
    hot_rows = scratch.get("hot", (len(hot), n), np.int64)
    for r, (_, block) in enumerate(hot):
        hot_rows[r] = block.index
    shape = (n, len(names))
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"transform: out must be a C-contiguous float32 array of shape {shape}")
    _fill(
        out, xs, logs, num_i, num_f, np.asarray(edges, dtype=np.float64), dense_rows,
        np.asarray([c for c, _ in dense], dtype=np.int64), hot_rows,
        np.asarray([a for a, _ in hot], dtype=np.int64),
    )  # fmt: skip
    return out


def _sorted(bins: Any) -> bool:
    """Bins the kernel's binary search gives numpy's answer for (ascending, no NaN); others go to numpy."""
    if bins is None:
        return True
    b = np.asarray(bins, dtype=np.float64)
    return bool(np.all(np.isfinite(b)) and np.all(b[1:] >= b[:-1]))


@njit(nogil=True, cache=True)
def _windows(ks, gs, ts, vs, has_value, spans, rows_s, out):  # pragma: no cover
    # everything read sequentially in (entity, time) order; each output row written where it belongs
    n = ks.shape[0]
    nw = spans.shape[0]
    csum = np.empty(n + 1, dtype=np.float64)
    cnum = np.empty(n + 1, dtype=np.int64)
    csum[0], cnum[0] = 0.0, 0
    j = np.zeros(nw, dtype=np.int64)
    h = 0
    for i in range(n):
        if i == 0 or ks[i] != ks[i - 1]:
            h = i  # the first event of this (entity, time): same-time events are excluded
        for w in range(nw):
            q = ks[i] - spans[w]
            while ks[j[w]] < q:
                j[w] += 1
        if has_value:
            present = not np.isnan(vs[i])
            term = vs[i] if present else 0.0
            csum[i + 1] = term if i == 0 else csum[i] + term  # np.cumsum: in[0], then out[i-1] + in[i]
            cnum[i + 1] = cnum[i] + (1 if present else 0)
        r = rows_s[i]
        if r < 0:
            continue
        c = 0
        for w in range(nw):
            a = j[w]
            out[r, c] = np.float64(h - a)
            c += 1
            if has_value:
                total = csum[h] - csum[a]
                k = cnum[h] - cnum[a]
                out[r, c] = total
                out[r, c + 1] = total / max(k, 1) if k > 0 else np.nan
                c += 2
        prev = h - 1
        if prev >= 0 and gs[prev] == gs[i]:
            out[r, c] = (ts[i] - ts[prev]) / 1e6
        else:
            out[r, c] = np.nan


def entity_windows(
    ks: np.ndarray,
    order: np.ndarray,
    codes: np.ndarray,
    t: np.ndarray,
    v: np.ndarray | None,
    spans_us: list[int],
    row_of: np.ndarray,
    rows: int,
) -> np.ndarray:
    """Per output row: for each window ``[count, sum, mean]`` (``[count]`` without a value), then the
    seconds since the entity's previous event (a ``rows x columns`` array; a column is ``out[:, c]``).

    ``order`` sorts the events by the (entity, time) key ``ks = key[order]``, ascending, with a window's
    start at ``key - span`` (the direct key of :func:`pipelines.features.build.aggregate_arrays`); ``codes``,
    ``t`` and ``v`` are the entity codes, times and values in event order; ``row_of[e]`` is event ``e``'s
    output row (negative: history only, counted but not output).
    """
    nw = len(spans_us)
    has_value = v is not None
    out = np.empty((rows, nw * (3 if has_value else 1) + 1), dtype=np.float64)
    # the gathers into sorted order in numpy (many independent cache misses in flight), the sweep sequential
    vs = np.asarray(v, dtype=np.float64)[order] if has_value else np.zeros(0)
    rows_s = np.asarray(row_of, dtype=np.int64)[order]
    _windows(
        np.ascontiguousarray(ks, dtype=np.int64), np.asarray(codes, dtype=np.int64)[order],
        np.asarray(t, dtype=np.int64)[order], vs, has_value, np.asarray(spans_us, dtype=np.int64),
        rows_s, out,
    )  # fmt: skip
    return out


@njit(nogil=True, cache=True)
def _by_code(codes, by_time, space):  # pragma: no cover
    # stable counting sort of the time-ordered events by entity code
    start = np.zeros(space + 1, dtype=np.int64)
    for i in range(codes.shape[0]):
        start[codes[i] + 1] += 1
    for c in range(space):
        start[c + 1] += start[c]
    order = np.empty(by_time.shape[0], dtype=np.int64)
    for i in range(by_time.shape[0]):
        e = by_time[i]
        c = codes[e]
        order[start[c]] = e
        start[c] += 1
    return order


def entity_time_order(codes: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``np.argsort(codes * span + t, kind="stable")`` (events by entity, then time, ties by position) for
    codes in ``[0, n)``: a stable sort by time (near-linear on the nearly time-ordered events a lake
    holds), then a stable counting sort by entity."""
    by_time = np.argsort(t, kind="stable")
    codes = np.asarray(codes, dtype=np.int64)
    if len(codes) and int(codes.max()) >= 4 * len(codes) + 1024:  # sparse codes: make them dense
        codes = np.unique(codes, return_inverse=True)[1].ravel()
    return _by_code(codes, by_time, int(codes.max(initial=-1)) + 1)
