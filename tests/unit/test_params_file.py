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


def _dvc_set(params: Path, *overrides: str) -> list[str]:
    """Apply ``dvc exp run -S`` overrides the way DVC does (its Hydra path, not a plain YAML round trip, which
    kept flow-style lists that `-S` then rewrote: the earlier test passed while DVC changed 60 lines)."""
    from dvc.utils.hydra import apply_overrides

    before = params.read_text()
    apply_overrides(str(params), list(overrides))
    return _changed(before, params.read_text())


def test_setting_one_param_the_way_dvc_does_changes_one_line(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy2(ROOT / "params.yaml", params)
    changed = _dvc_set(params, "evaluate.min_slice_size=300")
    assert len(changed) == 2, "\n".join(changed[:20])
    assert changed[0].lstrip("-").split("#")[0].strip() == "min_slice_size: 500"
    assert changed[1].lstrip("+").split("#")[0].strip() == "min_slice_size: 300"
    assert "# rows; smaller slices" in changed[1], "the comment is kept"


def test_adding_a_default_key_the_way_dvc_does_adds_only_it(tmp_path: Path) -> None:
    """params.yaml holds only what the example sets; `dvc exp run -S +train.keras.epochs=20` adds a key."""
    from pipelines.core.config import load_params

    params = tmp_path / "params.yaml"
    shutil.copy2(ROOT / "params.yaml", params)
    changed = _dvc_set(params, "+train.keras.epochs=20")
    assert [c.lstrip("+").strip() for c in changed] == ["keras:", "epochs: 20"], changed
    p = load_params(params)
    assert p.train.keras.epochs == 20
    assert p.train.keras.patience == load_params(ROOT / "params.yaml").train.keras.patience


def test_the_offline_plots_template_inlines_the_libraries_and_keeps_dvcs_placeholders() -> None:
    from pipelines.core.plots_page import offline_template

    page = offline_template(["var vega = 1;", "var vegaLite = 2;", "var vegaEmbed = 3;"])
    assert "{plot_divs}" in page and "{refresh_tag}" in page and "{scripts}" not in page
    assert page.count("<script>") == 3 and "var vegaEmbed = 3;</script>" in page
    assert "{scripts}" in offline_template(None)  # no npm: DVC's own CDN scripts, as before
    with pytest.raises(ValueError, match="script tag"):
        offline_template(["x = '</script>'"])


@pytest.mark.parametrize("name", ["params.yaml", "profiles/synthetic.yaml"])
def test_no_default_is_written_in_two_places(name: str) -> None:
    """The code's typed models hold every default; a params file holds what its example changes, plus the
    keys a dvc.yaml stage declares one by one (DVC stops a stage whose declared key is missing)."""
    import yaml

    from pipelines.core.config import load_params, params_origins
    from pipelines.lifecycle.profile_run import has_key, pipeline_param_keys

    declared = pipeline_param_keys(yaml.safe_load((ROOT / "dvc.yaml").read_text()))
    raw = yaml.safe_load((ROOT / name).read_text())
    assert [k for k in declared if not has_key(raw, k)] == [], "DVC needs every declared key in the file"
    twice = [k for k, _, o in params_origins(raw, load_params(ROOT / name)) if o == "file (= default)"]
    assert [k for k in twice if k not in declared] == [], (
        f"{name} restates defaults of pipelines/core/config.py"
    )
