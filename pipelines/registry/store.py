"""Model registry on a local folder or an ``s3://`` prefix (through pipelines.core.storage), with a promotion gate.

Layout::

    <registry>/versions/<version>/   model artifacts (copied from the candidate directory), calibration.json,
                                     metrics.json, evaluation.json, report.html,
                                     lineage.json   (written last: a version without it is incomplete),
                                     gate.json, model_card.md   (written after the gate)
    <registry>/aliases/gen-<n>.json  alias state, one immutable object per generation

**Aliases.** The current alias state (``champion``, ``challenger``, and a stack of past values per alias
for ``rollback``) is the object of the highest generation. A change reads generation *n*, computes the new
state and *creates* ``gen-<n+1>.json`` with an exclusive create (``storage.create_bytes``: a hard link of a
complete temp file locally, a conditional ``PUT If-None-Match: *`` on S3). Of two racing promotions both
reading generation *n*, exactly one creates *n+1*; the other gets :class:`ConcurrentUpdateError` and
changes nothing. It is not retried automatically on purpose: its gate compared the candidate against the
champion of generation *n*, which is no longer the champion. Readers see either the old or the new state,
never a mix, and every past generation stays as the alias history.

**Integrity.** ``lineage.json`` records the sha256 of every artifact. :meth:`Registry.load_version` reads
each artifact once, checks its digest, stages the verified bytes in a temporary folder and loads the models
from there, so a tampered file is refused (:class:`TamperedArtifactError`) and cannot be swapped between
the check and the load. (lineage.json itself is not signed: integrity, not authenticity.)

**Gate** (:func:`gate_decision`, pure; thresholds in params ``gate``): the candidate's primary model must
beat every baseline on ``gate.metric`` by ``baseline_margin``; beat the champion re-scored on the *same*
test rows by ``champion_margin``; no eligible slice may fall more than its margin below the champion's
same slice; every behavioural test must pass. A version that fails only the champion check becomes
``challenger`` (``gate.near_miss``), any other failure leaves it ``rejected``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.core import storage
from pipelines.core.config import GateConfig
from pipelines.core.errors import EXIT_CHECK_FAILED
from pipelines.edge.featurespec import loads_spec
from pipelines.evaluation.evaluate import compare_champion, labelled_rows
from pipelines.training import models

__all__ = [
    "ALIASES",
    "AliasState",
    "ConcurrentUpdateError",
    "GateRefusedError",
    "Registry",
    "RegistryError",
    "TamperedArtifactError",
    "describe_version",
    "gate_decision",
    "model_card",
    "set_card_section",
]

log = logging.getLogger(__name__)

ALIASES = ("champion", "challenger")
LINEAGE = "lineage.json"
GATE = "gate.json"
CARD = "model_card.md"
EVIDENCE = ("metrics.json", "evaluation.json", "report.html")
CARD_SECTIONS = ("quantization",)
_GEN_RE = re.compile(r"^gen-(\d{8})\.json$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _span(w: Mapping[str, Any] | None) -> str:
    if not w:
        return "-"
    return f"{str(w.get('start', '?'))[:10]}..{str(w.get('end', '?'))[:10]}"


def describe_version(
    lineage: Mapping[str, Any], gate: Mapping[str, Any] | None, aliases: Mapping[str, str | None]
) -> str:
    """A version as a person reads it: what it is, the data it saw, the gate's checks (``--json``: the record)."""
    v = str(lineage.get("version"))
    named = sorted(a for a, target in aliases.items() if target == v)
    git = lineage.get("git") or {}
    dw = lineage.get("data_window") or {}
    lines = [
        f"version   {v}" + (f"  ({', '.join(named)})" if named else ""),
        f"created   {lineage.get('created_at', '-')}   git {str(git.get('commit') or '-')[:10]}"
        + (" (dirty)" if git.get("dirty") else "")
        + f"   parent {lineage.get('parent_version') or '-'}",
        f"data      train {_span(dw.get('train'))}, valid {_span(dw.get('valid'))}, test {_span(dw.get('test'))}",
    ]
    if gate:
        lines.append(f"gate      {gate.get('status')}: {'passed' if gate.get('passed') else 'failed'} "
                     f"({gate.get('metric')}, primary {gate.get('primary')})")  # fmt: skip
        for c in gate.get("checks") or []:
            lines.append(f"  {'ok  ' if c.get('passed') else 'FAIL'} {c.get('name')}: {c.get('detail')}")
    else:
        lines.append("gate      no gate.json recorded")
    arts = lineage.get("artifacts") or {}
    lines.append(f"artifacts {len(arts)} file(s), sha256 recorded: {', '.join(sorted(arts))}")
    return "\n".join(lines)


