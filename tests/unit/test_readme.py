"""The README's commands run as written: each `loopline` line names a command and options that exist, each
`make` target is in the Makefile, and the page stays short enough to read (issue 28: at most 250 lines)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from pipelines.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _fenced_commands(tool: str) -> list[list[str]]:
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith(tool + " "):
                out.append(shlex.split(line)[1:])
    return out


def test_the_readme_is_short() -> None:
    assert len(README.splitlines()) <= 250


def test_every_loopline_command_in_the_readme_exists_with_its_options() -> None:
    commands = _fenced_commands("loopline")
    assert len(commands) >= 6
    runner = CliRunner()
    for argv in commands:
        words = [w for w in argv if not w.startswith("-")]
        path = words[:1]
        result = runner.invoke(app, [*path, "--help"], terminal_width=200)
        if result.exit_code != 0 or "Commands" in result.output:  # a group: the sub-command is the next word
            path = words[:2]
            result = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, (argv, result.output)
        for option in (w.split("=", 1)[0] for w in argv if w.startswith("--")):
            assert option in result.output, f"README: `loopline {' '.join(argv)}`: {option} is not an option"


def test_every_make_target_in_the_readme_exists() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = {argv[0] for argv in _fenced_commands("make")}
    assert {"run", "test"} <= targets
    for target in targets:
        assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), (
            f"README: make {target}: no such target"
        )
