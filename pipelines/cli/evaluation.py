"""Evaluation and the registry: offline evaluation, the promotion gate, versions and aliases."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import ParamsOpt, params_or_exit
from pipelines.core import storage
from pipelines.evaluation.evaluate import run_evaluate
from pipelines.registry.store import (
    ALIASES,
    Registry,
    describe_version,
    file_sha256,
    format_rows,
    git_info,
    load_champion,
    run_register,
)

app = typer.Typer()

registry_app = typer.Typer(help="The model registry: versions, aliases (champion, challenger), rollback.")
app.add_typer(registry_app, name="registry")
RegistryOpt = Annotated[str, typer.Option("--registry", "-r", help="registry root (folder or s3:// prefix)")]


@app.command()
def evaluate(
    features: Annotated[
        str, typer.Option(help="features folder (test/valid.parquet, spec.json)")
    ] = "data/features",
    model: Annotated[str, typer.Option(help="candidate model directory")] = "models/candidate",
    out: Annotated[
        str, typer.Option(help="output folder (metrics, plots, report.html)")
    ] = "reports/evaluation",
    champion: Annotated[
        str | None, typer.Option(help="compare with <registry>/champion (or a model directory)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Evaluate every model and baseline on the test split: metrics, calibration, slices, behavioural tests."""

    p = params_or_exit(params)
    champ = load_champion(champion) if champion else None
    ev = run_evaluate(features=features, model=model, out=out, cfg=p.evaluate, seed=p.seed, champion=champ)
    for name, m in ev["metrics"].items():
        typer.echo(f"{name:<28} PR-AUC {m['pr_auc']:.4f}  ROC-AUC {m['roc_auc']:.4f}  ECE {m['ece']:.4f}")
    s = ev["summary"]
    typer.echo(f"slices flagged: {s['slices_flagged']}; behavioural tests passed: {s['behavioural_passed']}")


