"""Quantize stage: TFLite variants of the Keras model, each gated on parity and per-slice fairness.

``loopline quantize`` converts the candidate's Keras model into four TFLite variants:

- ``float32``: no optimization (the reference TFLite model);
- ``float16``: weights stored as float16 (dequantized to float32 at load);
- ``dynamic_range``: int8 weights, float activations (``Optimize.DEFAULT`` without a dataset);
- ``int8``: full-integer, int8 input and output, activations calibrated on a representative dataset drawn
  from the train split stratified by label (``quantize.representative_rows``; the rare class gets at
  least a tenth of the rows so that its activation range is calibrated too).

Every variant is converted from the model's *logit* (its ``logit`` layer) with the output named ``logit``;
the edge runtime applies the sigmoid (:mod:`pipelines.edge.runtime`). An int8 output then quantizes log-odds,
which keeps the ranking of the many low fraud scores that a probability output would collapse onto its
lowest level.

**Gate.** On the labelled test rows each variant is scored by the edge runtime (the same code that runs
on the device) and compared with the float Keras model: ROC-AUC and PR-AUC drop, mean and max absolute
score difference, decision agreement at the operating threshold, and per slice (the evaluation's slice
columns): ROC-AUC drop where the slice is big enough, mean |difference| and agreement. Thresholds live in
params ``quantize.gate``. A variant that fails is not published (its file is not written to the output
folder) and ``quantize.json`` records why; with ``--registry`` the published files, quantize.json and a
``quantization`` section of the model card go to the registered version.

**The edge model is judged too.** The registry's gate judges the primary (server) model; the variants are
the Keras model, so with ``quantize.require_behavioural`` (the default) none is published unless the Keras
model passed the behavioural tests of the evaluation (read from the registered version's
``evaluation.json``, or ``--evaluation``). A failure is a blocking reason of every variant, in
``quantize.json``, the model card and the run report.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import metrics as M
from pipelines.core import storage
from pipelines.core.config import EvaluateConfig, QuantizeConfig, QuantizeGateConfig, params_file
from pipelines.core.errors import InputError
from pipelines.edge.featurespec import dumps_spec
from pipelines.edge.runtime import EdgeModel
from pipelines.evaluation.evaluate import json_safe, labelled_rows
from pipelines.registry.store import ALIASES, Registry, RegistryError, sha256_bytes
from pipelines.training import models
from pipelines.training.models import quiet_tensorflow

__all__ = [
    "VARIANTS",
    "SliceSettings",
    "attach_to_registry",
    "card_section",
    "convert_variants",
    "edge_behaviour",
    "edge_scores",
    "logit_model",
    "operating_threshold",
    "parity_report",
    "representative_sample",
    "run_quantize",
]

log = logging.getLogger(__name__)

VARIANTS = ("float32", "float16", "dynamic_range", "int8")
REPORT_FILE = "quantize.json"
TFLITE_DIR = "tflite"


# --------------------------------------------------------------------------- representative dataset (pure)


def representative_sample(
    x: np.ndarray, y: np.ndarray, *, rows: int, seed: int, min_share: float = 0.1
) -> np.ndarray:
    """Row indices of a sample stratified by label: proportional allocation, every class at least
    ``min_share`` of the sample (or all its rows), shuffled. ``y`` may hold NaN (its own stratum)."""
    if rows < 1:
        raise InputError(f"representative rows = {rows}: expected at least 1")
    n = x.shape[0]
    if n == 0:
        raise InputError("the train split is empty: no representative dataset for int8 calibration")
    rng = np.random.default_rng(seed)
    keys = np.where(np.isnan(y), -1.0, y) if y.dtype.kind == "f" else y.astype(np.float64)
    classes, counts = np.unique(keys, return_counts=True)
    take = min(rows, n)
    alloc = {c: max(round(take * k / n), min(int(k), math.ceil(take * min_share))) for c, k in
             zip(classes, counts, strict=True)}  # fmt: skip
    while sum(alloc.values()) > take:  # trim the largest stratum back to the budget
        big = max(alloc, key=lambda c: alloc[c])
        alloc[big] -= 1
    picked = [
        rng.choice(np.flatnonzero(keys == c), size=min(a, int((keys == c).sum())), replace=False)
        for c, a in alloc.items()
    ]
    out = np.concatenate(picked)
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------- conversion


def logit_model(model: Any) -> tuple[Any, str]:
    """(Keras model whose single output is named ``logit``, ``"logit"``) when the model has a ``logit``
    layer (pipelines.training.train's MLP); else (the model itself, ``"probability"``)."""
    import keras

    try:
        layer = model.get_layer("logit")
    except ValueError:
        return model, "probability"
    return keras.Model(model.inputs, {"logit": layer.output}, name="loopline_mlp_logit"), "logit"


def convert_variants(
    model: Any, representative: np.ndarray, *, variants: Sequence[str] = VARIANTS
) -> dict[str, bytes]:
    """TFLite flatbuffers of the Keras model, per variant (see the module docstring)."""

    quiet_tensorflow()
    import tensorflow as tf

    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise InputError(f"quantize.variants: unknown {unknown}; expected some of {list(VARIANTS)}")
    target, _ = logit_model(model)
    rep = np.asarray(representative, dtype=np.float32)

    def dataset() -> Any:
        for i in range(rep.shape[0]):
            yield [rep[i : i + 1]]

    out: dict[str, bytes] = {}
    for variant in variants:
        conv = tf.lite.TFLiteConverter.from_keras_model(target)
        if variant != "float32":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if variant == "float16":
            conv.target_spec.supported_types = [tf.float16]
        elif variant == "int8":
            conv.representative_dataset = dataset
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as dump:  # the converter prints the whole signature
            out[variant] = bytes(conv.convert())
        log.debug("TFLite converter (%s): %s", variant, dump.getvalue())
        log.info("quantize: %s %d bytes (%.1f s)", variant, len(out[variant]), time.perf_counter() - started)
    return out


def edge_scores(model: bytes | str, x: np.ndarray, *, batch_size: int) -> np.ndarray:
    """Server-side scores of a TFLite model: the edge runtime itself on an already-built feature matrix."""

    return EdgeModel(model, batch_size=batch_size).predict_matrix(x)


# --------------------------------------------------------------------------- the gate (pure)


@dataclass(frozen=True)
class SliceSettings:
    columns: tuple[str, ...]
    min_size: int
    min_positives: int

    @classmethod
    def from_params(cls, q: QuantizeConfig, ev: EvaluateConfig) -> SliceSettings:
        return cls(
            columns=tuple(q.slices if q.slices is not None else ev.slices),
            min_size=q.min_slice_size if q.min_slice_size is not None else ev.min_slice_size,
            min_positives=ev.min_slice_positives,
        )


def operating_threshold(reference: np.ndarray, *, threshold: float | None, alert_rate: float) -> float:
    """The fixed threshold, or the float model's score that flags ``alert_rate`` of the rows."""
    if threshold is not None:
        return float(threshold)
    if reference.size == 0:
        raise InputError("no reference scores: the test split has no labelled rows")
    return float(np.quantile(reference, 1.0 - alert_rate))


def _compare(y: np.ndarray, ref: np.ndarray, var: np.ndarray, threshold: float) -> dict[str, Any]:
    diff = np.abs(var - ref)
    both = y.size > 0 and 0 < int(y.sum()) < y.size
    return {
        "rows": int(y.size),
        "positives": int(y.sum()),
        "roc_auc": M.roc_auc(y, var) if both else math.nan,
        "roc_auc_drop": (M.roc_auc(y, ref) - M.roc_auc(y, var)) if both else math.nan,
        "pr_auc": M.pr_auc(y, var) if both else math.nan,
        "pr_auc_drop": (M.pr_auc(y, ref) - M.pr_auc(y, var)) if both else math.nan,
        "mean_abs_diff": float(diff.mean()) if diff.size else math.nan,
        "max_abs_diff": float(diff.max()) if diff.size else math.nan,
        "agreement": float(((ref >= threshold) == (var >= threshold)).mean()) if diff.size else math.nan,
    }


def parity_report(
    y: np.ndarray,
    reference: np.ndarray,
    variant: np.ndarray,
    *,
    slices: Mapping[str, np.ndarray],
    threshold: float,
    gate: QuantizeGateConfig,
    min_slice_size: int,
    min_slice_positives: int,
) -> dict[str, Any]:
    """Whole-split and per-slice parity of ``variant`` against ``reference`` and the gate's verdict.

    ``slices``: slice column -> values per row. A slice is *eligible* for the ROC-AUC check with at least
    ``min_slice_size`` rows and ``min_slice_positives`` positives (and a negative); score difference and
    agreement are checked on every slice with at least ``min_slice_size`` rows.
    """
    y = np.asarray(y, dtype=np.int64)
    ref = np.asarray(reference, dtype=np.float64)
    var = np.asarray(variant, dtype=np.float64)
    if not (y.shape == ref.shape == var.shape):
        raise InputError(f"labels {y.shape}, reference {ref.shape} and variant {var.shape} differ in length")
    whole = _compare(y, ref, var, threshold)
    reasons: list[str] = []

    def over(value: float, limit: float, what: str, where: str = "") -> None:
        if math.isfinite(value) and value > limit:
            reasons.append(f"{where}{what} {value:.4f} > {limit}")

    over(whole["roc_auc_drop"], gate.max_roc_auc_drop, "ROC-AUC drop")
    over(whole["pr_auc_drop"], gate.max_pr_auc_drop, "PR-AUC drop")
    over(whole["mean_abs_diff"], gate.max_mean_abs_diff, "mean |score diff|")
    over(whole["max_abs_diff"], gate.max_abs_diff, "max |score diff|")
    if whole["agreement"] < gate.min_agreement:
        reasons.append(f"decision agreement {whole['agreement']:.4f} < {gate.min_agreement}")
    rows = []
    for col, values in slices.items():
        vals = pd.Series(values).astype("string").fillna("<missing>").to_numpy(dtype=object)
        if vals.shape[0] != y.shape[0]:
            raise InputError(f"slice column {col!r} has {vals.shape[0]} values for {y.shape[0]} rows")
        for value in sorted(set(vals)):
            m = vals == value
            r = _compare(y[m], ref[m], var[m], threshold)
            big = r["rows"] >= min_slice_size
            r.update(column=col, value=str(value), checked=bool(big),
                     auc_checked=bool(big and r["positives"] >= min_slice_positives and r["positives"] < r["rows"]))  # fmt: skip
            where = f"slice {col}={value}: "
            if r["auc_checked"]:
                over(r["roc_auc_drop"], gate.slice_max_roc_auc_drop, "ROC-AUC drop", where)
            if big:
                over(r["mean_abs_diff"], gate.slice_max_mean_abs_diff, "mean |score diff|", where)
                if r["agreement"] < gate.slice_min_agreement:
                    reasons.append(
                        f"{where}decision agreement {r['agreement']:.4f} < {gate.slice_min_agreement}"
                    )
            rows.append(r)
    return {"threshold": threshold, "whole": whole, "slices": rows, "passed": not reasons, "reasons": reasons}


# --------------------------------------------------------------------------- model card (pure)


def edge_behaviour(
    evaluation: Mapping[str, Any] | None, *, required: bool, model: str = "keras"
) -> dict[str, Any]:
    """The edge model's behavioural verdict from the evaluation: ``passed`` False blocks every variant."""

    base = {"model": model, "required": required}
    if not required:
        return {**base, "passed": True, "failed": [], "detail": "not required (quantize.require_behavioural)"}
    results = (evaluation or {}).get("behavioural", {}).get(model)
    if results is None:
        return {**base, "passed": False, "failed": [],
                "detail": f"no behavioural test results for {model}; add it to evaluate.behavioural.models "
                f"in {params_file()} (or set quantize.require_behavioural: false)"}  # fmt: skip
    failed = [t for t in results["tests"] if not t["passed"]]
    detail = "all passed" if not failed else "; ".join(f"{t['name']}: {t['detail']}" for t in failed)
    return {**base, "passed": not failed, "failed": [t["name"] for t in failed], "detail": detail}


def card_section(report: Mapping[str, Any]) -> str:
    """The model card's ``quantization`` section: one row per variant, reasons for any not published."""

    def f(v: Any, digits: int = 4) -> str:
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"

    lines = [
        f"Parity gate on {report['test_rows']} labelled test rows against the float Keras model "
        f"(ROC-AUC {f(report['keras']['roc_auc'])}); operating threshold {f(report['threshold'], 6)} "
        f"({report['threshold_source']}); slices: {', '.join(report['slices']['columns']) or 'none'}.",
        "",
        "| variant | size (bytes) | ROC-AUC drop | PR-AUC drop | mean abs diff | max abs diff | agreement | published |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in report["variants"].items():
        w = v["parity"]["whole"]
        lines.append(
            f"| {name} | {v['bytes']} | {f(w['roc_auc_drop'])} | {f(w['pr_auc_drop'])} | {f(w['mean_abs_diff'], 5)} "
            f"| {f(w['max_abs_diff'], 5)} | {f(w['agreement'])} | {'yes' if v['published'] else 'NO'} |"
        )
    edge = report.get("edge_behaviour")
    if edge is not None:
        verdict = "passed" if edge["passed"] else "FAILED, no variant is published"
        lines[1:1] = [
            "",
            f"Behavioural tests of the edge model ({edge['model']}): {verdict} ({edge['detail']}).",
        ]
    failed = {
        n: v.get("reasons", v["parity"]["reasons"])
        for n, v in report["variants"].items()
        if not v["published"]
    }
    if failed:
        lines += ["", "Not published:"]
        for name, reasons in failed.items():
            lines.append(f"- {name}: " + "; ".join(reasons))
    return "\n".join(lines)


# --------------------------------------------------------------------------- the stage (I/O edge)


def _load_keras(model_dir: str) -> Any:

    loc = storage.join(model_dir, models.KERAS_FILE)
    if not storage.exists(loc):
        raise FileNotFoundError(
            f"{loc}: no Keras model to quantize; train it (train.keras in params, `loopline train`)"
        )
    spec = models.load_spec(model_dir)
    scorers = models.load_scorers(model_dir)
    return scorers["keras"], spec


def _resolve(reg: Registry, registry: str, version: str) -> str:
    if version in ALIASES:
        resolved = reg.alias(version)
        if resolved is None:
            raise RegistryError(
                f"registry {registry} has no {version}; register a model first (loopline register)"
            )
        return resolved
    return version


def attach_to_registry(
    registry: str,
    version: str,
    *,
    model_dir: str,
    published: Mapping[str, bytes],
    spec_bytes: bytes,
    report: Mapping[str, Any],
) -> str:
    """Copy the published variants, spec and quantize.json into a registered version and fill the card's
    quantization section. ``version``: an id or an alias. Returns the resolved version id."""

    reg = Registry(registry)
    version = _resolve(reg, registry, version)
    lineage = reg.lineage(version)
    keras_sha = sha256_bytes(storage.read_bytes(storage.join(model_dir, models.KERAS_FILE)))
    if lineage["artifacts"].get(models.KERAS_FILE) != keras_sha:
        raise RegistryError(
            f"version {version} holds a different Keras model than {model_dir}; quantize the directory that "
            "was registered as that version (or pass its id)"
        )
    vdir = reg.version_dir(version)
    for name, data in published.items():
        storage.write_bytes(storage.join(vdir, TFLITE_DIR, f"{name}.tflite"), data)
    storage.write_bytes(storage.join(vdir, TFLITE_DIR, "spec.json"), spec_bytes)
    storage.write_json(storage.join(vdir, REPORT_FILE), report)
    reg.set_card_section(version, "quantization", card_section(report))
    log.info("quantize: attached %s to %s/%s", sorted(published), registry, version)
    return version


def run_quantize(
    *,
    features: str,
    model: str,
    out: str,
    reports: str,
    cfg: QuantizeConfig,
    evaluate_cfg: EvaluateConfig,
    seed: int,
    registry: str | None = None,
    version: str | None = None,
    evaluation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert, gate, publish the variants that pass; write quantize.json (and the registry's card).
    ``evaluation``: the candidate's evaluation.json (default: the registered version's)."""

    started = time.perf_counter()
    if evaluation is None and registry is not None and version is not None:
        reg = Registry(registry)
        evaluation = reg.read_json(_resolve(reg, registry, version), "evaluation.json")
    if evaluation is None and cfg.require_behavioural:
        raise InputError(
            "quantize.require_behavioural needs the candidate's evaluation: pass --registry with --version "
            "(or --register-report), or --evaluation reports/evaluation/evaluation.json "
            f"(or set quantize.require_behavioural: false in {params_file()})"
        )
    edge = edge_behaviour(evaluation, required=cfg.require_behavioural)
    if not edge["passed"]:
        log.warning("quantize: the Keras edge model failed its behavioural tests (%s): no variant is published",
                    edge["detail"])  # fmt: skip
    keras_scorer, spec = _load_keras(model)
    names = list(spec["feature_names"])
    train = models.read_split(features, "train")
    test = models.read_split(features, "test")
    assert train is not None and test is not None
    if list(storage.read_json(storage.join(features, "spec.json"))["feature_names"]) != names:
        raise InputError(f"{features}/spec.json differs from {model}/spec.json; run the stages in order")
    y_train = pd.to_numeric(train["label"], errors="coerce").to_numpy(dtype=np.float64)
    x_train = models.feature_matrix(train, spec)
    idx = representative_sample(x_train, y_train, rows=cfg.representative_rows, seed=seed)
    blobs = convert_variants(keras_scorer.model, x_train[idx], variants=cfg.variants)

    rows = labelled_rows(test)
    if rows.empty or rows["label"].nunique() < 2:
        raise InputError(f"{features}/test.parquet: the parity gate needs labelled test rows of both classes")
    y = rows["label"].astype(np.int64).to_numpy()
    x = models.feature_matrix(rows, spec)
    ref = keras_scorer.predict_matrix(x)
    thr = operating_threshold(ref, threshold=cfg.threshold, alert_rate=cfg.alert_rate)
    sl = SliceSettings.from_params(cfg, evaluate_cfg)
    missing = [c for c in sl.columns if c not in rows.columns]
    if missing:
        raise InputError(f"slice columns {missing} are not in {features}/test.parquet; fix quantize.slices")
    slice_values = {c: rows[c].to_numpy(dtype=object) for c in sl.columns}
    variants: dict[str, Any] = {}
    published: dict[str, bytes] = {}
    for name, blob in blobs.items():
        t0 = time.perf_counter()
        scores = edge_scores(blob, x, batch_size=cfg.batch_size)
        parity = parity_report(y, ref, scores, slices=slice_values, threshold=thr, gate=cfg.gate,
                               min_slice_size=sl.min_size, min_slice_positives=sl.min_positives)  # fmt: skip

        blocked = [] if edge["passed"] else [f"edge model behavioural tests: {edge['detail']}"]
        variants[name] = {
            "file": f"{name}.tflite",
            "bytes": len(blob),
            "size_vs_float32": len(blob) / len(blobs["float32"]) if "float32" in blobs else None,
            "sha256": sha256_bytes(blob),
            "published": parity["passed"] and edge["passed"],
            "reasons": parity["reasons"] + blocked,
            "parity": parity,
            "score_seconds": round(time.perf_counter() - t0, 3),
        }
        if variants[name]["published"]:
            published[name] = blob
            storage.write_bytes(storage.join(out, f"{name}.tflite"), blob)
        else:
            stale = storage.join(out, f"{name}.tflite")
            if storage.exists(stale):  # an older run published it: it no longer passes
                storage.delete(stale)
            if parity["reasons"]:
                log.warning("quantize: %s NOT published: %s", name, "; ".join(parity["reasons"]))
    spec_bytes = dumps_spec(spec).encode("utf-8")
    storage.write_bytes(storage.join(out, "spec.json"), spec_bytes)
    report = json_safe(
        {
            "spec_digest": spec["digest"],
            "test_rows": len(rows),
            "keras": {"roc_auc": M.roc_auc(y, ref), "pr_auc": M.pr_auc(y, ref)},
            "threshold": thr,
            "threshold_source": "quantize.threshold"
            if cfg.threshold is not None
            else f"float Keras flags {cfg.alert_rate:.2%} of test rows",
            "slices": {
                "columns": list(sl.columns),
                "min_size": sl.min_size,
                "min_positives": sl.min_positives,
            },
            "representative": {
                "rows": int(idx.size),
                "positives": int(np.nansum(y_train[idx])),
                "seed": seed,
            },
            "default_variant": cfg.default_variant,
            "published": sorted(published),
            "unpublished": sorted(set(blobs) - set(published)),
            "variants": variants,
            "edge_behaviour": edge,
            "gate": cfg.gate.model_dump(mode="json"),
            "wall_seconds": round(time.perf_counter() - started, 3),
        }
    )
    storage.write_json(storage.join(out, REPORT_FILE), report)
    if registry is not None and version is not None:
        report["registry_version"] = attach_to_registry(
            registry, version, model_dir=model, published=published, spec_bytes=spec_bytes, report=report
        )
    storage.write_json(storage.join(reports, REPORT_FILE), report)
    return report
