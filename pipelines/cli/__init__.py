"""The ``loopline`` command line: one sub-command per lifecycle step, listed in pipeline order.

Each area's commands live in their own module (``project``, ``data``, ``labeling``, ``features``,
``training``, ``evaluation``, ``serving``, ``monitoring``, ``lifecycle``, ``reports``, ``dev``), which imports
its stages at the top. This module imports none of them: :class:`LazyGroup` loads a command's module when that command runs or shows its
own help, so ``loopline --help`` and each command pay only for what they use. :data:`COMMANDS` is the listing
(a test keeps its one-line help equal to each command's docstring).
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Annotated, Any

import click
import typer
from typer.core import TyperCommand, TyperGroup

from pipelines.cli.common import setup_logging
from pipelines.core import errors


@dataclass(frozen=True)
class Entry:
    name: str
    module: str  # pipelines.cli.<area>
    panel: str  # the help panel it is listed under
    help: str  # the first line of the command's docstring


def _entries(panel: str, module: str, *commands: tuple[str, str]) -> list[Entry]:
    return [Entry(name, f"pipelines.cli.{module}", panel, text) for name, text in commands]


COMMANDS: list[Entry] = [
    *_entries(
        "Project",
        "lifecycle",
        ("init", "Propose a params profile for your data: types, features, sizes, and leakage warnings."),
        ("run", "Run the pipeline for a profile with DVC, in its own workspace runs/NAME (a normal DVC project)."),
    ),
    *_entries(
        "Project",
        "project",
        ("check-params", "Validate a params file and print its sections."),
        ("params", "Every parameter with its value and origin (the file, or the code's default)."),
    ),
    *_entries(
        "Data",
        "data",
        ("generate", "Write the synthetic card-payment landing files, one CSV per day (existing identical files kept)."),
        ("etl", "Load new or changed landing files into the lake; quarantine rejected rows with reasons."),
        ("lake", "The lake's own records: `lake check` recounts rows in the lake vs ledgers vs run manifests."),
        ("validate", "Run the GX expectation suite (derived from params) on new lake partitions; write Data Docs."),
        ("sample", "Time-ordered train/valid/test split as of a cutoff (immature labels become null); sample train."),
    ),
    *_entries(
        "Labels and features",
        "labeling",
        ("label", "Natural + weak (labeling functions, label model) + hand labels with lineage; active-learning queue."),
    ),
    *_entries(
        "Labels and features",
        "features",
        ("features", "Fit the feature spec on the train split, check for leakage, write feature matrices and the report."),
        ("edge-input", "Build the edge model's input CSV for new raw rows: their columns plus the aggregates from the lake."),
    ),
    *_entries(
        "Training",
        "training",
        ("tune", "Optuna TPE + pruning on one shared study; continues the study up to tune.n_trials finished trials."),
        ("train", "Train the baselines, XGBoost (early stopping) and the Keras edge model (optional distillation)."),
    ),
    *_entries(
        "Evaluation and registry",
        "evaluation",
        ("evaluate", "Evaluate every model and baseline on the test split: metrics, calibration, slices, behavioural tests."),
        ("register", "Register the candidate as a version, run the promotion gate, promote it to champion if it passes."),
        ("registry", "The model registry: versions, aliases (champion, challenger), rollback."),
    ),
    *_entries(
        "Serving and edge",
        "serving",
        ("quantize", "TFLite float32/float16/dynamic-range/int8 variants of the Keras model; publish those passing the parity gate."),
        ("edge-predict", "Score a CSV on the edge runtime (numpy + TFLite only); same as `python -m pipelines.edge.runtime`."),
        ("predict", "Batch-score lake partitions with the champion (point-in-time aggregates as in training)."),
    ),
    *_entries(
        "Monitoring and retraining",
        "monitoring",
        ("monitor", "Drift, prediction drift and matured-label performance of the champion; writes the retrain decision."),
    ),
    *_entries(
        "Monitoring and retraining",
        "lifecycle",
        ("retrain", "Retrain the champion (stateful update or stateless refit), then evaluate, gate, register, quantize."),
        ("backtest", "Replay a timeline period by period; compare never / stateless / stateful / stateful+refit / policy."),
    ),
    *_entries(
        "Reports",
        "reports",
        ("report", "Write the one-page run report linking every report, headline figures on top."),
        ("summary", "Print a short summary of the last pipeline run and where its reports are."),
    ),
    *_entries(
        "Development",
        "dev",
        ("dvc-deps", "Keep dvc.yaml's code deps equal to the modules each stage runs (its import closure)."),
        ("plots-template", "Write the page template that lets `dvc plots show` draw offline (Vega libraries inlined)."),
    ),
]  # fmt: skip
_BY_NAME = {e.name: e for e in COMMANDS}
_LISTING = "loopline.listing"


class LazyGroup(TyperGroup):
    """A command group that imports a command's module only when the command is resolved to run (or to show
    its own help); the group's help lists :data:`COMMANDS` without importing anything."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [e.name for e in COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        entry = _BY_NAME.get(cmd_name)
        if entry is None:
            return None
        if ctx.meta.get(_LISTING):
            return TyperCommand(
                name=entry.name, help=entry.help, short_help=entry.help, rich_help_panel=entry.panel
            )
        return area_group(entry.module).get_command(ctx, cmd_name)

    def invoke(self, ctx: Any) -> Any:
        """The one error handler: a failure the user can fix ends with one line naming the file, key or row
        and the fix (exit 2; exit 1 for a check that refused, e.g. validation or the gate); a bug propagates
        to :func:`main` with its traceback."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as err:
            if not errors.is_expected(err):
                raise
            if ctx.params.get("verbose"):  # -v: the traceback too, before the line
                traceback.print_exc()
            typer.echo(errors.error_line(err), err=True)
            raise typer.Exit(errors.exit_code(err)) from None

    def format_help(self, ctx: Any, formatter: Any) -> None:
        ctx.meta[_LISTING] = True
        try:
            super().format_help(ctx, formatter)
        finally:
            ctx.meta.pop(_LISTING, None)


_GROUPS: dict[str, TyperGroup] = {}


def area_group(module: str) -> TyperGroup:
    """The click group of one area module's ``app`` (imported on first use)."""
    if module not in _GROUPS:
        area: Any = importlib.import_module(module)
        _GROUPS[module] = typer.main.get_group(area.app)
    return _GROUPS[module]