class RegistryError(RuntimeError):
    """A registry operation cannot proceed; the message says why and what to do."""


class TamperedArtifactError(RegistryError):
    """An artifact's bytes no longer match the sha256 recorded in the version's lineage."""


class ConcurrentUpdateError(RegistryError):
    """Another process changed the aliases between this process's read and its write."""


class GateRefusedError(RegistryError):
    """Promotion to champion without a passed, current gate decision."""

    exit_code = EXIT_CHECK_FAILED  # a check that ran and refused, not a usage error


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- alias state


@dataclass(frozen=True)
class AliasState:
    generation: int = 0
    aliases: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(ALIASES))
    stacks: dict[str, list[str]] = field(default_factory=lambda: {a: [] for a in ALIASES})
    event: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "aliases": self.aliases,
            "stacks": self.stacks,
            "event": self.event,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AliasState:
        aliases = {a: d.get("aliases", {}).get(a) for a in ALIASES}
        stacks = {a: list(d.get("stacks", {}).get(a, [])) for a in ALIASES}
        return cls(generation=int(d["generation"]), aliases=aliases, stacks=stacks, event=d.get("event"))


# --------------------------------------------------------------------------- the gate (pure)


def _metric(evaluation: Mapping[str, Any], scorer: str, metric: str) -> float | None:
    value = evaluation.get("metrics", {}).get(scorer, {}).get(metric)
    return None if value is None else float(value)


def gate_decision(
    evaluation: Mapping[str, Any],
    *,
    champion: Mapping[str, Any] | None,
    cfg: GateConfig,
) -> dict[str, Any]:
    """Decide on a candidate. ``evaluation``: the candidate's evaluation.json; ``champion``: the champion
    re-scored on the same test rows (``{"version", "metrics": {model: {...}}, "slices": {...}}``) or None
    when there is no champion. Returns ``{"passed", "status", "checks", "reasons", ...}``."""
    primary = evaluation["primary"]
    metric = cfg.metric
    cand = _metric(evaluation, primary, metric)
    checks: list[dict[str, Any]] = []

    def check(name: str, passed: bool, detail: str) -> None:
        checks.append({"name": name, "passed": bool(passed), "detail": detail})

    baselines = sorted(n for n in evaluation.get("metrics", {}) if n.startswith("baseline_"))
    if not baselines:
        check("beats_baselines", False, "no baseline was evaluated; the gate needs the three baselines")
    for b in baselines:
        base = _metric(evaluation, b, metric)
        ok = cand is not None and base is not None and cand - base >= cfg.baseline_margin
        check(
            f"beats_{b}", ok, f"{primary} {metric} {_f(cand)} vs {b} {_f(base)} (need +{cfg.baseline_margin})"
        )

    if cfg.beyond_chance:
        sig = (evaluation.get("significance") or {}).get("vs_best_baseline", {}).get(metric)
        if sig is None:
            check(
                "beyond_chance",
                True,
                "not computed by this evaluation (an evaluation.json from before it was)",
            )
        else:
            lower = sig.get("lower")
            ok = lower is not None and math.isfinite(lower) and lower > 0
            rows = (evaluation.get("significance") or {}).get("rows")
            check(
                "beyond_chance",
                ok,
                f"{primary} - {sig['baseline']} {metric} {_f(sig.get('delta'))}, one-sided 95% lower bound "
                f"{_f(lower)} over paired bootstrap resamples of the {rows} test rows (need > 0)",
            )

    gap = None  # how far below the champion the candidate is (the near-miss rule)
    if champion is None:
        check("beats_champion", True, "no champion yet")
        check("slices_vs_champion", True, "no champion yet")
    else:
        champ = champion.get("metrics", {}).get(primary, {}).get(metric)
        ok = cand is not None and champ is not None and cand - float(champ) >= cfg.champion_margin
        gap = None if cand is None or champ is None else float(champ) - cand
        check(
            "beats_champion",
            ok,
            f"{primary} {metric} {_f(cand)} vs champion {champion.get('version')} {_f(champ)} on the same "
            f"test rows (need {cfg.champion_margin:+})",
        )
        regressions = slice_regressions(
            evaluation["slices"][primary],
            champion["slices"],
            default_margin=cfg.slice_margin,
            margins=cfg.slice_margins,
        )
        check(
            "slices_vs_champion",
            not regressions,
            "no slice regresses beyond its margin"
            if not regressions
            else "regressed: "
            + "; ".join(
                f"{r['slice']} {_f(r['candidate'])} vs {_f(r['champion'])} (margin {r['margin']})"
                for r in regressions
            ),
        )

    if cfg.require_behavioural:
        beh = evaluation.get("behavioural", {}).get(primary)
        if beh is None:
            check(
                "behavioural",
                False,
                f"no behavioural test results for {primary}; add it to evaluate.behavioural.models",
            )
        else:
            failed = [t["name"] for t in beh["tests"] if not t["passed"]]
            check("behavioural", not failed, "all passed" if not failed else "failed: " + ", ".join(failed))

    passed = all(c["passed"] for c in checks)
    failing = [c["name"] for c in checks if not c["passed"]]
    if passed:
        status = "champion"
    elif (
        failing == ["beats_champion"]
        and cfg.near_miss == "challenger"
        and gap is not None
        and gap <= cfg.near_miss_margin + 1e-12
    ):
        status = "challenger"
    else:
        status = "rejected"
    return {
        "passed": passed,
        "status": status,
        "metric": metric,
        "primary": primary,
        "champion_compared": None if champion is None else champion.get("version"),
        "checks": checks,
        "reasons": [f"{c['name']}: {c['detail']}" for c in checks if not c["passed"]],
        "settings": cfg.model_dump(mode="json"),
    }


