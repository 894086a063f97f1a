"""Labeling stage: natural labels, weak labels from a label model, hand labels, an active-learning queue.

Every label keeps its lineage in ``label_source``:

* ``natural``: the label had matured by the sampling cutoff (the sampling stage nulls the others).
* ``weak``: train rows still unlabelled get the label model's vote over the enabled labeling functions
  (pipelines/labeling/labeling_functions.py), with ``label_weight = labeling.weak_weight``. Valid and test never
  get weak labels, so evaluation stays honest.
* ``hand``: CSV files in the hand-labels folder (format in data/hand_labels/README.md), validated row by
  row; they take precedence over natural and weak labels. Rejected rows are written with a reason.

The label model is a Dawid–Skene model fitted by EM (numpy, no torch): each LF has a confusion matrix
P(vote | true class) in which abstaining is a vote of its own, so an LF that only fires on fraud is
evidence when it stays silent too. The fallback ``weighted_vote`` weighs LFs by their accuracy on gold.
Gold = the train split's matured natural labels (optionally a random subset, ``labeling.gold_size``).

Accuracy for the acceptance check is *balanced accuracy on every gold row* (mean recall over classes;
plain accuracy rewards "always negative" at a 1.7% positive rate). A single LF is scored as a classifier
that predicts gold's majority class where it abstains, just as the label model falls back to its prior
where no LF fires. Accuracy on each LF's own coverage is reported beside it.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core import storage
from pipelines.core.config import LabelingConfig, SchemaConfig
from pipelines.core.errors import InputError
from pipelines.labeling.labeling_functions import (
    ABSTAIN,
    MODEL_MAX_ROWS,
    REGISTRY,
    apply_lfs,
    build_context,
    capped_rows,
    design_matrix,
)

__all__ = [
    "HAND_COLUMNS",
    "LabelModel",
    "active_learning_scores",
    "classification_metrics",
    "fit_dawid_skene",
    "fit_weighted_vote",
    "lf_summary",
    "read_hand_labels",
    "run_labeling",
    "validate_hand_labels",
]

log = logging.getLogger(__name__)

HAND_COLUMNS = ("event_id", "label", "labeler", "labeled_at")
SPLITS = ("train", "valid", "test")
SOURCES = ("natural", "weak", "hand")


# --------------------------------------------------------------------------- label models (pure)


@dataclass(frozen=True)
class LabelModel:
    """Class prior and, per LF, P(vote symbol | true class); symbol 0 = abstain, k+1 = class k."""

    kind: str
    classes: np.ndarray
    prior: np.ndarray  # (K,)
    log_weights: np.ndarray  # (m, K, K+1): log P(symbol | class), or vote scores for weighted_vote
    n_iter: int = 0
    converged: bool = True

    def predict_proba(self, votes: np.ndarray) -> np.ndarray:
        sym = _symbols(votes, self.classes)
        m = sym.shape[1]
        logp = np.tile(np.log(self.prior), (len(sym), 1))
        for j in range(m):
            logp += self.log_weights[j][:, sym[:, j]].T
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, votes: np.ndarray) -> np.ndarray:
        return self.classes[np.argmax(self.predict_proba(votes), axis=1)]


def _symbols(votes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    votes = np.asarray(votes, dtype=np.int64)
    if votes.ndim != 2:
        raise InputError(f"votes must be a (rows, LFs) matrix, got shape {votes.shape}")
    sym = np.zeros(votes.shape, dtype=np.int64)
    for k, c in enumerate(classes):
        sym[votes == c] = k + 1
    bad = (sym == 0) & (votes != ABSTAIN)
    if bad.any():
        raise InputError(
            f"votes contain {sorted(set(votes[bad].tolist()))}; expected {list(classes)} or {ABSTAIN}"
        )
    return sym


def fit_dawid_skene(
    votes: np.ndarray,
    *,
    classes: list[int] | np.ndarray = (0, 1),  # type: ignore[assignment]
    class_prior: np.ndarray | list[float] | None = None,
    max_iter: int = 200,
    tol: float = 1e-6,
    smoothing: float = 1.0,
) -> LabelModel:
    """Dawid–Skene (1979) by EM on an LF vote matrix; abstain is modelled as a vote symbol of its own.

    Rows with the same votes are collapsed first, so a fit costs O(distinct vote patterns x LFs) per
    iteration. ``class_prior`` fixes P(class) (e.g. from gold); None estimates it. ``smoothing`` is a
    Dirichlet pseudo-count on every confusion cell. Initialised from the majority vote.
    """
    classes = np.asarray(classes)
    K = len(classes)
    sym = _symbols(votes, classes)
    n, m = sym.shape
    if n == 0:
        raise InputError("fit_dawid_skene: no rows to fit")
    patterns, inverse, counts = np.unique(sym, axis=0, return_inverse=True, return_counts=True)
    counts = counts.astype(float)
    fixed = class_prior is not None
    prior = np.asarray(class_prior, dtype=float) if fixed else np.full(K, 1.0 / K)
    if prior.shape != (K,) or (prior <= 0).any():
        raise InputError(
            f"class_prior {class_prior!r} must give a positive probability to each of {list(classes)}"
        )
    prior = prior / prior.sum()
    # majority-vote initialisation; rows where every LF abstains start at the prior
    q = np.zeros((len(patterns), K))
    for k in range(K):
        q[:, k] = (patterns == k + 1).sum(axis=1)
    none = q.sum(axis=1) == 0
    q[none] = prior
    q = q / q.sum(axis=1, keepdims=True)
    onehot = np.stack([(patterns == s) for s in range(K + 1)], axis=2).astype(float)  # (P, m, K+1)
    prev_ll = -np.inf
    converged = False
    n_iter = 0
    log_conf = np.zeros((m, K, K + 1))
    for it in range(1, max_iter + 1):
        n_iter = it
        wq = q * counts[:, None]  # (P, K)
        conf = np.einsum("pk,pjs->jks", wq, onehot) + smoothing
        conf /= conf.sum(axis=2, keepdims=True)
        log_conf = np.log(conf)
        if not fixed:
            prior = (wq.sum(axis=0) + smoothing) / (counts.sum() + K * smoothing)
        logp = np.log(prior)[None, :] + np.einsum("pjs,jks->pk", onehot, log_conf)
        mx = logp.max(axis=1, keepdims=True)
        ll = float(((mx[:, 0] + np.log(np.exp(logp - mx).sum(axis=1))) * counts).sum())
        q = np.exp(logp - mx)
        q /= q.sum(axis=1, keepdims=True)
        if abs(ll - prev_ll) <= tol * max(1.0, abs(ll)):
            converged = True
            break
        prev_ll = ll
    del inverse
    return LabelModel("dawid_skene", classes, prior, log_conf, n_iter=n_iter, converged=converged)


def fit_weighted_vote(
    votes: np.ndarray,
    y: np.ndarray,
    *,
    classes: list[int] | np.ndarray = (0, 1),  # type: ignore[assignment]
) -> LabelModel:
    """Accuracy-weighted vote: each LF's vote counts log(a / (1 - a)), a its smoothed accuracy on gold
    where it fires (Laplace: (correct + 1) / (fired + 2)). Abstaining counts nothing; flat prior."""
    classes = np.asarray(classes)
    K = len(classes)
    sym = _symbols(votes, classes)
    y = np.asarray(y)
    m = sym.shape[1]
    w = np.zeros((m, K, K + 1))
    for j in range(m):
        fired = sym[:, j] > 0
        correct = (classes[np.maximum(sym[fired, j] - 1, 0)] == y[fired]).sum()
        a = (correct + 1.0) / (fired.sum() + 2.0)
        weight = float(np.log(a / (1 - a)))
        for k in range(K):
            w[j, k, k + 1] = weight  # a vote for class k adds the LF's weight to class k's score
    return LabelModel("weighted_vote", classes, np.full(K, 1.0 / K), w)


# --------------------------------------------------------------------------- metrics and LF report (pure)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, *, positive: int = 1) -> dict[str, Any]:
    """Accuracy, balanced accuracy (mean recall over the classes present) and positive-class P/R/F1."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = len(y_true)
    if n == 0:
        return {
            "n": 0,
            "accuracy": None,
            "balanced_accuracy": None,
            "precision": None,
            "recall": None,
            "f1": None,
        }
    recalls = [float((y_pred[y_true == c] == c).mean()) for c in np.unique(y_true)]
    tp = int(((y_pred == positive) & (y_true == positive)).sum())
    pp, ap = int((y_pred == positive).sum()), int((y_true == positive).sum())
    prec = tp / pp if pp else 0.0
    rec = tp / ap if ap else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"n": n, "accuracy": round(float((y_true == y_pred).mean()), 6),
            "balanced_accuracy": round(float(np.mean(recalls)), 6), "precision": round(prec, 6),
            "recall": round(rec, 6), "f1": round(f1, 6)}  # fmt: skip


