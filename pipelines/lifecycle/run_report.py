"""One run report: ``reports/index.html`` links every report of a run, headline figures on top.

Reads only what the stages already wrote (metrics files, reports, the registry version's model card,
``benchmarks/results/*.json``); anything missing is shown as "not run", never an error. Cheap: no
model or data is loaded. :func:`collect` gathers the figures (pure apart from reading JSON),
:func:`render_index` turns them into one self-contained HTML page, :func:`write_run_report` is the I/O.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from pipelines.core import storage
from pipelines.core.drift import decision_verdict

__all__ = ["collect", "markdown_to_html", "render_index", "write_run_report"]

log = logging.getLogger(__name__)

NOT_RUN = "not run"


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _rel(target: Path, base: Path) -> str:
    return os.path.relpath(target, base).replace(os.sep, "/")


def _newest(paths: list[Path]) -> Path | None:
    paths = [p for p in paths if p.is_file()]
    return max(paths, key=lambda p: (p.stat().st_mtime_ns, str(p))) if paths else None


# --------------------------------------------------------------------------- markdown (model card)


def _inline(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', t)
    return t


def markdown_to_html(md: str) -> str:
    """A small Markdown subset (headings, lists, pipe tables, code fences, paragraphs) for the model card.

    Uses the ``markdown`` package when it is installed; this keeps the report free of a new dependency.
    """
    try:
        import markdown  # type: ignore[import-not-found]

        return str(markdown.markdown(md, extensions=["tables", "fenced_code"]))
    except ImportError:
        pass
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre>" + html.escape("\n".join(lines[i + 1 : j])) + "</pre>")
            i = j + 1
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", line)
        if m:
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
            i += 1
            continue
        if line.lstrip().startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                    rows.append(cells)
                i += 1
            if rows:
                head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
                body = "".join(
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:]
                )
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            continue
        if re.match(r"^\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                item = re.sub(r"^\s*[-*]\s+", "", lines[i])
                items.append(f"<li>{_inline(item)}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        if not line.strip():
            i += 1
            continue
        para = []
        while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\||```|\s*[-*]\s)", lines[i]):
            para.append(lines[i])
            i += 1
        out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


# --------------------------------------------------------------------------- collecting


def _bench_records(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The table of one benchmark: its first list of records, else its sections of scalars."""
    for v in data.values():
        if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            return v
    records = []
    for k, v in data.items():
        if k == "machine" or not isinstance(v, dict):
            continue
        nested = {k2: v2 for k2, v2 in v.items() if isinstance(v2, dict)}
        if nested:
            records += [{"case": f"{k}.{k2}", **v2} for k2, v2 in nested.items()]
        else:
            records.append({"case": k, **v})
    return records


def _benchmarks(folder: Path | None) -> list[dict[str, Any]]:
    """Each benchmark JSON as {name, at, note, columns, rows}: a table and its top-level scalars."""
    if folder is None or not folder.is_dir():
        return []
    out = []
    for f in sorted(folder.glob("*.json")):
        data = _load(f)
        if not isinstance(data, dict):
            continue
        records = _bench_records(data)
        columns: list[str] = []
        for r in records:
            columns += [k for k, v in r.items() if k not in columns and not isinstance(v, (dict, list))]
        columns = columns[:9]
        rows = [[r.get(c, "") for c in columns] for r in records[:8]]
        skip = {"benchmark", "at", "features", "machine"}
        note = ", ".join(
            f"{html.escape(k)} {_fmt(v, 3)}" for k, v in data.items()
            if k not in skip and not k.endswith("_unix") and not isinstance(v, (dict, list)) and len(str(v)) < 40
        )  # fmt: skip
        out.append({"name": data.get("benchmark", f.stem), "file": f.name, "at": data.get("at", ""),
                    "note": note, "columns": columns, "rows": rows})  # fmt: skip
    return out


