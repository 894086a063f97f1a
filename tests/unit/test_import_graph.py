"""The import graph and dvc.yaml's code deps: every stage declares every module it may run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.devtools import import_graph as g

ROOT = Path(__file__).resolve().parents[2]


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


TOY = {
    "pipelines/__init__.py": "",
    "pipelines/cli.py": """
        import typer
        from pipelines.core import VERSION
        app = typer.Typer()

        def _helper():
            from pipelines import shared
            return shared

        @app.command("go-on")
        def go_on():
            from pipelines.stage_a import run
            _helper()
            run()

        @app.command()
        def other_cmd():
            from pipelines.stage_c import run
            run()
        """,
    "pipelines/core.py": "VERSION = 1\n",
    "pipelines/shared.py": "X = 1\n",
    "pipelines/stage_a.py": """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from pipelines import stage_c
        def run():
            from pipelines.deep import helper  # heavy, loaded on use
            return helper
        """,
    "pipelines/deep/__init__.py": "from pipelines.deep.helper import f\n",
    "pipelines/deep/helper.py": "def f():\n    return 1\n",
    "pipelines/stage_c.py": "from pipelines import stage_a\ndef run():\n    pass\n",
    "dvc.yaml": """
        # top comment
        stages:
          a:
            cmd: loopline go-on --out x
            deps:
              - data/in   # data first
              - pipelines/stage_a.py
            outs:
              - x
          c:
            cmd: loopline other-cmd
            deps:
              - pipelines/
        """,
}


def test_a_stage_runs_its_command_closure_with_function_local_imports(tmp_path: Path) -> None:
    root = _tree(tmp_path, TOY)
    code = g.stage_code(root)
    assert code["a"] == [
        "pipelines/__init__.py",
        "pipelines/cli.py",
        "pipelines/core.py",  # the CLI's top-level import runs for every command
        "pipelines/deep/__init__.py",  # a package's __init__ runs before its module
        "pipelines/deep/helper.py",  # imported inside a function of stage_a
        "pipelines/shared.py",  # reached through the CLI's helper
        "pipelines/stage_a.py",
    ], "stage_c is another command's and a type-only import: not run by stage a"
    assert "pipelines/stage_a.py" in code["c"], "stage_c imports stage_a at the top"
    assert g.missing_deps(root) == {
        "a": [
            "pipelines/__init__.py",
            "pipelines/cli.py",
            "pipelines/core.py",
            "pipelines/deep/__init__.py",
            "pipelines/deep/helper.py",
            "pipelines/shared.py",
        ]
    }, "a folder dep (pipelines/) covers every file in it"


def test_write_deps_keeps_the_other_deps_and_comments(tmp_path: Path) -> None:
    root = _tree(tmp_path, TOY)
    text = g.write_deps(root / "dvc.yaml", g.stage_code(root))
    (root / "dvc.yaml").write_text(text)
    assert "# top comment" in text and "- data/in   # data first" in text
    assert g.missing_deps(root) == {}
    assert text.index("- data/in") < text.index("- pipelines/__init__.py")
    assert text.count("- pipelines/stage_a.py") == 2  # stages a and c, once each


def test_a_command_reaching_a_module_through_a_dotted_import_depends_on_it(tmp_path: Path) -> None:
    """``import pipelines.a`` binds ``pipelines``: a command using ``pipelines.a.f()`` runs a.py (and b.py,
    which a imports), not only the package's ``__init__``. Before, only ``pipelines/__init__.py`` counted."""
    root = _tree(
        tmp_path,
        {
            "pipelines/__init__.py": "",
            "pipelines/cli/__init__.py": "",
            "pipelines/cli/area.py": """
                import typer
                import pipelines.a
                import pipelines.c
                app = typer.Typer()

                @app.command()
                def go():
                    pipelines.a.f()
                """,
            "pipelines/a.py": "from pipelines import b\ndef f():\n    return b\n",
            "pipelines/b.py": "",
            "pipelines/c.py": "",
            "dvc.yaml": "stages:\n  s:\n    cmd: loopline go\n    deps:\n      - x\n",
        },
    )
    code = g.stage_code(root)["s"]
    assert {"pipelines/a.py", "pipelines/b.py", "pipelines/cli/area.py"} <= set(code)
    # pipelines.c is bound to the same name, so it counts too: by name alone the analysis errs on the side of
    # a dep too many, never one too few


