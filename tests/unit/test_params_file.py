"""params.yaml stays readable when DVC writes it: `dvc exp run -S key=value` rewrites the file through DVC's
YAML round trip, which before turned one set key into a 214-line diff (quotes, indentation, wrapped lines)."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _changed(before: str, after: str) -> list[str]:
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_setting_one_param_the_way_dvc_does_changes_one_line(tmp_path: Path) -> None:
    from dvc.utils.serialize import MODIFIERS

    params = tmp_path / "params.yaml"
    shutil.copy2(ROOT / "params.yaml", params)
    before = params.read_text()
    with MODIFIERS[".yaml"](str(params)) as doc:  # what `dvc exp run -S gate.champion_margin=0.5` does
        doc["gate"]["champion_margin"] = 0.5
    changed = _changed(before, params.read_text())
    assert len(changed) == 2, "\n".join(changed[:20])
    assert changed[0].lstrip("-").split("#")[0].strip() == "champion_margin: 0.0"
    assert changed[1].lstrip("+").split("#")[0].strip() == "champion_margin: 0.5"
    assert "# candidate - champion" in changed[1], "the comment is kept"
