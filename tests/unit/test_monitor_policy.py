"""The retrain decision: trigger order, importance weighting, matured-label guards and the cool-down."""

from __future__ import annotations

import datetime as dt

from pipelines.core.config import MonitorConfig, MonitorPolicyConfig
from pipelines.monitoring.monitor import MonitorState, Window, decide, reference_window

POLICY = MonitorPolicyConfig(
    cooldown_periods=3, performance_margin=0.1, severe_margin=0.2, min_positives=100, importance_threshold=0.1
)


def day(d: str) -> Window:
    x = dt.date.fromisoformat(d)
    return Window(x, x)


def figures(*, drifted=(), importance=None, score_drift=False, pr_auc=None, positives=300, coverage=0.99):
    importance = importance or {"amount": 0.3, "channel": 0.1, "country": 0.6}
    cols = {
        c: {"method": "psi", "score": 0.5 if c in drifted else 0.01, "drifted": c in drifted}
        for c in importance
    }
    perf = None
    if pr_auc is not None:
        perf = {
            "pr_auc": pr_auc,
            "roc_auc": 0.9,
            "positives": positives,
            "label_coverage": coverage,
            "labelled": 5000,
            "offline": {"pr_auc": 0.5, "roc_auc": 0.9},
        }
    pred = {
        "drifted": score_drift,
        "method": "psi",
        "score": 0.3 if score_drift else 0.01,
        "threshold": 0.1,
        "reference_mean": 0.02,
        "current_mean": 0.03,
    }
    return {
        "features": {
            "columns": cols,
            "drifted": sorted(drifted),
            "drifted_importance": sum(importance[c] for c in drifted),
        },
        "prediction": pred,
        "performance": perf,
    }


def test_stable_period_keeps_the_champion() -> None:
    d = decide(figures(pr_auc=0.48), POLICY, MonitorState(), window=day("2025-02-01"))
    assert not d.retrain and not d.drift and d.triggers == []
    assert d.state.last_retrain_end is None


def test_feature_drift_is_weighted_by_importance() -> None:
    d = decide(
        figures(drifted=["channel"], importance={"amount": 0.45, "channel": 0.05, "country": 0.5}),
        POLICY,
        MonitorState(),
        window=day("2025-02-01"),
    )
    assert d.drift and not d.retrain  # drift in a feature the model barely uses
    assert any("below the importance threshold" in r for r in d.reasons)
    d = decide(figures(drifted=["amount"]), POLICY, MonitorState(), window=day("2025-02-01"))
    assert d.retrain and d.triggers == ["feature_drift"]


def test_performance_first_and_guards() -> None:
    d = decide(figures(pr_auc=0.35, score_drift=True), POLICY, MonitorState(), window=day("2025-02-01"))
    assert d.triggers[0] == "performance" and d.retrain and not d.severe
    d = decide(figures(pr_auc=0.2, positives=50), POLICY, MonitorState(), window=day("2025-02-01"))
    assert not d.retrain and any("matured positives" in r for r in d.reasons)
    d = decide(figures(pr_auc=0.2, coverage=0.5), POLICY, MonitorState(), window=day("2025-02-01"))
    assert not d.retrain and any("labels matured" in r for r in d.reasons)


def test_cooldown_suppresses_then_expires_and_severe_decay_overrides() -> None:
    state = MonitorState()
    fired = []
    for i in range(8):
        w = day((dt.date(2025, 2, 10) + dt.timedelta(days=i)).isoformat())
        d = decide(figures(drifted=["amount"], score_drift=True), POLICY, state, window=w)
        state = d.state
        fired.append(d.retrain)
    assert fired == [True, False, False, True, False, False, True, False]  # one decision per 3 periods
    assert state.last_retrain_end == "2025-02-16"
    d = decide(figures(pr_auc=0.25), POLICY, state, window=day("2025-02-17"))
    assert d.severe and d.retrain and any("overridden" in r for r in d.reasons)
    # re-running the window that decided gives the same decision (idempotent), and state round-trips
    again = decide(
        figures(drifted=["amount"]), POLICY, MonitorState.from_dict(state.to_dict()), window=day("2025-02-16")
    )
    assert again.retrain


def test_reference_windows() -> None:
    cur = Window(dt.date(2025, 2, 10), dt.date(2025, 2, 16))
    cfg = MonitorConfig()
    ref, kind = reference_window(cur, cfg=cfg, training=Window(dt.date(2025, 1, 1), dt.date(2025, 1, 21)))
    assert kind == "training" and ref == Window(dt.date(2025, 1, 8), dt.date(2025, 1, 21))
    ref, kind = reference_window(cur, cfg=cfg, training=None)
    assert kind == "trailing" and ref == Window(dt.date(2025, 1, 27), dt.date(2025, 2, 9))
    seasonal = cfg.model_copy(update={"reference": cfg.reference.model_copy(update={"kind": "seasonal"})})
    ref, kind = reference_window(cur, cfg=seasonal, training=None)
    assert kind == "seasonal" and ref == Window(dt.date(2025, 2, 3), dt.date(2025, 2, 9))
    assert ref.start.weekday() == cur.start.weekday()


def week(start: dt.date, k: int) -> Window:
    s = start + dt.timedelta(days=7 * k)
    return Window(s, s + dt.timedelta(days=6))