def lf_summary(
    votes: np.ndarray,
    names: list[str],
    *,
    gold_rows: np.ndarray,
    gold_y: np.ndarray,
    fallback: int,
    model_pred: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Per LF: coverage, overlap, conflicts (over all rows), accuracy on gold where it fires, and its
    metrics as a classifier on all gold rows (abstain -> ``fallback``). With ``model_pred`` (label
    model predictions for gold rows), also the label model's accuracy on the LF's own coverage."""
    fired = votes != ABSTAIN
    n = max(len(votes), 1)
    out = []
    for j, name in enumerate(names):
        others = np.delete(fired, j, axis=1)
        other_votes = np.delete(votes, j, axis=1)
        overlap = fired[:, j] & others.any(axis=1)
        conflict = fired[:, j] & ((other_votes != votes[:, [j]]) & others).any(axis=1)
        g = votes[gold_rows, j]
        gf = g != ABSTAIN
        row: dict[str, Any] = {
            "name": name,
            "description": REGISTRY[name].description if name in REGISTRY else "",
            "polarity": sorted(set(np.unique(votes[fired[:, j], j]).tolist())),
            "coverage": round(float(fired[:, j].sum() / n), 6),
            "overlap": round(float(overlap.sum() / n), 6),
            "conflict": round(float(conflict.sum() / n), 6),
            "gold_fired": int(gf.sum()),
            "accuracy_on_coverage": round(float((g[gf] == gold_y[gf]).mean()), 6) if gf.any() else None,
            "gold": classification_metrics(gold_y, np.where(gf, g, fallback)),
        }
        if model_pred is not None:
            row["label_model_accuracy_on_coverage"] = (
                round(float((model_pred[gf] == gold_y[gf]).mean()), 6) if gf.any() else None
            )
        out.append(row)
    return out


# --------------------------------------------------------------------------- hand labels


def read_hand_labels(folder: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """All ``*.csv`` files of the folder (sorted) as strings, with ``source_file`` and ``source_row``
    (1-based data row). Returns (rows, unreadable-file rejects)."""
    frames, unreadable = [], []
    for path in storage.list_files(folder, "*.csv"):
        name = Path(path).name
        try:
            df = pd.read_csv(io.BytesIO(storage.read_bytes(path)), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            unreadable.append(
                {"source_file": name, "source_row": 0, "reason": "unreadable_file", "detail": str(err)[:200]}
            )
            continue
        df.columns = [str(c).strip() for c in df.columns]
        df["source_file"] = name
        df["source_row"] = np.arange(1, len(df) + 1)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=[*HAND_COLUMNS, "source_file", "source_row"]), unreadable
    return pd.concat(frames, ignore_index=True), unreadable


def validate_hand_labels(
    raw: pd.DataFrame, *, known_ids: set[str], label_values: list[int]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check each hand-label row; returns (accepted: one per event_id, the latest, rejects with reason).

    Reasons: missing_column:<c>, missing_event_id, unknown_event_id (not in this run's training data),
    missing_label / bad_label, missing_labeler, bad_labeled_at, superseded (an older label of an event
    labelled again later). rows read == accepted + rejected, always.
    """
    raw = raw.copy()
    for c in HAND_COLUMNS:
        if c not in raw.columns:
            raw[c] = None
    reason = pd.Series("", index=raw.index, dtype=object)
    missing_col = raw[list(HAND_COLUMNS)].isna()  # a column absent from its file
    for c in HAND_COLUMNS:
        reason[(reason == "") & missing_col[c]] = f"missing_column:{c}"
    s = {c: raw[c].fillna("").astype(str).str.strip() for c in HAND_COLUMNS}
    reason[(reason == "") & (s["event_id"] == "")] = "missing_event_id"
    reason[(reason == "") & ~s["event_id"].isin(known_ids)] = "unknown_event_id"
    reason[(reason == "") & (s["label"] == "")] = "missing_label"
    allowed = {str(v) for v in label_values}
    reason[(reason == "") & ~s["label"].isin(allowed)] = "bad_label"
    reason[(reason == "") & (s["labeler"] == "")] = "missing_labeler"
    labeled_at = pd.to_datetime(s["labeled_at"], utc=True, errors="coerce", format="ISO8601")
    reason[(reason == "") & labeled_at.isna()] = "bad_labeled_at"
    ok = reason == ""
    acc = pd.DataFrame({"event_id": s["event_id"], "label": pd.to_numeric(s["label"].where(ok), errors="coerce"),
                        "labeler": s["labeler"], "labeled_at": labeled_at,
                        "source_file": raw["source_file"], "source_row": raw["source_row"]})[ok]  # fmt: skip
    acc = acc.sort_values(["event_id", "labeled_at", "source_file", "source_row"], kind="stable")
    latest = ~acc.duplicated("event_id", keep="last")
    reason[acc.index[~latest]] = "superseded"
    accepted = acc[latest].astype({"label": "int64"}).reset_index(drop=True)
    rejects = raw.loc[reason != "", ["source_file", "source_row", *HAND_COLUMNS]].astype(str)
    rejects.insert(2, "reason", reason[reason != ""])
    return accepted, rejects.reset_index(drop=True)


# --------------------------------------------------------------------------- active learning (pure)


def _make_model(kind: str, seed: int) -> Any:
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(class_weight="balanced", solver="liblinear", max_iter=1000)
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=100, class_weight="balanced", random_state=seed)
    if kind == "tree":
        from sklearn.tree import DecisionTreeClassifier

        return DecisionTreeClassifier(max_depth=6, class_weight="balanced", random_state=seed)
    raise InputError(f"unknown committee model {kind!r}; use logreg, hgb or tree")