def slice_regressions(
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any],
    *,
    default_margin: float,
    margins: Mapping[str, float],
) -> list[dict[str, Any]]:
    """Slices eligible in both evaluations whose candidate metric is below the champion's minus the margin."""
    champ = {(r["column"], r["value"]): r for r in champion.get("rows", [])}
    out = []
    for r in candidate.get("rows", []):
        c = champ.get((r["column"], r["value"]))
        if c is None or not (r["eligible"] and c["eligible"]) or r["metric"] is None or c["metric"] is None:
            continue
        margin = float(margins.get(r["column"], default_margin))
        if r["metric"] < c["metric"] - margin:
            out.append(
                {
                    "slice": f"{r['column']}={r['value']}",
                    "candidate": r["metric"],
                    "champion": c["metric"],
                    "margin": margin,
                }
            )
    return out


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4f}"


# --------------------------------------------------------------------------- model card (pure)


def _section_markers(name: str) -> tuple[str, str]:
    return f"<!-- loopline:{name}:begin -->", f"<!-- loopline:{name}:end -->"


def set_card_section(card: str, section: str, body: str) -> str:
    """Replace the body of a marked section of a model card (e.g. ``quantization``, filled by the TFLite stage)."""
    begin, end = _section_markers(section)
    i, j = card.find(begin), card.find(end)
    if i < 0 or j < i:
        raise RegistryError(f"model card has no section {section!r} (markers {begin} ... {end})")
    return card[: i + len(begin)] + "\n" + body.strip() + "\n" + card[j:]


def intended_use(card: Mapping[str, Any]) -> str:
    """The card's intended-use paragraph: the profile's own (gate.card.intended_use), or a neutral one in its
    words for the events and the positive class (before: card payments and cardholders on any data set)."""
    if card.get("intended_use"):
        return str(card["intended_use"]).strip()
    events, positive = card.get("events") or "events", card.get("positive") or "the positive class"
    return (
        f"Scores {events} with the probability of {positive}, for ranking them for review and for batch "
        "scoring. Decisions at a threshold should be taken on the calibrated score and re-checked against the "
        "current label rate. Not for use on data from sources or segments absent from the training window, nor "
        "as the sole basis of an adverse decision about a person."
    )


