"""The command line: pipeline-order listing without importing the stages, and a listing that matches the
commands."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from pipelines.cli import COMMANDS, app, area_group

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command_in_pipeline_order_by_area() -> None:
    result = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    positions = [result.output.find(f"│ {e.name} ") for e in COMMANDS]
    assert all(p > 0 for p in positions), [e.name for e, p in zip(COMMANDS, positions, strict=True) if p <= 0]
    assert positions == sorted(positions), "commands are listed in pipeline order"
    for panel in ("Data", "Training", "Evaluation and registry", "Monitoring and retraining"):
        assert panel in result.output


def test_the_listing_imports_no_stage_and_a_command_only_its_own() -> None:
    code = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from pipelines.cli import app\n"
        "{call}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('pipelines.', 'pandas', 'xgboost')))))\n"
    )

    def loaded(call: str) -> set[str]:
        out = subprocess.run(
            [sys.executable, "-c", code.format(call=call)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        return set(json.loads(out.stdout.strip().splitlines()[-1]))

    listing = loaded("CliRunner().invoke(app, ['--help'])")
    assert not {m for m in listing if not m.startswith("pipelines.cli")} - {
        "pipelines.core",
        "pipelines.core.config",
        "pipelines.core.errors",
    }, listing
    one = loaded("CliRunner().invoke(app, ['etl', '--help'])")
    assert "pipelines.data.etl" in one and "pipelines.cli.data" in one
    assert "pipelines.training.train" not in one and "pipelines.cli.training" not in one


def test_each_listed_help_line_is_its_commands_docstring_and_nothing_is_unlisted() -> None:
    listed = {e.name: e for e in COMMANDS}
    defined: dict[str, str] = {}
    for module in sorted({e.module for e in COMMANDS}):
        group = area_group(module)
        for name, command in group.commands.items():
            defined[name] = module
            text = (command.help or "").strip().splitlines()[0]
            assert name in listed, f"{module} defines '{name}', missing from pipelines.cli.COMMANDS"
            assert listed[name].module == module, (
                f"'{name}' lives in {module}, listed under {listed[name].module}"
            )
            assert listed[name].help == text, f"'{name}': listed {listed[name].help!r}, docstring {text!r}"
    assert set(listed) == set(defined), f"listed but defined nowhere: {sorted(set(listed) - set(defined))}"


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["etll"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_area_modules_define_their_commands_at_module_level() -> None:
    """Every area module's app is a typer app whose commands are top-level functions (the dvc-deps analysis
    reads them from the source)."""
    for module in sorted({e.module for e in COMMANDS}):
        path = ROOT / (module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        group = area_group(module)
        for command in group.commands.values():
            if hasattr(command, "commands"):  # the registry group
                continue
            assert command.callback is not None and command.callback.__name__ in names
    assert isinstance(app, typer.Typer)


def test_registry_show_reads_as_a_summary_with_the_failed_check_first_class() -> None:
    """`loopline registry show` printed 94 lines of raw JSON; now a summary (`--json` keeps the record)."""
    from pipelines.registry.store import describe_version

    lineage = {"version": "v2", "created_at": "2026-12-07T16:30:09+00:00", "parent_version": "v1",
               "git": {"commit": "f86eb0ce331a0e78", "dirty": True},
               "data_window": {"train": {"start": "2025-01-01T00:00:05+00:00", "end": "2025-01-24T23:59:56+00:00"}},
               "artifacts": {"xgboost.ubj": "ab", "spec.json": "cd"}}  # fmt: skip
    gate = {"status": "rejected", "passed": False, "metric": "pr_auc", "primary": "xgboost",
            "checks": [{"name": "beats_champion", "passed": False, "detail": "0.41 vs champion 0.46"},
                       {"name": "behavioural", "passed": True, "detail": "all passed"}]}  # fmt: skip
    text = describe_version(lineage, gate, {"champion": "v1", "challenger": "v2"})
    lines = text.splitlines()
    assert lines[0] == "version   v2  (challenger)"
    assert "(dirty)" in lines[1] and "parent v1" in lines[1]
    assert "train 2025-01-01..2025-01-24, valid -, test -" in text
    assert "  FAIL beats_champion: 0.41 vs champion 0.46" in lines and "gate      rejected: failed" in text
    assert len(lines) < 15


def test_a_url_given_to_a_local_path_option_is_refused_not_written_as_a_folder(tmp_path, monkeypatch) -> None:
    """`validate --reports s3://bucket/...` exited 0 and wrote 146 files into a local folder `s3:/bucket/...`
    (a Path option collapses `//`). Every local-path option now refuses a URL in one line, writing nothing."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in (
        ["validate", "--reports", "s3://bucket/reports/validation"],
        ["report", "--reports", "s3://bucket/reports"],
        ["summary", "--reports", "s3://bucket/reports"],
        ["check-params", "--params", "s3://bucket/params.yaml"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "is a URL" in result.output and "local path only" in result.output, result.output
    assert list(tmp_path.iterdir()) == []  # no s3: folder


def test_a_missing_or_empty_landing_folder_is_an_error_not_a_green_run(tmp_path) -> None:
    """A mistyped landing folder was "0 file(s) processed", exit 0."""
    runner = CliRunner()
    base = ["etl", "--lake", str(tmp_path / "lake"), "--quarantine", str(tmp_path / "q"),
            "--params", str(ROOT / "params.yaml")]  # fmt: skip
    missing = runner.invoke(app, [*base, "--landing", str(tmp_path / "landin")])
    assert missing.exit_code == 2 and f"--landing {tmp_path / 'landin'}: no such folder" in missing.output
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "notes.txt").write_text("not a landing file")
    empty = runner.invoke(app, [*base, "--landing", str(tmp_path / "landing")])
    assert (
        empty.exit_code == 2
        and "no landing file (source.kind synthetic, files matching *.csv)" in empty.output
    )
    assert not (tmp_path / "lake" / "_etl" / "manifests").exists()
    allowed = runner.invoke(app, [*base, "--landing", str(tmp_path / "landing"), "--allow-empty"])
    assert allowed.exit_code == 0 and "0 file(s) processed" in allowed.output, allowed.output