def active_learning_scores(
    x_train: np.ndarray, y_train: np.ndarray, x_pool: np.ndarray, *, committee: list[str], seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """How useful a label would be, per pool row: uncertainty sampling with one model (1 - margin of the
    top two classes), query-by-committee with several (mean KL divergence of each member's class
    distribution from the committee's mean). Returns (scores, mean class probabilities, strategy)."""
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise InputError("active learning needs labelled rows of at least two classes")
    keep = capped_rows(y_train, max_rows=MODEL_MAX_ROWS, rng=np.random.default_rng([seed, 0xA1]))
    probs = []
    for kind in committee:
        model = _make_model(kind, seed).fit(x_train[keep], y_train[keep])
        probs.append(model.predict_proba(x_pool))
    p = np.stack(probs)  # (M, n, K)
    mean = p.mean(axis=0)
    if len(committee) == 1:
        top2 = np.sort(mean, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0]), mean, "uncertainty"
    eps = 1e-12
    kl = (p * (np.log(p + eps) - np.log(mean[None] + eps))).sum(axis=2).mean(axis=0)
    return kl, mean, "query_by_committee"


# --------------------------------------------------------------------------- I/O


def _label_array(values: np.ndarray, mask_null: np.ndarray) -> pa.Array:
    return pa.array(np.where(mask_null, 0, values).astype(np.int8), type=pa.int8(), mask=mask_null)