def test_cycles_layers_and_upward_imports(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "pipelines/__init__.py": "",
            "pipelines/low.py": "def f():\n    from pipelines import high  # upward\n",
            "pipelines/high.py": "from pipelines import low\n",
            "pipelines/alone.py": "",
            "pyproject.toml": '[[tool.importlinter.contracts]]\nname = "l"\ntype = "layers"\n'
            'containers = ["pipelines"]\nlayers = ["high", "low | alone"]\n',
        },
    )
    figures = g.report(root)
    assert figures.cycles == [["pipelines.high", "pipelines.low"]]
    upward = figures.upward
    assert [(i.source, i.target, i.local, i.reason) for i in upward] == [
        ("pipelines.low", "pipelines.high", True, "upward")
    ]
    text = g.format_report(figures)
    assert "cycles: 1" in text and "upward imports (against the declared layers): 1" in text


def test_every_stage_of_the_project_declares_the_code_it_runs() -> None:
    missing = g.missing_deps(ROOT)
    assert missing == {}, (
        "dvc.yaml misses code its stages run (so `dvc repro` could say 'up to date' over stale results): "
        f"{missing}; fix: loopline dvc-deps --write"
    )


def test_one_removed_dep_line_is_reported_by_the_check(tmp_path: Path) -> None:
    text = (ROOT / "dvc.yaml").read_text()
    lines = text.splitlines(keepends=True)
    # drop pipelines/core/metrics.py from the evaluate stage only
    start = lines.index("  evaluate:\n")
    at = next(i for i in range(start, len(lines)) if lines[i].strip() == "- pipelines/core/metrics.py")
    stale = tmp_path / "dvc.yaml"
    stale.write_text("".join(lines[:at] + lines[at + 1 :]))
    assert g.missing_deps(ROOT, stale) == {"evaluate": ["pipelines/core/metrics.py"]}

    result = CliRunner().invoke(app, ["dvc-deps", "--check", "--dvc-yaml", str(stale), "--root", str(ROOT)])
    assert result.exit_code == 1
    assert "stage 'evaluate' runs code its deps miss: pipelines/core/metrics.py" in result.output
    assert "loopline dvc-deps --write" in result.output

    elsewhere = CliRunner().invoke(app, ["dvc-deps", "--check", "--dvc-yaml", str(stale)])
    assert elsewhere.exit_code == 2 and "no pipelines/cli here" in elsewhere.output


@pytest.mark.parametrize("args", [[], ["--check", "--write"]])
def test_dvc_deps_wants_one_mode(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["dvc-deps", *args])
    assert result.exit_code == 2
    assert "exactly one of --check or --write" in result.output


def test_the_project_has_no_cycles_and_no_upward_imports() -> None:
    figures = g.report(ROOT)
    assert figures.cycles == []
    assert [(i.source, i.target, i.lineno) for i in figures.upward] == []


def test_every_module_has_a_place_in_the_layers_contract() -> None:
    """import-linter checks only the modules a contract names: a new module must join a layer."""
    named = {name for layer in g.declared_layers(ROOT / "pyproject.toml") for name in layer}
    graph = g.read_graph(ROOT)
    unplaced = sorted(
        m for m in graph.modules if m != g.PACKAGE and not any(m == n or m.startswith(n + ".") for n in named)
    )
    assert unplaced == [], f"add these to a layer in pyproject.toml [tool.importlinter]: {unplaced}"


def test_the_graph_script_reads_this_project_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    """``make graph`` runs the module without arguments: it must find the project root from its own place."""
    assert g.main([]) == 0
    out = capsys.readouterr().out
    assert "cycles: 0" in out and "upward imports (against the declared layers): 0" in out
    assert "declared layers (pyproject.toml, top first): " in out
    assert "  pipelines.core | pipelines.edge" in out


def test_every_module_lives_in_a_lifecycle_package() -> None:
    """The layout shows the architecture: the top of pipelines/ holds only the package marker."""
    top = sorted(p.name for p in (ROOT / "pipelines").glob("*.py"))
    assert top == ["__init__.py"], top
    declared = {name for layer in g.declared_layers(ROOT / "pyproject.toml") for name in layer}
    packages = {f"pipelines.{p.parent.name}" for p in (ROOT / "pipelines").glob("*/__init__.py")}
    assert packages == declared, "each lifecycle package is one name in the layers contract"