def collect(*, reports: Path, registry: str | Path | None, benchmarks: Path | None) -> dict[str, Any]:
    """Headline figures and links of one run (paths relative to ``reports``)."""
    reports = Path(reports)
    links: dict[str, str | None] = {}

    def link(key: str, path: Path) -> None:
        links[key] = _rel(path, reports) if path.is_file() else None

    etl = _load(reports / "etl" / "manifest.json")
    val = _load(reports / "validation" / "summary.json")
    lab = _load(reports / "labeling" / "report.json")
    feat = _load(reports / "features" / "report.json")
    metrics = _load(reports / "evaluation" / "metrics.json")
    evaluation = _load(reports / "evaluation" / "evaluation.json")
    reg = _load(reports / "registry" / "register.json")
    link("data_docs_overview", reports / "validation" / "data_docs" / "overview.html")
    link("data_docs", reports / "validation" / "data_docs" / "index.html")
    link("labeling", reports / "labeling" / "report.html")
    link("features", reports / "features" / "report.html")
    link("evaluation", reports / "evaluation" / "report.html")
    monitor_dir = reports / "monitor"
    latest = monitor_dir / "latest"
    drift_html = latest / "report.html" if (latest / "report.html").is_file() else None
    if drift_html is None and monitor_dir.is_dir():
        drift_html = _newest(list(monitor_dir.rglob("report.html")))
    links["drift"] = _rel(drift_html, reports) if drift_html else None
    link("drift_summary", latest / "summary.html")
    decision_file = latest / "decision.json" if (latest / "decision.json").is_file() else None
    if decision_file is None and monitor_dir.is_dir():
        decision_file = _newest(list(monitor_dir.rglob("decision.json")))
    decision = _load(decision_file) if decision_file else None

    head: dict[str, Any] = {}
    if etl:
        t = etl.get("totals", {})
        head["etl"] = {
            "rows_read": t.get("rows_read"),
            "rows_loaded": t.get("rows_loaded"),
            "rows_quarantined": t.get("rows_quarantined"),
            "files": t.get("files_processed"),
            "partitions": len(etl.get("partitions_written", [])),
            "by_reason": etl.get("quarantined_by_reason", {}),
        }
    if val:
        crit, warn = int(val.get("critical_failures", 0) or 0), int(val.get("warnings", 0) or 0)
        head["validation"] = {
            "status": "failed" if crit else ("warnings" if warn else "passed"),
            "partitions": val.get("partitions_validated", 0),
            "critical_failures": crit,
            "warnings": warn,
        }
    if lab:
        head["labeling"] = {
            "sources": lab.get("label_sources", {}),
            "queued": lab.get("active_learning", {}).get("queued"),
        }
    if feat:
        s = feat.get("summary", {})
        head["features"] = {"n_features": feat.get("n_features"), "max_single_auc": s.get("max_single_auc"),
                            "max_single_auc_input": s.get("max_single_auc_input")}  # fmt: skip
    if metrics:
        primary = (evaluation or {}).get("primary") or "xgboost"
        test = metrics.get("test", {})
        scorers = [
            {"name": n, "pr_auc": m.get("pr_auc"), "roc_auc": m.get("roc_auc"), "ece": m.get("ece"),
             "kind": "primary" if n == primary else "baseline" if n.startswith("baseline") else
             "champion" if n.startswith("champion:") else "model"}
            for n, m in test.items()
        ]  # fmt: skip
        base = [s for s in scorers if s["kind"] == "baseline" and s["pr_auc"] is not None]
        best_base = max(base, key=lambda s: s["pr_auc"]) if base else None
        head["evaluation"] = {
            "primary": primary,
            "rows": metrics.get("rows"),
            "positives": metrics.get("positives"),
            "pr_auc": test.get(primary, {}).get("pr_auc"),
            "roc_auc": test.get(primary, {}).get("roc_auc"),
            "best_baseline": best_base,
            "scorers": sorted(scorers, key=lambda s: -(s["pr_auc"] or 0)),
            "slices_flagged": metrics.get("slices_flagged"),
            "behavioural_passed": metrics.get("behavioural_passed"),
            "behavioural_failed": metrics.get("behavioural_failed"),
        }
    card_md = None
    if reg:
        head["gate"] = {
            "version": reg.get("version"),
            "status": reg.get("status"),
            "passed": reg.get("passed"),
            "reasons": reg.get("reasons", []),
            "champion": reg.get("champion_after"),
        }
        if registry is not None and reg.get("version"):
            card = storage.join(str(registry), "versions", str(reg["version"]), "model_card.md")
            if storage.exists(card):
                card_md = storage.read_bytes(card).decode("utf-8")
    if decision:
        retrain = decision.get("retrain")
        head["drift"] = {
            "decision": decision_verdict(decision),
            "retrain": bool(retrain),
            "reasons": decision.get("reasons", []),
        }
    retrain = _load(reports / "retrain" / "retrain.json")
    if retrain:
        head["retrain"] = {
            "status": retrain.get("status"),
            "mode": retrain.get("mode"),
            "why": retrain.get("why") or retrain.get("reason"),
            "detail": retrain.get("detail"),
            "version": retrain.get("version"),
            "reasons": retrain.get("reasons") or [],
        }
    return {
        "links": links,
        "headline": head,
        "model_card_md": card_md,
        "benchmarks": _benchmarks(benchmarks),
    }