def test_local_path_options_keep_their_defaults(tmp_path, monkeypatch) -> None:
    """Typer passes a Path default through the option's parser: it must come back unchanged."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    result = CliRunner().invoke(app, ["check-params"])  # --params defaults to params.yaml
    assert result.exit_code == 0, result.output


def test_the_handler_tells_user_errors_from_bugs() -> None:
    from pipelines.core import errors
    from pipelines.registry.store import GateRefusedError, RegistryError

    assert errors.is_expected(RegistryError("x")) and errors.exit_code(RegistryError("x")) == 2
    assert errors.is_expected(FileNotFoundError("read s3://b/k: no such object"))
    assert errors.is_expected(errors.InputError("x")) and isinstance(errors.InputError("x"), ValueError)
    assert errors.exit_code(GateRefusedError("gate")) == 1  # a check that refused
    assert not errors.is_expected(KeyError("amount")) and not errors.is_expected(ValueError("bug"))
    assert errors.error_line(RegistryError("version v1\n is not   here")) == "error: version v1 is not here"


def _bad_args(tmp_path: Path) -> dict[str, list[str]]:
    """One bad argument per command that reads input: a missing file or folder, a malformed value."""
    missing = str(tmp_path / "missing")
    params = ["--params", missing + ".yaml"]
    return {
        "check-params": params,
        "params": ["show", *params],
        "generate": ["--start", "not-a-date", "--days", "1", "--out", str(tmp_path / "g")],
        "etl": ["--landing", missing, "--lake", str(tmp_path / "lake"), "--date", "2024-13-45"],
        "etl --as-of": ["--as-of", "yesterday"],
        "retrain --as-of": ["--as-of", "yesterday"],
        "validate": params,
        "sample": params,
        "label": params,
        "features": params,
        "tune": params,
        "train": params,
        "evaluate": params,
        "register": params,
        "quantize": params,
        "predict": params,
        "monitor": params,
        "retrain": params,
        "init": ["--from", missing + ".csv", "--out", str(tmp_path / "profiles")],
        "run": [missing],
        "edge-predict": ["--model", missing + ".tflite", "--spec", missing + ".json", "--input", missing],
        "edge-input": ["--rows", missing + ".csv", "--lake", missing, "--spec", missing + ".json"],
        "registry": ["show", "--registry", missing, "v9"],
        "backtest": params,
        "lake": ["bogus"],
    }


def test_each_command_given_a_bad_argument_says_so_in_one_line_and_exits_2(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        (ROOT / "params.yaml").read_text()
    )  # the option, not params, is bad
    cases = _bad_args(tmp_path)
    for name, args in cases.items():
        result = CliRunner().invoke(app, [name.split()[0], *args])
        out = result.output.strip().splitlines()
        assert result.exit_code == 2, (name, result.exit_code, result.output, result.exception)
        assert "Traceback" not in result.output, (name, result.output)
        if " --" in name:  # the line names the option and the form it takes
            assert f"error: {name.split()[1]} 'yesterday': expected" in result.output, result.output
        assert (
            len([ln for ln in out if ln.startswith(("error:", "Error", "│ ", "╭", "╰", "Usage:", "Try"))])
            >= 1
        ), (
            name,
            result.output,
        )
    stage_commands = {e.name for e in COMMANDS} - {"summary", "report", "dvc-deps", "plots-template"}
    assert stage_commands <= {c.split()[0] for c in cases}, stage_commands - set(cases)


def test_a_bug_shows_its_traceback_and_exits_1(tmp_path) -> None:
    """A bug (not a user error) must not hide behind a one-line message."""
    code = (
        "import sys\n"
        "from pipelines.cli import main, common\n"
        "def broken(path):\n"
        "    raise KeyError('amount')\n"
        "common.load_params = broken\n"
        "import pipelines.cli.common as c; c.load_params = broken\n"
        "sys.argv = ['loopline', 'check-params', '--params', 'params.yaml']\n"
        "main()\n"
    )
    (tmp_path / "params.yaml").write_text("{}\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert "Traceback (most recent call last)" in run.stderr and "KeyError: 'amount'" in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: internal error (KeyError)")


def test_verbose_shows_the_traceback_of_an_expected_error_too(tmp_path) -> None:
    """`loopline -v ...` is how a user asks for the traceback of a one-line error (README, docs/guide.md)."""
    args = ["registry", "show", "--registry", str(tmp_path / "missing"), "v9"]
    quiet = CliRunner().invoke(app, args)
    loud = CliRunner().invoke(app, ["-v", *args])
    assert quiet.exit_code == loud.exit_code == 2
    assert "Traceback" not in quiet.output and "Traceback (most recent call last)" in loud.output
    assert loud.output.strip().splitlines()[-1].startswith("error: version 'v9' is not in the registry")