def test_a_shift_retrains_once_then_waits_for_its_labels() -> None:
    """Weekly windows, labels maturing in 21 days, a cool-down of 2 periods: the drift that persists against a
    pre-shift champion decides at first sight, then waits until 2 weeks of the shift's labels have matured
    (window end >= shift + 13 + 21 days), not once per cool-down on the same pre-shift data."""
    policy = POLICY.model_copy(update={"cooldown_periods": 2, "shift_wait_periods": 2})
    start = dt.date(2025, 3, 12)
    before = start - dt.timedelta(days=20)  # the champion's data ends before the shift

    def replay(policy: MonitorPolicyConfig, data_end: dict[int, dt.date]) -> list[bool]:
        state, fired = MonitorState(), []
        for k in range(7):
            d = decide(figures(drifted=["amount"], score_drift=True), policy, state, window=week(start, k),
                       champion_data_end=data_end.get(k, before), label_maturity_days=21)  # fmt: skip
            state = MonitorState.from_dict(d.state.to_dict())  # the state round-trips through JSON
            fired.append(d.retrain)
            if k == 2 and not data_end and policy.shift_wait_periods:
                assert not d.retrain and any("waits for the shift's labels" in r for r in d.reasons)
                assert state.shift_start == start.isoformat()
        return fired

    # fires at first sight and once the shift's labels are in; with the champion still before the shift (its
    # catch-up retrain not promoted), again when the cool-down after that ends
    assert replay(policy, {}) == [True, False, False, False, True, False, True]
    # without the shift memory: one retrain per cool-down, each on the same pre-shift data
    assert replay(policy.model_copy(update={"shift_wait_periods": 0}), {}) == [True, False, True, False,
                                                                                True, False, True]  # fmt: skip
    # once the champion's data reaches the shift, a persisting drift is a new shift (the cool-down applies)
    reached = {k: start + dt.timedelta(days=3) for k in range(1, 7)}
    assert replay(policy, reached) == [True, False, True, False, False, False, True]


def test_performance_decay_is_not_held_by_the_shift_memory() -> None:
    policy = POLICY.model_copy(update={"cooldown_periods": 1, "shift_wait_periods": 2})
    start = dt.date(2025, 3, 12)
    d = decide(figures(drifted=["amount"]), policy, MonitorState(), window=week(start, 0),
               champion_data_end=start - dt.timedelta(days=20), label_maturity_days=21)  # fmt: skip
    assert d.retrain and d.state.shift_start == start.isoformat()
    d = decide(figures(drifted=["amount"], pr_auc=0.35), policy, d.state, window=week(start, 1),
               champion_data_end=start - dt.timedelta(days=20), label_maturity_days=21)  # fmt: skip
    assert d.retrain and d.triggers[0] == "performance"


def test_a_missing_figure_comes_with_its_reason_never_a_bare_null() -> None:
    """Before, the monitor summary page printed `null` under prediction drift and performance, no reason."""
    import numpy as np
    import pandas as pd

    from pipelines.monitoring.monitor import SCORE, compute_figures, summary_html

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"amount": rng.gamma(2.0, 30.0, 2000), "label": rng.integers(0, 2, 2000)})
    cfg = MonitorConfig()
    unscored = compute_figures(reference=frame, current=frame, columns={"amount": "numerical"}, cfg=cfg)
    assert unscored["prediction"] is None and "loopline predict" in unscored["missing"]["prediction"]
    assert unscored["performance"] is None and "performance window" in unscored["missing"]["performance"]

    scored = frame.assign(**{SCORE: rng.random(2000), "label": 0.0})  # labels of one class only
    one_class = compute_figures(reference=scored, current=scored, columns={"amount": "numerical"}, cfg=cfg,
                                matured=scored)  # fmt: skip
    assert one_class["prediction"] is not None and "prediction" not in one_class["missing"]
    assert "both classes" in one_class["missing"]["performance"]

    summary = {"decision": {"retrain": False, "reasons": []}, "figures": unscored, "champion": "v1",
               "window": {"label": "2025-02-01", "start": "2025-02-01", "end": "2025-02-07"},
               "reference": {"kind": "training", "start": "2025-01-01", "end": "2025-01-31"},
               "excluded": {}, "cpu_seconds": 0.1}  # fmt: skip
    page = summary_html(summary, frame, frame)
    assert "<pre>null</pre>" not in page and page.count("Not computed:") == 2


def test_the_evidently_page_leads_with_the_decision_that_acts() -> None:
    """Before, Evidently's "Dataset Drift is NOT detected" stood alone beside Loopline's retrain."""
    from pipelines.monitoring.monitor import with_decision_banner

    evidently = "<html><head></head><body class='x'><h1>Dataset Drift is NOT detected</h1></body></html>"
    page = with_decision_banner(
        evidently, {"drift": True, "retrain": True, "reasons": ["amount drifted (importance 0.16)"]}
    )
    assert page.index("Loopline decision: retrain") < page.index("Dataset Drift is NOT detected")
    assert "amount drifted (importance 0.16)" in page and "50%" in page
    calm = with_decision_banner(evidently, {"drift": False, "retrain": False, "reasons": []})
    assert "Loopline decision: no drift, keep the champion" in calm
