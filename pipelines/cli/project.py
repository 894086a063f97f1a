"""Project commands that need no stage: check a params file, show every parameter and where it comes from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml

from pipelines.cli.common import ParamsOpt, params_or_exit
from pipelines.core.config import edit_target, params_comments, params_origins
from pipelines.core.errors import InputError
from pipelines.data.sources import adapter_for
from pipelines.lifecycle.profile_run import pipeline_param_keys

app = typer.Typer()
params_app = typer.Typer(help="Every parameter with its value and origin (the file, or the code's default).")
app.add_typer(params_app, name="params")


@app.command("check-params")
def check_params(params: ParamsOpt = Path("params.yaml")) -> None:
    """Validate a params file and print its sections."""
    p = params_or_exit(params)
    try:
        adapter_for(p)  # the source's mapping: renames, drop, label and time columns
    except InputError as err:  # the adapter's own checks of the source mapping
        raise InputError(f"{edit_target(params, params.read_text(encoding='utf-8'))}: {err}") from None
    typer.echo(f"{params}: ok (source={p.source.kind}, {len(p.schema.columns)} columns)")


@params_app.command("show")
def params_show(
    params: ParamsOpt = Path("params.yaml"),
    changed: Annotated[
        bool, typer.Option("--changed", help="only what the file sets to a non-default value")
    ] = False,
    prefix: Annotated[
        str | None, typer.Argument(help="only keys under this section, e.g. train.keras")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="a JSON list of {key, value, origin}")] = False,
) -> None:
    """Print every parameter the stages read: its value and its origin (the params file or the default)."""
    p = params_or_exit(params)
    raw = yaml.safe_load(params.read_text(encoding="utf-8")) or {}
    rows = [
        (k, v, o)
        for k, v, o in params_origins(raw, p)
        if (not changed or o == "file") and (prefix is None or k == prefix or k.startswith(prefix + "."))
    ]
    if as_json:
        docs = params_comments()
        typer.echo(
            json.dumps(
                [{"key": k, "value": v, "origin": o, "doc": docs.get(k)} for k, v, o in rows], indent=1
            )
        )
        return
    docs = params_comments()
    width = max((len(k) for k, _, _ in rows), default=0)
    for key, value, origin in rows:
        text = json.dumps(value)
        text = text if len(text) <= 60 else text[:57] + "..."
        note = f"  # {docs[key]}" if key in docs else ""
        typer.echo(f"{key:<{width}}  {text}  ({origin}){note}")
    dvc_yaml = params.parent / "dvc.yaml"  # keys its stages declare one by one must stay in the file
    declared = (
        set(pipeline_param_keys(yaml.safe_load(dvc_yaml.read_text()) or {})) if dvc_yaml.exists() else set()
    )
    n_same = sum(o == "file (= default)" and k not in declared for k, _, o in rows)
    n_file = sum(o.startswith("file") for _, _, o in rows)
    same = f" ({n_same} set to their default: delete them there)" if n_same else ""
    typer.echo(f"{len(rows)} parameters: {n_file} from {params}{same}, {len(rows) - n_file} defaults")