def model_card(
    *, version: str, lineage: Mapping[str, Any], evaluation: Mapping[str, Any], gate: Mapping[str, Any] | None
) -> str:
    """The markdown model card of a version."""
    primary = evaluation["primary"]
    w = evaluation.get("data_window", {})
    t = evaluation["test"]
    st = evaluation.get("settings", {})

    def win(x: Mapping[str, Any] | None) -> str:
        return f"{x.get('start')} to {x.get('end')}" if x else "n/a"

    lines = [
        f"# Model card: {version}",
        "",
        "## Intended use",
        "",
        intended_use((gate or {}).get("settings", {}).get("card") or {}),
        "",
        "## Data",
        "",
        f"- train window: {win(w.get('train'))}",
        f"- valid window (calibration): {win(w.get('valid'))}",
        f"- test window (this evaluation and the gate): {win(w.get('test'))}; {t['rows']} labelled rows, "
        f"{t['positives']} positives ({t['positive_rate']:.2%}); natural and hand labels only",
        f"- feature spec: `{lineage.get('feature_spec_digest')}`",
        f"- parent version (warm start): {lineage.get('parent_version') or 'none'}",
        "",
        "## Metrics vs baselines (test)",
        "",
        f"| scorer | ROC-AUC | PR-AUC | recall @ precision {st.get('precision_target')} | log loss | Brier | ECE |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n, m in evaluation["metrics"].items():
        row = [m.get(k) for k in ("roc_auc", "pr_auc", "recall_at_precision", "log_loss", "brier", "ece")]
        lines.append(f"| {'**' + n + '**' if n == primary else n} | " + " | ".join(_f(v) for v in row) + " |")
    cal = evaluation.get("calibration", {})
    lines += [
        "",
        f"PR-AUC is average precision. ECE uses {st.get('ece_bins')} {st.get('ece_strategy')} bins. Calibration: "
        + (
            f"{cal.get('method')} fitted on the valid split (`calibration.json`)."
            if cal.get("params")
            else "none."
        ),
        "",
        "## Slices",
        "",
    ]
    sl = evaluation["slices"][primary]
    flagged = sl.get("flagged", [])
    lines.append(
        f"{sl['metric']} on the whole test split {_f(sl['whole'])}; slices with at least {sl['min_size']} rows and "
        f"{sl['min_positives']} positives are flagged when more than {sl['margin']} below it. "
        f"Flagged: {', '.join(flagged) if flagged else 'none'}."
    )
    lines += ["", "| slice | rows | positives | metric | delta | status |", "|---|---:|---:|---:|---:|---|"]
    for r in sl["rows"]:
        status = "**flagged**" if r["flagged"] else ("ok" if r["eligible"] else "too small")
        lines.append(
            f"| {r['column']}={r['value']} | {r['rows']} | {r['positives']} | {_f(r['metric'])} | "
            f"{_f(r['delta'])} | {status} |"
        )
    lines += ["", "## Behavioural tests", ""]
    for model, res in evaluation.get("behavioural", {}).items():
        for bt in res["tests"]:
            lines.append(
                f"- {model} / {bt['kind']} / {bt['name']}: {'pass' if bt['passed'] else '**FAIL**'}: {bt['detail']}"
            )
    lines += [
        "",
        "## Limitations",
        "",
        "- Evaluated offline on one recent holdout; labels mature with a delay (chargebacks), so the newest",
        "  events are not in the test split and performance on them is unmeasured until they mature.",
        "- Rare slices (below the minimum size) are listed but not judged; their metrics are noisy.",
        "- Scores shift with the base rate and with drift in the inputs: monitor before trusting thresholds.",
        "- Behavioural tests cover the declared perturbations only.",
        "",
        "## Gate decision",
        "",
    ]
    if gate is None:
        lines.append("Not gated yet.")
    else:
        lines.append(
            f"**{gate['status']}** ({'passed' if gate['passed'] else 'failed'}; {gate['metric']}, champion compared: "
            f"{gate.get('champion_compared') or 'none'})"
        )
        lines.append("")
        lines += [
            f"- {'pass' if c['passed'] else '**FAIL**'} {c['name']}: {c['detail']}" for c in gate["checks"]
        ]
    begin, end = _section_markers("quantization")
    lines += [
        "",
        "## Quantization trade-offs",
        "",
        begin,
        "Not quantized yet: the TFLite stage fills this section (size, latency and metric deltas per variant).",
        end,
        "",
        "## Lineage",
        "",
        f"- git commit: {lineage.get('git', {}).get('commit')}{' (dirty tree)' if lineage.get('git', {}).get('dirty') else ''}",
        f"- dvc.lock sha256: {lineage.get('dvc_lock_sha256')}",
        f"- registered: {lineage.get('created_at')}",
        f"- content digest: {lineage.get('content_digest')}",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the registry (I/O)


class Registry:
    """A registry rooted at a local folder or an ``s3://`` prefix."""

    def __init__(self, root: str) -> None:
        self.root = str(root).rstrip("/") if "://" in str(root) else str(root)

    # ---------------------------------------------------------------- paths
    def _versions(self) -> str:
        return storage.join(self.root, "versions")

    def version_dir(self, version: str) -> str:
        if not _VERSION_RE.match(version):
            raise RegistryError(
                f"version id {version!r} is malformed; list them with `loopline registry list`"
            )
        return storage.join(self._versions(), version)

    def _aliases_dir(self) -> str:
        return storage.join(self.root, "aliases")

    # ---------------------------------------------------------------- versions
    def versions(self) -> list[str]:
        """Complete versions (those with a lineage.json), oldest first (ids start with their UTC time)."""
        found = storage.list_files(self._versions(), LINEAGE, recursive=True)
        ids = {Path(f.replace("://", "/")).parent.name for f in found}
        return sorted(ids)

    def exists(self, version: str) -> bool:
        return storage.exists(storage.join(self.version_dir(version), LINEAGE))

    def incomplete(self, *, min_age: dt.timedelta, now: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Versions whose ``lineage.json`` was never written (a ``register`` killed or cut off midway): their
        files, bytes, newest write and whether ``gc`` may remove them. Never removable: a version an alias
        points to or ever pointed to, or one written within ``min_age`` (a ``register`` still running)."""
        now = now or dt.datetime.now(dt.UTC)
        prefix = self._versions().rstrip("/") + "/"
        files: dict[str, list[str]] = {}
        local = storage.local_path(self._versions())
        listed = (  # locally, a killed write's hidden temporary counts too (S3 has no partial objects)
            [str(p) for p in local.rglob("*") if p.is_file()]
            if local is not None and local.is_dir()
            else storage.list_files(self._versions(), recursive=True)
        )
        for f in listed:
            rel = f.replace("\\", "/")[len(prefix.replace("\\", "/")) :]
            if "/" in rel:
                files.setdefault(rel.split("/", 1)[0], []).append(f)
        complete = set(self.versions())
        state = self.state()
        named = {v for v in state.aliases.values() if v} | {v for vs in state.stacks.values() for v in vs}
        named |= {str(e["version"]) for e in self.history() if e.get("version")}
        found = []
        for version, locs in sorted(files.items()):
            if version in complete:
                continue
            stats = [storage.stat(f) for f in locs]
            newest = dt.datetime.fromtimestamp(max(m for _, m in stats) / 1e9, dt.UTC)
            age = now - newest
            why = (
                "not a version id: remove it by hand if it is not the registry's"
                if not _VERSION_RE.match(version)
                else "an alias names it"
                if version in named
                else f"written {age.total_seconds():.0f} s ago (< --min-age): a register may still be running"
                if age < min_age
                else ""
            )
            found.append(
                {
                    "version": version,
                    "files": len(locs),
                    "bytes": sum(b for b, _ in stats),
                    "newest_write": newest.isoformat(),
                    "removable": not why,
                    "kept_because": why,
                }
            )
        return found

    def gc(self, *, min_age: dt.timedelta, delete: bool = False) -> list[dict[str, Any]]:
        """Remove the removable :meth:`incomplete` versions (only with ``delete``; else a dry run)."""
        found = self.incomplete(min_age=min_age)
        for entry in found:
            if delete and entry["removable"]:
                storage.delete(self.version_dir(entry["version"]))
                entry["removed"] = True
                log.info(
                    "registry gc: removed incomplete version %s (%d files)", entry["version"], entry["files"]
                )
        return found

    def _require(self, version: str) -> None:
        if not self.exists(version):
            known = self.versions()
            raise RegistryError(
                f"version {version!r} is not in the registry {self.root} (known: {known[-5:] or 'none'}); "
                "check `loopline registry list`"
            )

    def lineage(self, version: str) -> dict[str, Any]:
        self._require(version)
        return dict(storage.read_json(storage.join(self.version_dir(version), LINEAGE)))

    def read_json(self, version: str, name: str) -> Any:
        loc = storage.join(self.version_dir(version), name)
        return storage.read_json(loc) if storage.exists(loc) else None

    def register(
        self,
        *,
        model_dir: str,
        evaluation_dir: str,
        created_at: dt.datetime,
        git: Mapping[str, Any] | None = None,
        dvc_lock_sha256: str | None = None,
        parent_version: str | None = None,
    ) -> str:
        """Copy a candidate (its artifacts, calibration and evaluation) into a new version; return its id.

        Idempotent: a candidate whose artifacts are byte-identical to an existing version's returns that id.
        """
        names = [Path(f.replace("://", "/")).name for f in storage.list_files(model_dir)]
        if "spec.json" not in names:
            raise RegistryError(
                f"{model_dir}: not a model directory (no spec.json); pass the training stage's output"
            )
        blobs = {n: storage.read_bytes(storage.join(model_dir, n)) for n in sorted(names)}
        cal = storage.join(evaluation_dir, "calibration.json")
        if storage.exists(cal):
            blobs["calibration.json"] = storage.read_bytes(cal)
        evidence = {}
        for n in EVIDENCE:
            loc = storage.join(evaluation_dir, n)
            if not storage.exists(loc):
                raise RegistryError(f"{loc} is missing; run `loopline evaluate` before registering")
            evidence[n] = storage.read_bytes(loc)
        artifacts = {n: sha256_bytes(b) for n, b in blobs.items()}
        content = sha256_bytes(json.dumps(artifacts, sort_keys=True).encode())
        for v in self.versions():
            if self.lineage(v).get("content_digest") == content:
                log.info("candidate %s is already registered as %s", model_dir, v)
                return v
        version = f"v{created_at.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{content[:8]}"
        vdir = self.version_dir(version)
        for n, b in {**blobs, **evidence}.items():
            storage.write_bytes(storage.join(vdir, n), b)
        evaluation = json.loads(evidence["evaluation.json"])
        spec = json.loads(blobs["spec.json"])
        lineage = {
            "version": version,
            "created_at": created_at.astimezone(dt.UTC).isoformat(),
            "source_model_dir": str(model_dir),
            "git": dict(git or {}),
            "dvc_lock_sha256": dvc_lock_sha256,
            "data_window": evaluation.get("data_window"),
            "feature_spec_digest": spec.get("digest"),
            "parent_version": parent_version,
            "artifacts": artifacts,
            "evidence": {n: sha256_bytes(b) for n, b in evidence.items()},
            "content_digest": content,
        }
        storage.write_json(storage.join(vdir, LINEAGE), lineage)  # last: marks the version complete
        storage.write_bytes(
            storage.join(vdir, CARD),
            model_card(version=version, lineage=lineage, evaluation=evaluation, gate=None).encode(),
        )
        log.info("registered %s (%d artifacts) in %s", version, len(artifacts), self.root)
        return version

    def verify(self, version: str) -> dict[str, bytes]:
        """Every artifact's bytes, each checked against lineage.json; raises TamperedArtifactError."""
        lineage = self.lineage(version)
        vdir = self.version_dir(version)
        out = {}
        for name, expected in sorted(lineage["artifacts"].items()):
            loc = storage.join(vdir, name)
            if not storage.exists(loc):
                raise TamperedArtifactError(
                    f"{loc}: artifact missing from version {version} (lineage records sha256 {expected[:12]}...); "
                    "the version is damaged: restore the file from a backup or re-register the model"
                )
            data = storage.read_bytes(loc)
            actual = sha256_bytes(data)
            if actual != expected:
                raise TamperedArtifactError(
                    f"{loc}: sha256 {actual[:12]}... does not match {expected[:12]}... recorded in {LINEAGE}; "
                    f"refusing to load version {version}. The file was modified after registration: restore it "
                    "or register the model again as a new version"
                )
            out[name] = data
        return out

    def load_version(self, version: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(scorers, feature spec) of a version, loaded from verified bytes only."""

        blobs = self.verify(version)
        with tempfile.TemporaryDirectory(prefix="loopline-version-") as tmp:
            for name, data in blobs.items():
                (Path(tmp) / name).write_bytes(data)
            scorers = models.load_scorers(tmp)
        return dict(scorers), loads_spec(blobs["spec.json"])

    # ---------------------------------------------------------------- aliases
    def state(self) -> AliasState:
        gens = []
        for f in storage.list_files(self._aliases_dir(), "gen-*.json"):
            m = _GEN_RE.match(f.rsplit("/", 1)[-1])
            if m:
                gens.append((int(m.group(1)), f))
        if not gens:
            return AliasState()
        gen, loc = max(gens)
        state = AliasState.from_dict(storage.read_json(loc))
        if state.generation != gen:
            raise RegistryError(
                f"{loc}: holds generation {state.generation}, expected {gen}; the alias log is corrupt"
            )
        return state

    def alias(self, name: str) -> str | None:
        if name not in ALIASES:
            raise RegistryError(f"alias {name!r}: expected one of {list(ALIASES)}")
        return self.state().aliases[name]

    def history(self) -> list[dict[str, Any]]:
        """Every alias change, oldest first (one per generation)."""
        out = []
        for f in storage.list_files(self._aliases_dir(), "gen-*.json"):
            d = storage.read_json(f)
            out.append({"generation": d["generation"], **(d.get("event") or {}), "aliases": d["aliases"]})
        return sorted(out, key=lambda e: e["generation"])

    def _commit(
        self,
        base: AliasState,
        aliases: dict[str, str | None],
        stacks: dict[str, list[str]],
        event: dict[str, Any],
    ) -> AliasState:
        new = AliasState(generation=base.generation + 1, aliases=aliases, stacks=stacks, event=event)
        loc = storage.join(self._aliases_dir(), f"gen-{new.generation:08d}.json")
        data = (json.dumps(new.to_dict(), indent=2, sort_keys=True) + "\n").encode()
        if not storage.create_bytes(loc, data):
            raise ConcurrentUpdateError(
                f"{loc} was created by another process: the aliases changed after generation {base.generation} "
                f"was read, so this {event['action']} of {event.get('version')} was not applied. Check "
                "`loopline registry show` and re-run the gate against the new champion"
            )
        log.info("aliases generation %d: %s", new.generation, event)
        return new

    def promote(
        self,
        version: str,
        *,
        alias: str = "champion",
        expected_generation: int | None = None,
        force: bool = False,
        reason: str = "",
        at: dt.datetime | None = None,
    ) -> AliasState:
        """Point ``alias`` at ``version``. Champion needs a passed gate decision made against the current
        champion (gate.json) unless ``force``. ``expected_generation``: fail unless the aliases are still at
        this generation (the gate's view)."""
        if alias not in ALIASES:
            raise RegistryError(f"alias {alias!r}: expected one of {list(ALIASES)}")
        self.verify(version)  # never point an alias at a damaged version
        base = self.state()
        if expected_generation is not None and base.generation != expected_generation:
            raise ConcurrentUpdateError(
                f"aliases are at generation {base.generation}, not {expected_generation}: another promotion "
                "happened since the gate ran; re-run the gate"
            )
        if alias == "champion" and not force:
            gate = self.read_json(version, GATE)
            if gate is None or not gate.get("passed"):
                why = (
                    "it has not been gated"
                    if gate is None
                    else "; ".join(gate.get("reasons", [])) or "gate failed"
                )
                raise GateRefusedError(
                    f"version {version} did not pass the promotion gate ({why}); fix the model, or pass --force "
                    "with --reason to override"
                )
            if gate.get("champion_compared") != base.aliases["champion"]:
                raise GateRefusedError(
                    f"version {version} was gated against champion {gate.get('champion_compared')}, but the champion "
                    f"is now {base.aliases['champion']}; re-run `loopline register` to gate it again"
                )
        if base.aliases[alias] == version:
            raise RegistryError(f"{version} is already {alias}")
        aliases = dict(base.aliases)
        stacks = {a: list(s) for a, s in base.stacks.items()}
        previous = aliases[alias]
        aliases[alias] = version
        stacks[alias].append(version)
        if alias == "champion" and aliases["challenger"] == version:
            aliases["challenger"] = None  # a challenger that wins stops being the challenger
        event = {
            "action": "promote",
            "alias": alias,
            "version": version,
            "previous": previous,
            "forced": bool(force),
            "reason": reason,
            "at": _iso(at),
        }
        return self._commit(base, aliases, stacks, event)

    def rollback(
        self, *, alias: str = "champion", reason: str = "", at: dt.datetime | None = None
    ) -> AliasState:
        """Restore the alias's previous value (pops its history stack); the restored version is verified."""
        base = self.state()
        if alias not in ALIASES:
            raise RegistryError(f"alias {alias!r}: expected one of {list(ALIASES)}")
        stack = list(base.stacks[alias])
        if len(stack) < 2:
            raise RegistryError(
                f"{alias} has no previous version to roll back to (history: {stack or 'empty'}); promote one instead"
            )
        current, previous = stack[-1], stack[-2]
        self.verify(previous)
        aliases = dict(base.aliases)
        aliases[alias] = previous
        stacks = {a: list(s) for a, s in base.stacks.items()}
        stacks[alias] = stack[:-1]
        event = {
            "action": "rollback",
            "alias": alias,
            "version": previous,
            "previous": current,
            "forced": False,
            "reason": reason,
            "at": _iso(at),
        }
        return self._commit(base, aliases, stacks, event)

    # ---------------------------------------------------------------- gate + card
    def record_gate(self, version: str, gate: Mapping[str, Any]) -> None:
        vdir = self.version_dir(version)
        storage.write_json(storage.join(vdir, GATE), gate)
        evaluation = self.read_json(version, "evaluation.json")
        card = model_card(version=version, lineage=self.lineage(version), evaluation=evaluation, gate=gate)
        old = storage.join(vdir, CARD)
        if storage.exists(old):  # keep sections later stages filled (quantization)
            text = storage.read_bytes(old).decode("utf-8")
            for section in CARD_SECTIONS:
                begin, end = _section_markers(section)
                if begin in text and end in text:
                    body = text[text.index(begin) + len(begin) : text.index(end)]
                    card = set_card_section(card, section, body)
        storage.write_bytes(storage.join(vdir, CARD), card.encode("utf-8"))

    def set_card_section(self, version: str, section: str, body: str) -> None:
        """Fill a section of a version's model card (the TFLite stage writes ``quantization``)."""
        loc = storage.join(self.version_dir(version), CARD)
        storage.write_bytes(
            loc, set_card_section(storage.read_bytes(loc).decode("utf-8"), section, body).encode()
        )

    def summary(self) -> list[dict[str, Any]]:
        """One row per version: id, registered time, gate status, aliases pointing at it."""
        state = self.state()
        rows = []
        for v in self.versions():
            gate = self.read_json(v, GATE) or {}
            lin = self.lineage(v)
            metrics = self.read_json(v, "metrics.json") or {}
            rows.append(
                {
                    "version": v,
                    "created_at": lin.get("created_at"),
                    "status": gate.get("status", "ungated"),
                    "aliases": [a for a, val in state.aliases.items() if val == v],
                    "primary_pr_auc": metrics.get("primary_pr_auc"),
                    "parent_version": lin.get("parent_version"),
                }
            )
        return rows


def _iso(at: dt.datetime | None) -> str:
    return (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat()


# --------------------------------------------------------------------------- the register stage (I/O edge)


def load_champion(champion: str) -> dict[str, Any]:
    """``<registry>/champion`` (or ``/challenger``): the alias's version, verified; else a plain model dir."""

    root, _, last = champion.rstrip("/").rpartition("/")
    if last in ALIASES and root and storage.exists(storage.join(root, "versions")):
        reg = Registry(root)
        version = reg.alias(last)
        if version is None:
            raise FileNotFoundError(f"{champion}: the registry at {root} has no {last}; nothing to compare")
        scorers, spec = reg.load_version(version)
        return {"version": version, "scorers": scorers, "spec": spec}
    return {"version": None, "scorers": models.load_scorers(champion), "spec": models.load_spec(champion)}


def champion_comparison(
    registry: Registry, champion: str, *, features: str, evaluation: Mapping[str, Any], seed: int, cfg: Any
) -> dict[str, Any]:
    """Re-score the champion on the candidate's labelled test rows (its own spec if it differs)."""

    spec = loads_spec(storage.read_bytes(storage.join(features, "spec.json")))
    if spec.get("digest") != evaluation.get("spec_digest"):
        raise RegistryError(
            f"{features}/spec.json differs from the spec the evaluation used; re-run `loopline evaluate` first"
        )
    rows = labelled_rows(storage.read_parquet(storage.join(features, "test.parquet")).to_pandas())
    scorers, cspec = registry.load_version(champion)
    return compare_champion(
        rows, spec=spec, champion={"version": champion, "scorers": scorers, "spec": cspec}, cfg=cfg
    )


def run_register(
    *,
    model: str,
    evaluation: str,
    registry: str,
    features: str,
    gate_cfg: GateConfig,
    evaluate_cfg: Any,
    seed: int,
    created_at: dt.datetime,
    git: Mapping[str, Any] | None = None,
    dvc_lock_sha256: str | None = None,
    parent_version: str | None = None,
) -> dict[str, Any]:
    """Register the candidate, gate it against the current champion, promote it if it passes."""
    reg = Registry(registry)
    version = reg.register(
        model_dir=model,
        evaluation_dir=evaluation,
        created_at=created_at,
        git=git,
        dvc_lock_sha256=dvc_lock_sha256,
        parent_version=parent_version,
    )
    ev = reg.read_json(version, "evaluation.json")
    state = reg.state()
    champion = state.aliases["champion"]
    if champion == version:
        result = {
            "version": version,
            "status": "champion",
            "passed": True,
            "reasons": [],
            "champion_before": champion,
            "champion_after": champion,
            "generation": state.generation,
            "note": "already the champion",
        }
        return result
    comparison = None
    if champion is not None:
        cached = ev.get("champion")
        if cached and cached.get("version") == champion:
            comparison = cached
        else:
            comparison = champion_comparison(
                reg, champion, features=features, evaluation=ev, seed=seed, cfg=evaluate_cfg
            )
    gate = gate_decision(ev, champion=comparison, cfg=gate_cfg)
    gate["generation_seen"] = state.generation
    if comparison is not None:
        gate["champion_metrics"] = comparison["metrics"].get(ev["primary"])
    reg.record_gate(version, gate)
    after = champion
    promoted_to = None
    if gate["status"] in ("champion", "challenger") and state.aliases[gate["status"]] != version:
        reg.promote(
            version,
            alias=gate["status"],
            expected_generation=state.generation,
            reason="gate passed" if gate["passed"] else "near miss: only the champion check failed",
            at=created_at,
        )
        promoted_to = gate["status"]
        after = version if gate["status"] == "champion" else champion
    final = reg.state()
    return {
        "version": version,
        "status": gate["status"],
        "passed": gate["passed"],
        "reasons": gate["reasons"],
        "promoted_to": promoted_to,
        "champion_before": champion,
        "champion_after": after,
        "generation": final.generation,
    }


def git_info(cwd: str | Path = ".") -> dict[str, Any]:
    """The commit and whether the tree is dirty (read-only git commands); empty outside a repository."""
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout.strip()
            != ""
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def file_sha256(path: str | Path) -> str | None:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain table of :meth:`Registry.summary` rows for the CLI."""
    out = [f"{'version':<32} {'status':<10} {'aliases':<20} {'PR-AUC':>7}  registered"]
    for r in rows:
        pr = "" if r["primary_pr_auc"] is None else f"{r['primary_pr_auc']:.4f}"
        out.append(
            f"{r['version']:<32} {r['status']:<10} {','.join(r['aliases']):<20} {pr:>7}  {r['created_at']}"
        )
    return "\n".join(out)