def headline_metrics(head: dict[str, Any]) -> dict[str, Any]:
    """The run's few headline figures, for ``reports/metrics.json``: what ``dvc metrics show`` and
    ``dvc exp show`` compare across runs and experiments (the same numbers as the page's tiles)."""
    out: dict[str, Any] = {}
    if "etl" in head:
        e = head["etl"]
        out["etl"] = {k: e.get(k) for k in ("rows_read", "rows_loaded", "rows_quarantined", "partitions")}
    if "validation" in head:
        v = head["validation"]
        out["validation"] = {k: v.get(k) for k in ("status", "critical_failures", "warnings")}
    if "features" in head:
        out["features"] = {"n_features": head["features"].get("n_features")}
    if "evaluation" in head:
        ev = head["evaluation"]
        base = ev.get("best_baseline") or {}
        out["evaluation"] = {"pr_auc": ev.get("pr_auc"), "roc_auc": ev.get("roc_auc"),
                             "best_baseline_pr_auc": base.get("pr_auc"), "slices_flagged": ev.get("slices_flagged"),
                             "behavioural_passed": ev.get("behavioural_passed"),
                             "behavioural_failed": ev.get("behavioural_failed")}  # fmt: skip
    if "gate" in head:
        out["gate"] = {"status": head["gate"].get("status"), "passed": head["gate"].get("passed")}
    if "drift" in head:
        out["drift"] = {"decision": head["drift"].get("decision"), "retrain": head["drift"].get("retrain")}
    if "retrain" in head:
        out["retrain"] = {"status": head["retrain"].get("status"), "mode": head["retrain"].get("mode")}
    return out


