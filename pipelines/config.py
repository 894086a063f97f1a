"""Typed configuration: ``params.yaml`` loaded once per stage into validated objects.

Every section is a pydantic model with ``extra="forbid"``, so a typo in a key fails at load time.
A bad file raises :class:`ConfigError` whose message is one line per problem, naming the dotted key
path, the bad value and what is expected, e.g.::

    params.yaml: synthetic.rows_per_day = -5: Input should be greater than 0

Each stage adds its own section model here; a stage reads only the sections it needs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ColumnSpec",
    "ConfigError",
    "EtlConfig",
    "Params",
    "SchemaConfig",
    "SourceConfig",
    "SyntheticConfig",
    "ValidationConfig",
    "load_params",
]

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """params.yaml (or a profile) is invalid. The message names every bad key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- schema


ColumnType = Literal["string", "category", "float", "int", "bool", "timestamp"]


class ColumnSpec(_Model):
    """One feature column of the event table, after the source adapter's mapping."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: ColumnType
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None  # for category columns: the known vocabulary (others warn, not reject)
    critical_allowed: bool = False  # if true, a value outside `allowed` is rejected (quarantined)
    high_cardinality: bool = False  # hint for the feature stage: hash instead of one-hot
    description: str = ""

    @model_validator(mode="after")
    def _range_is_ordered(self) -> ColumnSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        if self.type not in ("float", "int") and (self.min is not None or self.max is not None):
            raise ValueError(f"min/max apply to float and int columns, not {self.type}")
        return self


class SchemaConfig(_Model):
    """The event-table contract (DESIGN.md): fixed core columns plus the declared feature columns."""

    entity_key: str = Field(default="entity_id", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    label_values: list[int] = Field(default_factory=lambda: [0, 1], min_length=2)
    columns: list[ColumnSpec] = Field(min_length=1)

    @field_validator("columns")
    @classmethod
    def _unique_names(cls, cols: list[ColumnSpec]) -> list[ColumnSpec]:
        names = [c.name for c in cols]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate column names {dupes}; each column is declared once")
        reserved = {"event_id", "event_time", "label", "label_time"} & set(names)
        if reserved:
            raise ValueError(f"{sorted(reserved)} are core columns of the event table; do not declare them")
        return cols

    @property
    def feature_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.name != self.entity_key]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"schema.columns has no column {name!r}")


# --------------------------------------------------------------------------- sources


class DriftConfig(_Model):
    enabled: bool = True
    date: dt.date = dt.date(2025, 2, 10)
    amount_scale: float = Field(default=1.6, gt=0)  # covariate shift: amounts scale up
    online_share: float = Field(default=0.55, ge=0, le=1)  # covariate shift: more online payments
    new_pattern_rate: float = Field(default=0.006, ge=0, le=0.2)  # new fraud pattern after the date


class BadRecordsConfig(_Model):
    enabled: bool = False
    rate: float = Field(default=0.01, ge=0, le=0.5)  # share of rows corrupted, spread over the kinds


class SyntheticConfig(_Model):
    start_date: dt.date = dt.date(2025, 1, 1)
    days: int = Field(default=60, gt=0, le=3660)
    rows_per_day: int = Field(default=5000, gt=0, le=50_000_000)
    n_cards: int = Field(default=20_000, gt=0)
    n_merchants: int = Field(default=5_000, gt=0)
    fraud_rate: float = Field(default=0.009, gt=0, lt=0.5)  # background fraud probability per event
    compromised_card_rate: float = Field(default=0.0004, ge=0, lt=0.1)  # cards attacked per day (bursts)
    chargeback_delay_days: float = Field(default=7.0, gt=0)  # mean delay until a fraud label matures
    clean_label_days: int = Field(default=21, gt=0)  # chargeback window: a clean label matures after it
    unlabelled_rate: float = Field(default=0.01, ge=0, lt=1)  # labels that never arrive
    mcar_rate: float = Field(default=0.03, ge=0, lt=1)  # distance_km missing completely at random
    mnar_rate: float = Field(default=0.5, ge=0, le=1)  # device_age_days missing when the device is new
    drift: DriftConfig = DriftConfig()
    bad_records: BadRecordsConfig = BadRecordsConfig()


class GenericSourceConfig(_Model):
    """Map any CSV/Parquet files onto the event table with no code (see README: your own data)."""

    format: Literal["csv", "parquet"] = "csv"
    pattern: str = "*.csv"  # glob of landing files inside the landing folder
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    rename: dict[str, str] = Field(default_factory=dict)  # raw name -> event-table name
    event_id: str | None = None  # raw id column; None: derived from file name + row number
    time_column: str = "event_time"
    time_format: str | None = None  # strptime format; None: ISO 8601
    label_column: str = "label"
    positive_value: str = "1"
    negative_values: list[str] | None = None  # None: every non-positive, non-null value is negative
    label_time_column: str | None = None  # None: the label is known at event time
    label_delay_days: float = Field(default=0.0, ge=0)  # used when label_time_column is None
    drop: list[str] = Field(default_factory=list)  # leaky or useless raw columns


class HotelConfig(_Model):
    """Hotel Booking Demand (Antonio et al. 2019): booking time as event time, label at arrival."""

    # These are written after the outcome or change after booking: they never reach the lake.
    drop: list[str] = Field(
        default_factory=lambda: [
            "reservation_status",
            "reservation_status_date",
            "assigned_room_type",
            "booking_changes",
        ]
    )


class SourceConfig(_Model):
    kind: Literal["synthetic", "hotel", "generic"] = "synthetic"
    generic: GenericSourceConfig = GenericSourceConfig()
    hotel: HotelConfig = HotelConfig()


# --------------------------------------------------------------------------- stages


class EtlConfig(_Model):
    future_tolerance_hours: float = Field(default=1.0, ge=0)  # clock skew allowed past the file's day
    dedup_lookback_days: int = Field(default=7, ge=0, le=366)  # cross-day duplicate search window
    compression: Literal["zstd", "snappy", "none"] = "zstd"


class ValidationConfig(_Model):
    min_rows_per_partition: int = Field(default=1, ge=0)
    max_rows_per_partition: int = Field(default=100_000_000, gt=0)
    max_null_fraction: float = Field(default=0.5, ge=0, le=1)  # warning above this, per nullable column
    min_label_rate: float = Field(default=0.0, ge=0, le=1)  # warning bounds on the matured label rate
    max_label_rate: float = Field(default=1.0, ge=0, le=1)
    freshness_max_lag_hours: float = Field(default=48.0, gt=0)  # newest event vs the partition's day end
    fail_on: Literal["critical", "warning", "never"] = "critical"


class Params(_Model):
    seed: int = Field(default=42, ge=0)
    source: SourceConfig = SourceConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    schema_: SchemaConfig = Field(alias="schema")
    etl: EtlConfig = EtlConfig()
    validation: ValidationConfig = ValidationConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def schema(self) -> SchemaConfig:  # type: ignore[override]
        return self.schema_


def _format_errors(path: Path, err: ValidationError, raw: dict[str, Any]) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key; check the spelling against params.yaml's documented sections"
        value = e.get("input")
        shown = "<missing>" if e["type"] == "missing" else repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"{path}: {loc} = {shown}: {msg}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], *, source: Path = DEFAULT_PARAMS) -> Params:
    """Validate an already-parsed mapping. Raises ConfigError naming each bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err, raw)) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate a params file once; stages pass the typed sections down as arguments."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found; run from the project root or pass --params PATH"
        ) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_params(raw, source=path)
