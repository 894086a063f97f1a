"""DVC-facing files stay usable. params.yaml: `dvc exp run -S key=value` rewrites it through DVC's YAML round
trip, which before turned one set key into a 214-line diff. The plots page template: inlined libraries."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest

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


def test_the_offline_plots_template_inlines_the_libraries_and_keeps_dvcs_placeholders() -> None:
    from pipelines.plots_page import offline_template

    page = offline_template(["var vega = 1;", "var vegaLite = 2;", "var vegaEmbed = 3;"])
    assert "{plot_divs}" in page and "{refresh_tag}" in page and "{scripts}" not in page
    assert page.count("<script>") == 3 and "var vegaEmbed = 3;</script>" in page
    assert "{scripts}" in offline_template(None)  # no npm: DVC's own CDN scripts, as before
    with pytest.raises(ValueError, match="script tag"):
        offline_template(["x = '</script>'"])
