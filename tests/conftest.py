"""Shared fixtures: the repository root, the real data sets beside it, and small generated lakes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("LOOPLINE_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))
HOTEL_ZIP = SHARED_DATASETS / "hotel_bookings.csv.zip"

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["LOOPLINE_RECORD_MEMORY"] = "0"  # in-process CLI tests would record pytest's memory into reports/
pytest_plugins = ["s3_fixtures"]  # moto S3 server on 127.0.0.1 (tests/s3_fixtures.py)


@pytest.fixture(autouse=True)
def _params_file_env():  # type: ignore[no-untyped-def]
    """The CLI records which params file messages should name (LOOPLINE_PARAMS_FILE); in-process CLI tests
    must not pass it on to the next test."""
    before = os.environ.get("LOOPLINE_PARAMS_FILE")
    yield
    if before is None:
        os.environ.pop("LOOPLINE_PARAMS_FILE", None)
    else:
        os.environ["LOOPLINE_PARAMS_FILE"] = before


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def hotel_zip() -> Path:
    """The public hotel-bookings CSV (zip); skips where ../shared/datasets is absent, as on a user's machine."""
    if not HOTEL_ZIP.exists():
        pytest.skip(
            f"real data set not found at {HOTEL_ZIP} (it lives in ../shared/datasets beside the repo)"
        )
    return HOTEL_ZIP


@pytest.fixture(scope="session")
def params():
    from pipelines.core.config import load_params

    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def synthetic_lake(tmp_path_factory, params):
    """A small synthetic lake (20 days x 2,000 rows), built once per session with the real stages."""
    from pipelines.data.etl import run_etl
    from pipelines.data.generate import generate_landing

    base = tmp_path_factory.mktemp("synthetic")
    cfg = params.synthetic.model_copy(update={"days": 20, "rows_per_day": 2000})
    generate_landing(cfg, out=str(base / "landing"), seed=params.seed, progress=False)
    run_etl(
        landing=str(base / "landing"),
        lake=str(base / "lake"),
        quarantine=str(base / "quarantine"),
        params=params,
        progress=False,
    )
    return base