def _render_html(report: dict[str, Any]) -> str:
    def cell(v: Any) -> str:
        return html.escape("" if v is None else str(v))

    rows = "".join(
        f"<tr><td>{cell(r['name'])}</td><td>{cell(r['polarity'])}</td><td>{cell(r['coverage'])}</td>"
        f"<td>{cell(r['overlap'])}</td><td>{cell(r['conflict'])}</td><td>{cell(r['accuracy_on_coverage'])}</td>"
        f"<td>{cell(r.get('label_model_accuracy_on_coverage'))}</td><td>{cell(r['gold']['balanced_accuracy'])}</td></tr>"
        for r in report["labeling_functions"]
    )
    lm = report["label_model"]
    srcs = "".join(
        f"<tr><td>{cell(s)}</td>"
        + "".join(f"<td>{cell(c.get(k, 0))}</td>" for k in (*SOURCES, "unlabelled_dropped"))
        + "</tr>"
        for s, c in report["label_sources"].items()
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Loopline labeling report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head><body>
<h1>Labeling report</h1>
<p>Gold: {cell(report["gold"]["rows"])} matured natural train labels (positive rate {cell(report["gold"]["positive_rate"])}).
Accuracy metric: {cell(report["metric"])}.</p>
<p><b>Label model</b> ({cell(lm["kind"])}): balanced accuracy {cell(lm["gold"]["balanced_accuracy"])} vs best single LF
<b>{cell(report["best_lf"]["name"])}</b> {cell(report["best_lf"]["balanced_accuracy"])} &mdash;
acceptance {"passed" if report["acceptance"]["passed"] else "FAILED"}.</p>
<table><tr><th>labeling function</th><th>votes</th><th>coverage</th><th>overlap</th><th>conflict</th>
<th>accuracy on coverage (gold)</th><th>label model, same rows</th><th>balanced accuracy (all gold)</th></tr>{rows}</table>
<h2>Labels by source</h2><table><tr><th>split</th><th>natural</th><th>weak</th><th>hand</th><th>left unlabelled</th></tr>{srcs}</table>
<p>Hand labels: {cell(report["hand_labels"]["accepted"])} accepted, {cell(report["hand_labels"]["rejected"])} rejected
{cell(report["hand_labels"]["rejected_by_reason"])}. Active-learning queue: {cell(report["active_learning"]["queued"])} rows
({cell(report["active_learning"]["strategy"])}).</p></body></html>
"""


def run_labeling(
    *,
    training: str,
    hand_labels: str,
    out: str,
    reports: str,
    cfg: LabelingConfig,
    schema: SchemaConfig,
    seed: int,
) -> dict[str, Any]:
    """Write ``out/{train,valid,test}.parquet`` (+ label_source, label_weight), ``out/al_queue.csv``,
    ``out/hand_labels_ingested.csv`` (accepted hand labels with labeler, time and file) and the reports."""
    sampling_json = storage.join(training, "sampling.json")
    if not storage.exists(sampling_json):
        raise InputError(f"labeling: {sampling_json} not found; run `loopline sample` first")
    cutoff = dt.datetime.fromisoformat(storage.read_json(sampling_json)["windows"]["cutoff"])
    tables = {name: storage.read_parquet(storage.join(training, f"{name}.parquet")) for name in SPLITS}
    unl_loc = storage.join(training, "unlabelled.parquet")
    pool_tbl = (
        storage.read_parquet(unl_loc) if storage.exists(unl_loc) else tables["train"].schema.empty_table()
    )
    classes = np.asarray(sorted(schema.label_values))
    positive, negative = int(classes.max()), int(classes.min())
    rng = np.random.default_rng([seed, 0x1ABE])

    # hand labels
    known = set()
    for t in [*tables.values(), pool_tbl]:
        known.update(t.column("event_id").to_pylist())
    raw, unreadable = read_hand_labels(hand_labels)
    hand, rejects = validate_hand_labels(raw, known_ids=known, label_values=list(classes))
    if unreadable:
        rejects = pd.concat([rejects, pd.DataFrame(unreadable)], ignore_index=True)
    hand_by_id = hand.set_index("event_id")
    storage.write_bytes(storage.join(reports, "hand_label_rejects.csv"), rejects.to_csv(index=False).encode())
    ingested = hand.assign(labeled_at=hand["labeled_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    storage.write_bytes(storage.join(out, "hand_labels_ingested.csv"), ingested.to_csv(index=False).encode())
    if len(rejects):
        log.warning("labeling: %d hand-label row(s) rejected (%s); see %s", len(rejects),
                    rejects["reason"].value_counts().to_dict(), storage.join(reports, "hand_label_rejects.csv"))  # fmt: skip

    # weak supervision over the train split
    train_df = tables["train"].to_pandas()
    natural = ~train_df["label"].isna().to_numpy()
    gold_rows = np.flatnonzero(natural)
    if cfg.gold_size is not None and cfg.gold_size < len(gold_rows):
        gold_rows = np.sort(rng.choice(gold_rows, size=cfg.gold_size, replace=False))
    if len(gold_rows) == 0:
        raise InputError(
            "labeling: the train split has no matured natural labels to use as gold; check sampling windows"
        )
    gold_y = train_df["label"].to_numpy()[gold_rows].astype(np.int64)
    ctx = build_context(
        train_df, options=cfg.options, schema=schema, seed=seed, gold_pos=gold_rows, gold_y=gold_y
    )
    votes = apply_lfs(train_df, list(cfg.functions), ctx)
    gold_prior = np.array([(gold_y == c).mean() for c in classes]).clip(1e-6)
    fallback = int(classes[np.argmax(gold_prior)])
    ds = fit_dawid_skene(
        votes, classes=classes, class_prior=gold_prior, max_iter=cfg.em_max_iter, tol=cfg.em_tol
    )
    wv = fit_weighted_vote(votes[gold_rows], gold_y, classes=classes)
    models = {"dawid_skene": ds, "weighted_vote": wv}
    chosen = models[cfg.label_model]
    proba = chosen.predict_proba(votes)
    pred = classes[np.argmax(proba, axis=1)]
    n_votes = (votes != ABSTAIN).sum(axis=1)
    emit = (n_votes >= cfg.min_votes) & (proba.max(axis=1) >= cfg.min_confidence)
    model_metrics: dict[str, dict[str, Any]] = {}
    for k, mdl in models.items():
        gp = mdl.predict(votes[gold_rows])
        model_metrics[k] = {"gold": classification_metrics(gold_y, gp, positive=positive)}
        if k == cfg.label_model:
            ge = emit[gold_rows]
            model_metrics[k]["accuracy_on_emitted_gold"] = (
                round(float((gp[ge] == gold_y[ge]).mean()), 6) if ge.any() else None
            )
            model_metrics[k]["emitted_gold_share"] = round(float(ge.mean()), 6)
    lfs = lf_summary(votes, list(cfg.functions), gold_rows=gold_rows, gold_y=gold_y, fallback=fallback,
                     model_pred=pred[gold_rows])  # fmt: skip
    best = max(lfs, key=lambda r: r["gold"]["balanced_accuracy"] or 0.0)
    lm_bacc = model_metrics[cfg.label_model]["gold"]["balanced_accuracy"]
    passed = lm_bacc is not None and lm_bacc >= best["gold"]["balanced_accuracy"]
    if not passed:
        log.warning("labeling: label model balanced accuracy %s is below the best LF %s (%s)", lm_bacc,
                    best["name"], best["gold"]["balanced_accuracy"])  # fmt: skip

    # assemble the labelled splits: hand > natural > weak (train only)
    sources: dict[str, dict[str, int]] = {}
    out_schema = None
    for name in SPLITS:
        t = tables[name]
        n = t.num_rows
        label = t.column("label").to_numpy(zero_copy_only=False)
        label = np.where(pd.isna(label), -1, label).astype(np.int64)
        ltime = (
            t.column("label_time").to_pandas().to_numpy(dtype="datetime64[us]", na_value=np.datetime64("NaT"))
        )
        src = np.where(label >= 0, "natural", "").astype(object)
        weight = np.where(label >= 0, 1.0, 0.0)
        if name == "train":
            wk = (label < 0) & emit
            label = np.where(wk, pred, label)
            src[wk] = "weak"
            weight[wk] = cfg.weak_weight
            ltime[wk] = np.datetime64(cutoff.replace(tzinfo=None), "us")
        ids = pd.Series(t.column("event_id").to_pylist())
        hit = ids.isin(hand_by_id.index).to_numpy()
        overrides = 0
        if hit.any():
            h = hand_by_id.loc[ids[hit]]
            hl = h["label"].to_numpy(np.int64)
            overrides = int(((label[hit] >= 0) & (label[hit] != hl)).sum())
            label[hit] = hl
            src[hit] = "hand"
            weight[hit] = cfg.hand_weight
            ltime[hit] = h["labeled_at"].dt.tz_convert(None).to_numpy(dtype="datetime64[us]")
        keep = label >= 0
        sources[name] = {s: int((src == s).sum()) for s in SOURCES}
        sources[name]["unlabelled_dropped"] = int((~keep).sum())
        sources[name]["hand_overrides_other_label"] = overrides
        t = t.set_column(
            t.schema.get_field_index("label"), t.schema.field("label"), _label_array(label, label < 0)
        )
        t = t.set_column(t.schema.get_field_index("label_time"), t.schema.field("label_time"),
                         pa.array(ltime, pa.timestamp("us")).cast(t.schema.field("label_time").type))  # fmt: skip
        t = t.append_column(pa.field("label_source", pa.string()), pa.array(src.tolist(), pa.string()))
        t = t.append_column(pa.field("label_weight", pa.float64()), pa.array(weight, pa.float64()))
        t = t.filter(pa.array(keep))
        out_schema = out_schema or t.schema
        storage.write_parquet(storage.join(out, f"{name}.parquet"), t.cast(out_schema))
        del n

    # active learning: rank the rows nobody has labelled yet
    al = _active_learning_queue(tables["train"], pool_tbl, hand_by_id, cfg=cfg, schema=schema, seed=seed)
    storage.write_bytes(storage.join(out, "al_queue.csv"), al["frame"].to_csv(index=False).encode())

    reasons = rejects["reason"].value_counts().to_dict() if len(rejects) else {}
    report = {
        "metric": "balanced accuracy on every gold row (an LF predicts gold's majority class where it abstains)",
        "cutoff": cutoff.isoformat(),
        "gold": {"rows": len(gold_rows), "positive_rate": round(float((gold_y == positive).mean()), 6),
                 "source": "matured natural labels of the train split"},
        "functions": list(cfg.functions),
        "labeling_functions": lfs,
        "label_model": {"kind": cfg.label_model, **model_metrics[cfg.label_model],
                        "n_iter": chosen.n_iter, "converged": chosen.converged,
                        "prior": [round(float(v), 6) for v in chosen.prior]},
        "label_models": model_metrics,
        "best_lf": {"name": best["name"], **best["gold"]},
        "acceptance": {"passed": bool(passed), "rule": "label model balanced accuracy >= best single LF's",
                       "label_model": lm_bacc, "best_lf": best["gold"]["balanced_accuracy"]},
        "weak": {"train_unlabelled": int((~natural).sum()), "weak_labelled": sources["train"]["weak"],
                 "weak_positive": int(((~natural) & emit & (pred == positive)).sum()), "weak_weight": cfg.weak_weight,
                 "min_votes": cfg.min_votes, "min_confidence": cfg.min_confidence},
        "label_sources": sources,
        "hand_labels": {"files": int(raw["source_file"].nunique()) if len(raw) else 0, "rows_read": len(raw) + len(unreadable),
                        "accepted": len(hand), "rejected": len(rejects), "rejected_by_reason": reasons},
        "active_learning": {k: v for k, v in al.items() if k != "frame"},
    }  # fmt: skip
    del negative
    storage.write_json(storage.join(reports, "report.json"), report)
    storage.write_bytes(storage.join(reports, "report.html"), _render_html(report).encode())
    return report


def _active_learning_queue(
    train: pa.Table,
    pool: pa.Table,
    hand_by_id: pd.DataFrame,
    *,
    cfg: LabelingConfig,
    schema: SchemaConfig,
    seed: int,
) -> dict[str, Any]:
    cols = ["event_id", "label", "labeler", "labeled_at", "rank", "score", "p_positive", "strategy", "split"]
    empty = {"queued": 0, "pool_rows": 0, "strategy": None, "committee": list(cfg.al_committee),
             "frame": pd.DataFrame(columns=cols)}  # fmt: skip
    if cfg.al_queue_size == 0 or pool.num_rows == 0:
        return empty
    tr = train.to_pandas()
    tr = tr[~tr["label"].isna()]
    pl = pool.to_pandas()
    pl = pl[~pl["event_id"].isin(hand_by_id.index)]
    if len(pl) == 0 or tr["label"].nunique() < 2:
        return {**empty, "pool_rows": len(pl)}
    both = pd.concat([tr.drop(columns=["split"], errors="ignore"), pl.drop(columns=["split"], errors="ignore")],
                     ignore_index=True)  # fmt: skip
    ctx = build_context(both, options=cfg.options, schema=schema, seed=seed)
    x = design_matrix(both, ctx)
    x_tr, x_pl = x[: len(tr)], x[len(tr) :]
    scores, mean, strategy = active_learning_scores(x_tr, tr["label"].to_numpy(np.int64), x_pl,
                                                    committee=list(cfg.al_committee), seed=seed)  # fmt: skip
    top = np.argsort(-scores, kind="stable")[: cfg.al_queue_size]
    q = pl.iloc[top].reset_index(drop=True)
    feature_cols = [c.name for c in schema.columns if c.name in q.columns]
    frame = pd.DataFrame({"event_id": q["event_id"], "label": "", "labeler": "", "labeled_at": "",
                          "rank": np.arange(1, len(q) + 1), "score": np.round(scores[top], 6),
                          "p_positive": np.round(mean[top, -1], 6), "strategy": strategy, "split": q["split"],
                          "event_time": q["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")})  # fmt: skip
    frame = pd.concat([frame, q[feature_cols].reset_index(drop=True)], axis=1)
    return {"queued": len(frame), "pool_rows": len(pl), "strategy": strategy, "committee": list(cfg.al_committee),
            "by_split": frame["split"].value_counts().to_dict(), "frame": frame}  # fmt: skip