app = typer.Typer(
    name="loopline",
    cls=LazyGroup,
    help="Loopline: raw events to a monitored, self-retraining model. Every step is a DVC stage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


STAGES = {"generate", "etl", "validate", "sample", "label", "features", "tune", "train", "evaluate", "register",
          "quantize", "predict", "monitor", "retrain"}  # fmt: skip


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    setup_logging(verbose)
    recording = os.environ.get("LOOPLINE_RECORD_MEMORY", "1") != "0"  # the tests' in-process CLI calls: off
    if recording and ctx.invoked_subcommand in STAGES and os.path.isdir("reports"):
        atexit.register(record_peak_memory, ctx.invoked_subcommand, os.path.abspath("reports"))


def _vm_hwm() -> int | None:
    """This process's own peak RSS (VmHWM). getrusage's figure would include the RSS of the process that
    started it (dvc, a pytest worker) when that was larger: Linux carries it across fork and exec."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def record_peak_memory(stage: str, reports: str) -> None:
    """``reports/resources/<stage>.json``: the stage's peak resident memory and its largest worker's (the
    summary prints them; a stage near the machine's memory shows before the kernel kills it)."""
    import json
    import resource

    own = _vm_hwm() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    # a child's figure starts from its parent's RSS at the fork (Linux keeps it across exec), so it tells
    # something only when it exceeds the stage's own peak
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    record = {
        "stage": stage,
        "peak_rss_bytes": own,
        "largest_worker_rss_bytes": child if child > own else None,
    }
    try:
        os.makedirs(os.path.join(reports, "resources"), exist_ok=True)
        with open(os.path.join(reports, "resources", f"{stage}.json"), "w", encoding="utf-8") as fh:
            json.dump(record, fh)
    except OSError:  # a read-only or vanished folder: memory figures are a convenience, never a failure
        pass


def main() -> None:
    """The ``loopline`` entry point. An expected failure was already reported in one line by
    :meth:`LazyGroup.invoke`; what reaches here is a bug: its traceback, one line saying so, exit 1."""
    try:
        app()
    except Exception as err:  # typer handles its own exits and usage errors before this
        if errors.is_expected(err):  # raised outside a command (e.g. in the callback)
            typer.echo(errors.error_line(err), err=True)
            sys.exit(errors.exit_code(err))
        traceback.print_exc()
        typer.echo(
            f"error: internal error ({type(err).__name__}); a bug in Loopline or an input it does not check "
            "yet: please report it with the traceback above",
            err=True,
        )
        sys.exit(1)