@app.command()
def register(
    model: Annotated[str, typer.Option(help="candidate model directory")] = "models/candidate",
    evaluation: Annotated[str, typer.Option(help="its evaluation folder")] = "reports/evaluation",
    registry: Annotated[str, typer.Option(help="registry root (folder or s3:// prefix)")] = "models/registry",
    features: Annotated[
        str, typer.Option(help="features folder: the holdout the champion is re-scored on")
    ] = ("data/features"),
    parent: Annotated[str | None, typer.Option(help="parent version (warm start)")] = None,
    out: Annotated[str | None, typer.Option(help="also write the decision here (or s3://)")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Register the candidate as a version, run the promotion gate, promote it to champion if it passes."""

    p = params_or_exit(params)
    result = run_register(
        model=model, evaluation=evaluation, registry=registry, features=features, gate_cfg=p.gate,
        evaluate_cfg=p.evaluate, seed=p.seed, created_at=dt.datetime.now(dt.UTC), git=git_info(),
        dvc_lock_sha256=file_sha256("dvc.lock"), parent_version=parent,
    )  # fmt: skip
    typer.echo(f"{result['version']}: {result['status']} (gate {'passed' if result['passed'] else 'failed'}); "
               f"champion {result['champion_before']} -> {result['champion_after']}")  # fmt: skip
    for reason in result["reasons"]:
        typer.echo(f"  - {reason}")
    if out is not None:
        storage.write_json(out, result)


@registry_app.command("list")
def registry_list(registry: RegistryOpt = "models/registry") -> None:
    """Every version with its gate status and aliases."""

    reg = Registry(registry)
    typer.echo(format_rows(reg.summary()))
    st = reg.state()
    typer.echo(
        f"aliases (generation {st.generation}): " + ", ".join(f"{a}={v}" for a, v in st.aliases.items())
    )


@registry_app.command("gc")
def registry_gc(
    registry: RegistryOpt = "models/registry",
    delete: Annotated[
        bool, typer.Option("--delete", help="remove what is listed as removable (default: a dry run)")
    ] = False,
    min_age_minutes: Annotated[
        float, typer.Option(min=0, help="leave versions written more recently (a register may be running)")
    ] = 60.0,
) -> None:
    """Find versions a killed or cut-off `register` left without lineage.json (never visible, never
    loaded); list them, and with --delete remove them. A version an alias names is never touched."""

    reg = Registry(registry)
    found = reg.gc(min_age=dt.timedelta(minutes=min_age_minutes), delete=delete)
    if not found:
        typer.echo(f"registry gc {registry}: no incomplete version")
        return
    for e in found:
        verdict = (
            "removed"
            if e.get("removed")
            else ("removable" if e["removable"] else f"kept: {e['kept_because']}")
        )
        typer.echo(
            f"{e['version']}: {e['files']} file(s), {e['bytes']:,} bytes, last write {e['newest_write']}; {verdict}"
        )
    removable = sum(e["removable"] for e in found)
    if not delete and removable:
        typer.echo(f"dry run: {removable} removable; run again with --delete to remove them")


@registry_app.command("show")
def registry_show(
    version: Annotated[
        str | None, typer.Argument(help="version id or alias; default: the alias history")
    ] = None,
    registry: RegistryOpt = "models/registry",
    as_json: Annotated[
        bool, typer.Option("--json", help="the full record (lineage and gate.json) as JSON")
    ] = False,
) -> None:
    """A version's lineage and gate decision (a version id or an alias name), or the alias history."""

    reg = Registry(registry)
    if version is None:
        history = reg.history()
        if as_json:
            typer.echo(json.dumps({"aliases": reg.state().to_dict(), "history": history}, indent=2))
            return
        st = reg.state()
        typer.echo(
            f"aliases (generation {st.generation}): " + ", ".join(f"{a}={v}" for a, v in st.aliases.items())
        )
        for h in history[-10:]:
            typer.echo("  " + "  ".join(f"{k}={v}" for k, v in h.items() if not isinstance(v, dict | list)))
        return
    if version in ALIASES:
        resolved = reg.alias(version)
        if resolved is None:
            typer.echo(f"error: no {version} in {registry}", err=True)
            raise typer.Exit(1)
        version = resolved
    lineage = reg.lineage(version)
    gate = reg.read_json(version, "gate.json")
    if as_json:
        typer.echo(json.dumps({"lineage": lineage, "gate": gate}, indent=2))
        return
    typer.echo(describe_version(lineage, gate, reg.state().aliases))
    typer.echo("(--json: the full record)")


@registry_app.command("promote")
def registry_promote(
    version: Annotated[str, typer.Argument(help="version id")],
    alias: Annotated[str, typer.Option(help="champion or challenger")] = "champion",
    force: Annotated[bool, typer.Option(help="override a failed or stale gate (needs --reason)")] = False,
    reason: Annotated[str, typer.Option(help="why (recorded in the alias history)")] = "",
    registry: RegistryOpt = "models/registry",
) -> None:
    """Point an alias at a version; champion requires a passed gate against the current champion."""

    if force and not reason:
        typer.echo("error: --force needs --reason (it is recorded in the alias history)", err=True)
        raise typer.Exit(2)
    st = Registry(registry).promote(version, alias=alias, force=force, reason=reason)
    typer.echo(f"{alias} = {version} (generation {st.generation})")


@registry_app.command("rollback")
def registry_rollback(
    alias: Annotated[str, typer.Option(help="champion or challenger")] = "champion",
    reason: Annotated[str, typer.Option(help="why (recorded in the alias history)")] = "",
    registry: RegistryOpt = "models/registry",
) -> None:
    """Restore the alias's previous version from its history."""

    st = Registry(registry).rollback(alias=alias, reason=reason)
    previous = (st.event or {}).get("previous")
    typer.echo(f"{alias} = {st.aliases[alias]} (was {previous}; generation {st.generation})")