# --------------------------------------------------------------------------- rendering

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232b;background:#f4f6f9}
header{background:#17324d;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#b9c9da;font-size:13px}
main{padding:20px 32px;max-width:1200px}
.kpis{display:grid;grid-template-columns:repeat(3,1fr);gap:12px;margin-bottom:18px}
.kpi{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px #0002;border-top:4px solid #9aa7b4}
.kpi h3{margin:0 0 4px;font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#5b6875}
.kpi .v{font-size:22px;font-weight:600} .kpi .s{color:#5b6875;font-size:12.5px}
.ok{border-top-color:#2e9e5b} .warn{border-top-color:#e0a100} .bad{border-top-color:#d64545} .na{border-top-color:#c3cad1}
.na .v{color:#8a96a3;font-size:17px}
section{background:#fff;border-radius:8px;padding:14px 18px;margin-bottom:16px;box-shadow:0 1px 2px #0002}
section h2{margin:0 0 8px;font-size:16px}
table{border-collapse:collapse;width:100%;font-size:13px} th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e6e9ed}
th{background:#f0f3f6;font-weight:600} td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.bench p.s{margin:0 0 4px;color:#5b6875;font-size:12.5px}
tr.primary td{font-weight:600;background:#eef6ff}
.links{display:grid;grid-template-columns:repeat(2,1fr);gap:6px 24px;margin:0;padding:0;list-style:none}
.links li{padding:4px 0;border-bottom:1px dashed #e6e9ed} .missing{color:#8a96a3}
.tag{display:inline-block;font-size:11px;padding:1px 7px;border-radius:9px;background:#e6e9ed;color:#44505c;margin-left:6px}
.card{max-height:420px;overflow:auto;border:1px solid #e6e9ed;border-radius:6px;padding:4px 14px}
.card h1{font-size:17px;margin:10px 0 6px} .card h2{font-size:15px;margin:12px 0 4px} .card h3{font-size:14px}
.bench h3{font-size:13px;margin:12px 0 4px} code{background:#f0f3f6;padding:0 3px;border-radius:3px}
"""


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"
    return html.escape(str(v))


def _kpi(title: str, value: str, sub: str, cls: str) -> str:
    return (
        f'<div class="kpi {cls}"><h3>{title}</h3><div class="v">{value}</div><div class="s">{sub}</div></div>'
    )


def _retrain_kpi(r: dict[str, Any]) -> str:
    """The retrain's outcome as what it is: a promotion, a refusal, a wait for data, a skip or a failure."""
    status = r.get("status")
    if status == "champion":
        return _kpi(
            "Retrain", "champion", html.escape(f"{r.get('mode')} retrain promoted {r.get('version')}"), "ok"
        )
    if status in ("challenger", "rejected"):
        why = "; ".join(map(str, r["reasons"][:2])) or "-"
        return _kpi("Retrain", _fmt(status), html.escape(f"{r.get('mode')} candidate {r.get('version')}: {why}"),
                    "warn")  # fmt: skip
    if status == "waiting":
        return _kpi(
            "Retrain", "waiting for data", html.escape(f"nothing retrained: {r.get('detail')}"), "warn"
        )
    if status == "skipped":
        return _kpi("Retrain", "skipped", html.escape(str(r.get("why") or "-")), "na")
    return _kpi("Retrain", _fmt(status), html.escape(str(r.get("detail") or r.get("why") or "-")), "bad")


def _kpis(h: dict[str, Any]) -> str:
    cards = []
    e = h.get("etl")
    if e:
        q = e["rows_quarantined"] or 0
        reasons = (
            ", ".join(f"{k} {v:,}" for k, v in list(e["by_reason"].items())[:3]) or "nothing quarantined"
        )
        cards.append(_kpi("Rows loaded (last ETL run)", _fmt(e["rows_loaded"]),
                          f"{_fmt(q)} quarantined of {_fmt(e['rows_read'])} read; {html.escape(reasons)}",
                          "warn" if q else "ok"))  # fmt: skip
    else:
        cards.append(_kpi("Rows loaded", NOT_RUN, "ETL has not run", "na"))
    v = h.get("validation")
    if v:
        cls = {"passed": "ok", "warnings": "warn", "failed": "bad"}[v["status"]]
        cards.append(_kpi("Validation", v["status"], f"{v['partitions']} partition(s); {v['critical_failures']} "
                          f"critical, {v['warnings']} warning(s)", cls))  # fmt: skip
    else:
        cards.append(_kpi("Validation", NOT_RUN, "no reports/validation/summary.json", "na"))
    ev = h.get("evaluation")
    if ev:
        bb = ev["best_baseline"]
        sub = (
            f"ROC-AUC {_fmt(ev['roc_auc'])}; best baseline {html.escape(bb['name'])} PR-AUC {_fmt(bb['pr_auc'])}"
            if bb
            else f"ROC-AUC {_fmt(ev['roc_auc'])}"
        )
        cls = "ok" if (bb is None or (ev["pr_auc"] or 0) > (bb["pr_auc"] or 0)) else "bad"
        cards.append(_kpi(f"Test PR-AUC ({html.escape(ev['primary'])})", _fmt(ev["pr_auc"]), sub, cls))
    else:
        cards.append(_kpi("Test PR-AUC", NOT_RUN, "evaluation has not run", "na"))
    g = h.get("gate")
    if g:
        cls = "ok" if g["passed"] else ("warn" if g["status"] == "challenger" else "bad")
        why = "; ".join(g["reasons"][:2]) if g["reasons"] else "every check passed"
        cards.append(
            _kpi("Gate decision", _fmt(g["status"]), f"{_fmt(g['version'])}: {html.escape(why)}", cls)
        )
    else:
        cards.append(_kpi("Gate decision", NOT_RUN, "register has not run", "na"))
    d = h.get("drift")
    if d:
        dec = d["decision"]
        cls = "warn" if d["retrain"] or dec != decision_verdict({}) else "ok"
        cards.append(
            _kpi("Drift decision", _fmt(dec), html.escape("; ".join(map(str, d["reasons"][:2])) or "-"), cls)
        )
    else:
        cards.append(_kpi("Drift decision", NOT_RUN, "monitoring has not run", "na"))
    r = h.get("retrain")
    if r:
        cards.append(_retrain_kpi(r))
    else:
        cards.append(_kpi("Retrain", NOT_RUN, "the retrain stage has not run", "na"))
    f = h.get("features")
    if f:
        cards.append(_kpi("Features", _fmt(f["n_features"]), f"leakage checks passed; max single-input AUC "
                          f"{_fmt(f['max_single_auc'])} ({html.escape(str(f['max_single_auc_input']))})", "ok"))  # fmt: skip
    else:
        cards.append(_kpi("Features", NOT_RUN, "the feature stage has not run", "na"))
    return '<div class="kpis">' + "".join(cards) + "</div>"


def _behavioural(ev: dict[str, Any]) -> str:
    failed = ev.get("behavioural_failed")
    if failed is None:  # an evaluation from before the per-model verdict
        return {True: "passed", False: "FAILED", None: "not run"}[ev.get("behavioural_passed")]
    if not failed:
        return "all passed"
    edge = " (its TFLite variants are not published)" if "keras" in failed else ""
    return html.escape("FAILED by " + ", ".join(failed)) + edge


def _scorers_table(ev: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr class="{"primary" if s["kind"] == "primary" else ""}"><td>{html.escape(s["name"])}'
        f'<span class="tag">{s["kind"]}</span></td><td class="n">{_fmt(s["pr_auc"])}</td>'
        f'<td class="n">{_fmt(s["roc_auc"])}</td><td class="n">{_fmt(s["ece"])}</td></tr>'
        for s in ev["scorers"]
    )
    return (
        f"<p>{_fmt(ev['rows'])} labelled rows, {_fmt(ev['positives'])} positives. Flagged slices: "
        f"{_fmt(ev['slices_flagged'])}; behavioural tests: {_behavioural(ev)}.</p>"
        '<table><thead><tr><th>scorer</th><th class="n">PR-AUC</th><th class="n">ROC-AUC</th>'
        '<th class="n">ECE</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def render_index(data: dict[str, Any], *, title: str = "Loopline run report", generated_at: str = "") -> str:
    links = data["links"]
    h = data["headline"]
    entries = [
        ("Data Docs overview (validation)", "data_docs_overview"),
        ("Great Expectations Data Docs", "data_docs"),
        ("Labeling report", "labeling"),
        ("Features report", "features"),
        ("Evaluation report", "evaluation"),
        ("Model card", "model_card"),
        ("Drift report (Evidently)", "drift"),
        ("Drift summary", "drift_summary"),
    ]
    items = "".join(
        f'<li><a href="{html.escape(links[k])}">{label}</a> <span class="tag">{html.escape(links[k])}</span></li>'
        if links.get(k)
        else f'<li class="missing">{label}: {NOT_RUN}</li>'
        for label, k in entries
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1>",
        f"<p>Generated {html.escape(generated_at)} from the stages' metrics files. Missing pieces are marked "
        f"“{NOT_RUN}”.</p></header><main>",
        _kpis(h),
        f'<section><h2>Reports</h2><ul class="links">{items}</ul></section>',
    ]
    ev = h.get("evaluation")
    parts.append(
        f"<section><h2>Test split: the candidate ({html.escape(str(ev['primary']) if ev else '-')}) vs the "
        "baselines</h2>" + (_scorers_table(ev) if ev else f'<p class="missing">{NOT_RUN}</p>') + "</section>"
    )
    g = h.get("gate")
    if g and g["reasons"]:
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in g["reasons"])
        parts.append(
            f"<section><h2>Gate: why {html.escape(str(g['status']))}</h2><ul>{reasons}</ul></section>"
        )
    if data.get("model_card_html"):
        parts.append(
            f'<section><h2>Model card</h2><div class="card">{data["model_card_html"]}</div></section>'
        )
    bench = data.get("benchmarks") or []
    if bench:
        blocks = []
        for b in bench:
            numeric = [
                bool(b["rows"]) and all(isinstance(r[i], (int, float)) for r in b["rows"])
                for i in range(len(b["columns"]))
            ]
            head = "".join(
                f'<th class="{"n" if numeric[i] else ""}">{html.escape(str(c))}</th>'
                for i, c in enumerate(b["columns"])
            )
            body = "".join(
                "<tr>" + "".join(
                    f'<td class="{"n" if isinstance(v, (int, float)) else ""}">{_fmt(v, 3)}</td>' for v in r
                ) + "</tr>"
                for r in b["rows"]
            )  # fmt: skip
            note = f"<p class='s'>{b['note']}</p>" if b["note"] else ""
            table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if b["rows"] else ""
            blocks.append(f"<h3>{html.escape(str(b['name']))} <span class='tag'>{html.escape(b['file'])} "
                          f"{html.escape(str(b['at']))}</span></h3>{note}{table}")  # fmt: skip
        parts.append('<section class="bench"><h2>Benchmarks</h2>' + "".join(blocks) + "</section>")
    else:
        parts.append(f'<section><h2>Benchmarks</h2><p class="missing">{NOT_RUN} (make bench)</p></section>')
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_run_report(
    *,
    reports: str | Path,
    registry: str | Path | None,
    benchmarks: str | Path | None,
    out: str | Path,
    title: str = "Loopline run report",
) -> Path:
    """Collect, render and write ``out``, plus ``model_card.html`` and ``metrics.json`` (the headline figures,
    the pipeline's DVC metrics) beside it."""

    reports, out = Path(reports), Path(out)
    data = collect(reports=reports, registry=str(registry) if registry else None,
                   benchmarks=Path(benchmarks) if benchmarks else None)  # fmt: skip
    card_file = out.parent / "model_card.html"  # always written: a DVC output of the report stage
    if data["model_card_md"]:
        card_html = markdown_to_html(data["model_card_md"])
        data["model_card_html"] = card_html
        data["links"]["model_card"] = _rel(card_file, out.parent)
    else:
        card_html = f"<p class='missing'>Model card: {NOT_RUN} (the register stage writes it).</p>"
        data["links"]["model_card"] = None
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Model card</title><style>{CSS}</style>"
            f"</head><body><main><section>{card_html}</section></main></body></html>")  # fmt: skip
    storage.write_bytes(card_file, page.encode("utf-8"))
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    storage.write_bytes(out, render_index(data, title=title, generated_at=now).encode("utf-8"))
    storage.write_json(out.parent / "metrics.json", headline_metrics(data["headline"]))
    log.info("run report: %s", out)
    return out
