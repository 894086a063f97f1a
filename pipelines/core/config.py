"""Typed configuration: ``params.yaml`` loaded once per stage into validated objects.

Every section is a pydantic model with ``extra="forbid"``, so a typo in a key fails at load time.
A bad file raises :class:`ConfigError` whose message is one line per problem, naming the dotted key
path, the bad value and what is expected, e.g.::

    params.yaml: synthetic.rows_per_day = -5: Input should be greater than 0

Each stage adds its own section model here; a stage reads only the sections it needs.
"""

from __future__ import annotations

import ast
import codecs
import datetime as dt
import io
import os
import tokenize
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "MISSING_MARKERS",
    "ColumnSpec",
    "ConfigError",
    "EtlConfig",
    "Params",
    "SchemaConfig",
    "SourceConfig",
    "SyntheticConfig",
    "ValidationConfig",
    "cross_check",
    "edit_target",
    "load_params",
    "params_comments",
    "params_file",
    "params_origins",
]

DEFAULT_PARAMS = Path("params.yaml")
# The first line of a params copy that `loopline run` generates names the file the user edits (the profile);
# messages about parameters name that file, through params_file(), which the CLI sets when it loads params.
EDIT_MARKER = "# loopline: edit "
PARAMS_FILE_ENV = "LOOPLINE_PARAMS_FILE"


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


# The usual markers of a missing value in CSV exports (spreadsheets, R, pandas, databases). A column whose only
# non-numbers are these stays numeric instead of becoming a category of number strings.
MISSING_MARKERS = ("", "NA", "N/A", "n/a", "#N/A", "NULL", "null", "NaN", "nan", "None", "?", "-")


class GenericSourceConfig(_Model):
    """Map any CSV/Parquet files onto the event table with no code (see README: your own data)."""

    format: Literal["csv", "parquet"] = "csv"
    pattern: str = "*.csv"  # glob of landing files inside the landing folder
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    # CSV cells that mean "missing" (exact match, after no trimming); [] : only the empty cell
    null_values: list[str] = Field(default_factory=lambda: list(MISSING_MARKERS))
    rename: dict[str, str] = Field(default_factory=dict)  # raw name -> event-table name
    # columns added with one value for every row, e.g. {series: all}: the entity of a single time series
    constants: dict[str, str] = Field(default_factory=dict)
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
            "required_car_parking_spaces",  # recorded at arrival: 0 of its 7,416 non-zero rows cancel
        ]
    )


class SourceConfig(_Model):
    kind: Literal["synthetic", "hotel", "generic"] = "synthetic"
    # Folder of the user's landing files for `loopline run --profile` (hotel/generic; relative paths are
    # resolved against the project root). None: data/landing, which the generate stage fills (synthetic).
    landing: str | None = None
    # text encoding of CSV landing files (any Python codec name: utf-8, latin-1, cp1252...); a line not valid
    # in it is quarantined (invalid_encoding), the rest of the file loads. `loopline init` detects Latin-1.
    encoding: str = Field(default="utf-8", min_length=1)
    generic: GenericSourceConfig = GenericSourceConfig()

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"unknown text encoding {value!r}; use a Python codec name such as utf-8, latin-1 or cp1252"
            ) from None
        return value

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
    # processes validating batches (validation.chunk_rows) beyond the first (0: one per core, at most 4); never
    # part of the suite
    workers: int = Field(default=0, ge=0, le=64)
    # rows validated in one Great Expectations run (partitions are batched up to this); never part of the suite
    chunk_rows: int = Field(default=500_000, ge=1)


Scaling = Literal["auto", "standard", "minmax", "log", "none"]
_WINDOW_RE = r"^[1-9][0-9]*[smhd]$"


class FeatureAggregatesConfig(_Model):
    """Point-in-time entity aggregates: strictly earlier events of the same entity over trailing windows."""

    enabled: bool = True
    windows: list[Annotated[str, Field(pattern=_WINDOW_RE)]] = Field(
        default_factory=lambda: ["1h", "24h", "7d"], min_length=1
    )  # e.g. 30m, 1h, 7d
    value_column: str | None = None  # numeric column summed/averaged per window; None: counts only


class FeatureLeakageConfig(_Model):
    # one input predicting the label this well alone fails the build, by name
    max_single_auc: float = Field(default=0.97, gt=0.5, le=1)
    max_rows: int = Field(default=200_000, gt=0)  # train rows sampled for the single-feature AUC check
    time_split: bool = True  # valid/test rows earlier than the train cutoff fail the build


class FeaturesConfig(_Model):
    """The feature stage: which column gets which treatment; every fitted constant goes in the spec."""

    drop: list[str] = Field(default_factory=list)  # declared columns never used as features
    scaling: Scaling = "auto"  # auto: log for non-negative skewed columns, else standard
    scale_overrides: dict[str, Scaling] = Field(default_factory=dict)
    # plus a <col>__missing indicator
    impute: Literal["median", "mean", "zero"] = "median"
    # nullable: the schema's nullable columns
    missing_indicators: Literal["nullable", "always", "never"] = "nullable"
    discretize: dict[str, Annotated[int, Field(ge=2, le=100)]] = Field(default_factory=dict)  # col -> bins
    hash_buckets: int = Field(default=32, ge=2, le=1_048_576)  # for high_cardinality columns
    onehot_max_categories: int = Field(default=30, ge=1)  # more categories -> ordinal encoding
    min_category_count: int = Field(default=5, ge=1)  # rarer categories go to the unknown slot
    # column -> onehot | ordinal | hash
    encoding_overrides: dict[str, Literal["onehot", "ordinal", "hash"]] = Field(default_factory=dict)
    crosses: list[Annotated[list[str], Field(min_length=2)]] = Field(default_factory=list)
    cross_buckets: int = Field(default=32, ge=2, le=1_048_576)
    cyclical: bool = True  # hour-of-day and day-of-week sin/cos from event_time
    aggregates: FeatureAggregatesConfig = FeatureAggregatesConfig()
    leakage: FeatureLeakageConfig = FeatureLeakageConfig()


class ImportanceConfig(_Model):
    """Importance weights P/Q on one categorical column: the train split's mix Q reweighted to a target P."""

    column: str = Field(default="channel", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    target: dict[str, Annotated[float, Field(ge=0)]] | None = None  # None: the mix of the newest days
    recent_days: int = Field(default=7, gt=0, le=366)  # window before the cutoff that defines P if no target
    max_weight: float = Field(default=20.0, gt=1)  # weights are clipped to [1/max, max]


SamplingMethod = Literal["all", "random", "stratified", "weighted", "reservoir", "importance"]


class SamplingConfig(_Model):
    """Time-based train/valid/test split with a label-maturity tail; the method samples the train split only.

    Windows in calendar days, counted back from the cutoff (the end of ``as_of``, default the newest
    lake partition): [train][gap][valid][gap][test][label_maturity_days: immature tail, in no split].
    """

    as_of: dt.date | None = None  # None: the lake's newest partition; the cutoff is the end of that day
    label_maturity_days: int = Field(default=21, ge=0, le=3660)  # labels known within this many days
    test_days: int = Field(default=6, gt=0, le=3660)
    valid_days: int = Field(default=7, gt=0, le=3660)
    gap_days: int = Field(default=1, ge=0, le=366)  # days dropped between train|valid and valid|test
    train_days: int | None = Field(default=None, gt=0, le=36600)  # None: all earlier history
    method: SamplingMethod = "all"
    fraction: float | None = Field(default=None, gt=0, le=1)  # share of the train rows to keep
    n: int | None = Field(default=None, gt=0)  # or a row count (reservoir: the reservoir size)
    stratify_by: list[str] = Field(default_factory=lambda: ["label"])  # stratified: label and/or slices
    min_per_stratum: int = Field(default=0, ge=0)  # stratified: small strata keep at least this many
    recency_half_life_days: float = Field(default=7.0, gt=0)  # weighted: weight halves every this many days
    importance: ImportanceConfig = ImportanceConfig()
    batch_size: int = Field(default=65_536, gt=0)  # reservoir: rows per streamed record batch

    @model_validator(mode="after")
    def _size_is_consistent(self) -> SamplingConfig:
        if self.fraction is not None and self.n is not None:
            raise ValueError("give either fraction or n, not both")
        if self.method == "reservoir" and self.n is None:
            raise ValueError("method reservoir needs n (the reservoir size), e.g. n: 50000")
        if self.method == "stratified" and not self.stratify_by:
            raise ValueError("method stratified needs stratify_by, e.g. [label] or [label, channel]")
        return self


class LabelingFunctionOptions(_Model):
    """Thresholds of the registered labeling functions (pipelines/labeling/labeling_functions.py)."""

    amount_ratio: float = Field(default=4.0, gt=1)  # amount above this multiple of the card's median
    min_card_events: int = Field(default=3, ge=1)  # card history needed before the amount rule votes
    # new_device: younger devices, or a hidden age (MNAR)
    new_device_days: float = Field(default=7.0, gt=0)
    risky_category_regex: str = Field(
        default=r"^(electronics|jewelry|gaming|travel|digital_goods)$", min_length=1
    )
    velocity_window_hours: float = Field(default=1.5, gt=0)  # +- this around each event
    velocity_min_events: int = Field(default=3, ge=2)  # events of one card within the window
    velocity_ratio: float = Field(default=20.0, ge=1)  # and this multiple of the card's usual rate
    night_hours: list[Annotated[int, Field(ge=0, le=23)]] = Field(default_factory=lambda: [23, 0, 1, 2, 3, 4])
    model_positive: float = Field(default=0.9, gt=0, lt=1)  # model LF votes 1 at or above this score
    model_negative: float = Field(default=0.2, gt=0, lt=1)  # and 0 at or below this one
    model_folds: int = Field(default=5, ge=2, le=20)  # cross-fitting on gold: no row scored by its own fit

    @model_validator(mode="after")
    def _model_band(self) -> LabelingFunctionOptions:
        if self.model_negative >= self.model_positive:
            raise ValueError("model_negative must be below model_positive")
        return self


class LabelingConfig(_Model):
    """Weak supervision, hand labels and the active-learning queue (pipelines/labeling/label.py)."""

    # the labeling functions that vote; the default works on any schema (a cross-fitted model on gold labels).
    # The card-payment heuristics (foreign_online, amount_spike, new_device, risky_category, velocity_burst,
    # night_time, domestic_pos_known_device) vote only where a profile lists them, as the fraud example does.
    functions: list[str] = Field(default_factory=lambda: ["logreg_model"], min_length=1)
    options: LabelingFunctionOptions = LabelingFunctionOptions()
    label_model: Literal["dawid_skene", "weighted_vote"] = "dawid_skene"
    em_max_iter: int = Field(default=200, ge=1)
    em_tol: float = Field(default=1e-6, gt=0)
    gold_size: int | None = Field(default=None, gt=0)  # None: every matured natural train label is gold
    weak_weight: float = Field(default=0.3, ge=0, le=1)  # label_weight of a weak label
    hand_weight: float = Field(default=1.0, gt=0)  # label_weight of a hand label
    min_votes: int = Field(default=1, ge=1)  # a weak label needs at least this many non-abstaining LFs
    min_confidence: float = Field(default=0.5, ge=0.5, le=1)  # and this posterior for its class
    # active-learning queue length (data/labeled/al_queue.csv)
    al_queue_size: int = Field(default=200, ge=0)
    al_committee: list[Literal["logreg", "hgb", "tree"]] = Field(
        default_factory=lambda: ["logreg", "hgb"],  # type: ignore[arg-type,return-value]
        min_length=1,
    )  # one model: uncertainty sampling; several: query-by-committee


class XGBoostParams(_Model):
    """XGBoost booster parameters (hist); tuned values from best_params.json override these defaults."""

    max_depth: int = Field(default=6, ge=1, le=16)
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    min_child_weight: float = Field(default=1.0, ge=0)
    subsample: float = Field(default=0.8, gt=0, le=1)
    colsample_bytree: float = Field(default=0.8, gt=0, le=1)
    reg_lambda: float = Field(default=1.0, ge=0)
    reg_alpha: float = Field(default=0.0, ge=0)
    gamma: float = Field(default=0.0, ge=0)
    max_bin: int = Field(default=256, ge=2, le=4096)


class XGBoostTrainConfig(_Model):
    params: XGBoostParams = XGBoostParams()
    num_boost_round: int = Field(default=400, ge=1)
    early_stopping_rounds: int = Field(default=30, ge=1)
    eval_metric: Literal["aucpr", "auc", "logloss"] = "aucpr"  # early stopping watches this on valid
    nthread: int = Field(default=0, ge=0)  # 0: all cores


class DistillationConfig(_Model):
    """Soft targets from the XGBoost teacher: loss = alpha * BCE(label) + (1 - alpha) * BCE(teacher at T)."""

    enabled: bool = True
    alpha: float = Field(default=0.5, ge=0, le=1)  # weight of the hard labels
    temperature: float = Field(default=2.0, gt=0)  # softens the teacher's logits: sigmoid(logit / T)
    compare: bool = True  # also train without distillation, side by side, and report both


class KerasTrainConfig(_Model):
    # dense layers; the weights dominate the TFLite file
    hidden_units: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [256, 128, 64], min_length=1
    )
    dropout: float = Field(default=0.2, ge=0, lt=1)
    epochs: int = Field(default=12, ge=1)
    batch_size: int = Field(default=1024, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    patience: int = Field(default=3, ge=1)  # early stopping on valid PR-AUC
    threads: int = Field(default=0, ge=0)  # TensorFlow intra/inter-op threads; 0: TensorFlow's default
    distillation: DistillationConfig = DistillationConfig()


class ImbalanceTrainConfig(_Model):
    """Class imbalance, applied to the train split only (valid and test keep the natural distribution)."""

    # Keras: "balanced" weights by inverse class frequency, which inflates its scores far from probabilities
    # (the behavioural tests' epsilons and quantize's thresholds are probabilities); "none" keeps them calibrated
    class_weight: Literal["balanced", "none"] = "none"
    scale_pos_weight: Literal["auto"] | float = 1.0  # XGBoost: auto = negative/positive train weight
    resample: Literal["none", "over", "under", "smote"] = (
        "none"  # pipelines/training/imbalance.py, train split only
    )
    resample_ratio: float = Field(default=0.1, gt=0, le=1)  # minority/majority ratio after resampling


class BaselinesConfig(_Model):
    heuristic_columns: list[str] | None = None  # None: every raw input column except high-cardinality ones
    bins: int = Field(default=20, ge=2, le=1000)  # quantile bins of a numeric heuristic column


class TrainConfig(_Model):
    """The training stage (pipelines/training/train.py): baselines, XGBoost, Keras (with distillation)."""

    xgboost: XGBoostTrainConfig = XGBoostTrainConfig()
    keras: KerasTrainConfig = KerasTrainConfig()
    imbalance: ImbalanceTrainConfig = ImbalanceTrainConfig()
    baselines: BaselinesConfig = BaselinesConfig()


class SearchDimension(_Model):
    """One tuned XGBoost parameter: a range (float/int, optionally log-scaled) or a list of choices."""

    type: Literal["float", "int", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[float | int | str] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> SearchDimension:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs choices, e.g. choices: [4, 6, 8]")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs low and high, e.g. {{type: {self.type}, low: 1, high: 10}}")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        return self


def _default_space() -> dict[str, SearchDimension]:
    return {
        "max_depth": SearchDimension(type="int", low=3, high=10),
        "learning_rate": SearchDimension(type="float", low=0.02, high=0.3, log=True),
        "min_child_weight": SearchDimension(type="float", low=0.5, high=20, log=True),
        "subsample": SearchDimension(type="float", low=0.5, high=1.0),
        "colsample_bytree": SearchDimension(type="float", low=0.4, high=1.0),
        "reg_lambda": SearchDimension(type="float", low=1e-3, high=10, log=True),
    }


class TuneConfig(_Model):
    """The tuning stage (pipelines/training/tune.py): Optuna TPE + pruning over ``space``, one shared study."""

    storage: str = Field(default="sqlite:///data/tuning/study.db", min_length=1)  # or postgresql://...
    study_name: str = Field(default="auto", min_length=1)  # auto: derived from the feature spec and space
    n_trials: int = Field(default=12, ge=1)  # target COMPLETE+PRUNED trials; a rerun continues up to it
    timeout_s: float | None = Field(default=150, gt=0)  # per run, per worker
    workers: int = Field(default=2, ge=1, le=64)  # worker processes sharing the study through storage
    threads_per_worker: int = Field(default=0, ge=0)  # XGBoost nthread in each worker; 0: cores / workers
    # the benchmarked default (README, benchmarks/bench_pruning.py): percentile 40 after 8 complete trials,
    # checked every 5 rounds
    pruner: Literal["median", "percentile", "hyperband", "none"] = "percentile"
    startup_trials: int = Field(default=4, ge=0)  # TPE random start and pruner warm-up (trials)
    # complete trials before the median/percentile pruner may prune (None: startup_trials). More than
    # startup_trials lets TPE place a few guided trials unpruned, so the pruner's reference is not the
    # random start alone and the sampler learns from complete trials before most are cut
    prune_startup_trials: int | None = Field(default=8, ge=0)
    warmup_rounds: int = Field(
        default=10, ge=0
    )  # median/percentile: rounds before a trial can be pruned; hyperband: its min_resource
    # boosting rounds between reports to the pruner (a storage write each; the check runs in process)
    prune_interval: int = Field(default=5, ge=1)
    # the pruner's step. rounds: boosting rounds. progress: rounds x learning_rate / the space's highest
    # learning rate, so trials are compared at equal shrinkage-weighted progress (a slow learning rate is not
    # judged at round 15 against fast ones); warmup_rounds, prune_interval and Hyperband's resources then
    # count rounds at the highest learning rate
    prune_clock: Literal["rounds", "progress"] = "rounds"
    percentile: float = Field(default=40.0, gt=0, lt=100)  # percentile pruner: prune below this percentile
    reduction_factor: int = Field(default=3, ge=2)  # hyperband: keep 1/reduction_factor per rung
    num_boost_round: int = Field(default=120, ge=1)
    early_stopping_rounds: int = Field(default=15, ge=1)
    max_train_rows: int | None = Field(default=60_000, gt=0)  # trials fit on a stratified sample of train
    space: dict[str, SearchDimension] = Field(default_factory=_default_space, min_length=1)

    @field_validator("space")
    @classmethod
    def _known_params(cls, space: dict[str, SearchDimension]) -> dict[str, SearchDimension]:
        unknown = sorted(set(space) - set(XGBoostParams.model_fields))
        if unknown:
            raise ValueError(
                f"unknown XGBoost parameters {unknown}; tunable: {sorted(XGBoostParams.model_fields)}"
            )
        return space

    @model_validator(mode="after")
    def _reports_reach_the_pruner(self) -> TuneConfig:
        if self.pruner != "none" and self.prune_interval > self.num_boost_round:
            raise ValueError(
                f"tune.prune_interval ({self.prune_interval}) exceeds tune.num_boost_round "
                f"({self.num_boost_round}): no round would reach the pruner; lower prune_interval "
                "or set pruner: none"
            )
        lr = self.space.get("learning_rate")
        if self.prune_clock == "progress" and (lr is None or lr.type != "float" or (lr.low or 0) <= 0):
            raise ValueError(
                "tune.prune_clock: progress scales rounds by the sampled learning rate, so tune.space needs "
                "learning_rate as {type: float, low: >0, high: ...}; add it or set prune_clock: rounds"
            )
        return self


class PerturbationTest(_Model):
    """Gaussian noise of relative scale on numeric inputs: ``x + scale * min(|x|, std(x)) * N(0, 1)`` (a
    relative change, never more than ``scale`` of the column's spread: a year or a pressure is not moved by
    5% of its magnitude), clipped at 0 for non-negative columns; passes when the mean |score change| stays
    below the bound."""

    enabled: bool = True
    # empty: every raw numeric input of the feature spec that takes non-integer values (never the derived
    # aggregates, nor integer-valued counts, flags and ids)
    columns: list[str] = Field(default_factory=list)
    scale: float = Field(default=0.05, gt=0, le=1)
    # the bound; None: relative_bound x the model's own score spread (std of its scores on the tested rows),
    # so that it means the same on a 2% and a 40% base rate
    max_mean_abs_delta: float | None = Field(default=None, gt=0, le=1)
    relative_bound: float = Field(default=0.25, gt=0, le=1)


class InvarianceTest(_Model):
    """Setting ``column`` to another value (``value``, or a row-wise shuffle when None) moves the score by
    less than ``epsilon`` for at least ``min_share`` of the rows."""

    name: str = Field(min_length=1)
    column: str = Field(min_length=1)
    value: str | float | None = None
    epsilon: float = Field(default=0.01, gt=0, le=1)
    min_share: float = Field(default=0.95, gt=0, le=1)


class DirectionalTest(_Model):
    """Raising ``column`` (``multiply`` or ``set`` it) must not lower the score (beyond ``tolerance``) for at
    least ``min_share`` of the rows; ``only_present`` restricts it to rows where the input is not missing."""

    name: str = Field(min_length=1)
    column: str = Field(min_length=1)
    multiply: float | None = Field(default=None, gt=0)
    set: float | None = None
    expect: Literal["not_lower", "not_higher"] = "not_lower"
    tolerance: float = Field(default=1e-4, ge=0)
    min_share: float = Field(default=0.9, gt=0, le=1)
    only_present: bool = True

    @model_validator(mode="after")
    def _one_change(self) -> DirectionalTest:
        if (self.multiply is None) == (self.set is None):
            raise ValueError("give exactly one of multiply (e.g. 3) or set (e.g. 0)")
        return self


class BehaviouralConfig(_Model):
    models: list[str] = Field(default_factory=lambda: ["xgboost", "keras"])  # scorers tested (if present)
    max_rows: int = Field(default=5000, gt=0)  # labelled test rows sampled (seeded) for the tests
    perturbation: PerturbationTest = PerturbationTest()
    invariance: list[InvarianceTest] = Field(default_factory=list)
    directional: list[DirectionalTest] = Field(default_factory=list)


class EvaluateConfig(_Model):
    """Offline evaluation (pipelines/evaluation/evaluate.py) on the test split's natural and hand labels."""

    primary: str = Field(default="xgboost", min_length=1)  # the model the gate and the registry judge
    precision_target: float = Field(default=0.9, gt=0, le=1)  # recall at this precision
    ece_bins: int = Field(default=10, ge=2, le=1000)
    ece_strategy: Literal["uniform", "quantile"] = "uniform"  # equal-width or equal-mass bins
    calibration: Literal["none", "isotonic", "platt"] = "isotonic"  # fitted on valid, applied to test
    slices: list[str] = Field(
        default_factory=list
    )  # any declared column, feature or not; the example sets its own
    slice_metric: Literal["roc_auc", "pr_auc"] = "roc_auc"  # roc_auc: comparable across base rates
    min_slice_size: int = Field(default=500, ge=1)  # rows; smaller slices are listed, never flagged
    min_slice_positives: int = Field(default=10, ge=1)  # an AUC on fewer positives is noise
    slice_margin: float = Field(default=0.05, ge=0, le=1)  # flag: slice metric < whole - margin
    curve_points: int = Field(default=101, ge=11, le=10_001)  # grid of the ROC/PR plot files
    behavioural: BehaviouralConfig = BehaviouralConfig()


class ModelCardConfig(_Model):
    """The model card's words for this data (pipelines/registry/store.py); neutral when unset."""

    events: str | None = None  # what one scored row is, e.g. "card payments"; None: "events"
    positive: str | None = None  # what the positive class means, e.g. "fraud"; None: "the positive class"
    intended_use: str | None = None  # the card's intended-use paragraph; None: a neutral one from the above


class GateConfig(_Model):
    """The promotion gate (pipelines/registry/store.py): every check must pass for a version to become champion."""

    # on the candidate's own test split (the most recent labelled holdout)
    metric: Literal["pr_auc", "roc_auc"] = "pr_auc"
    baseline_margin: float = Field(default=0.02, ge=0, le=1)  # beat every baseline by at least this
    # and beat the best baseline beyond chance: the one-sided 95% lower bound of the difference over a paired
    # bootstrap of the test rows is above 0 (a margin on a few hundred rows can be luck)
    beyond_chance: bool = True
    champion_margin: float = Field(default=0.0, ge=-1, le=1)  # candidate - champion on the same holdout
    slice_margin: float = Field(default=0.05, ge=0, le=1)  # per slice: candidate >= champion - margin
    slice_margins: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)  # per column
    require_behavioural: bool = True
    near_miss: Literal["challenger", "reject"] = "challenger"  # only the champion check failed -> challenger
    # ... and the candidate is at most this far below the champion (a model far behind is no challenger)
    near_miss_margin: float = Field(default=0.05, ge=0, le=1)
    card: ModelCardConfig = ModelCardConfig()


class MonitorReferenceConfig(_Model):
    """What the current window is compared with (pipelines/monitoring/monitor.py)."""

    kind: Literal["training", "trailing", "seasonal"] = "training"  # training: the champion's data window
    days: int = Field(
        default=14, gt=0, le=3660
    )  # trailing: reference length; training: at most this many days
    gap_days: int = Field(
        default=0, ge=0, le=366
    )  # trailing: days between the reference and the current window
    season_days: int = Field(
        default=7, gt=0, le=3660
    )  # seasonal: shift back (7: same weekdays; 364: last year)


DriftMethodName = Literal["psi", "jensenshannon", "wasserstein", "ks", "chisquare"]


class MonitorDriftConfig(_Model):
    """Per-column drift checks (pipelines/core/drift.py); a threshold of None is the method's default."""

    numerical_method: DriftMethodName = "wasserstein"  # normalized by the reference std (Evidently's default)
    categorical_method: DriftMethodName = "jensenshannon"
    # null: the method's default (0.1 for the distances, 0.05 for p-values)
    numerical_threshold: float | None = Field(default=None, gt=0)
    categorical_threshold: float | None = Field(default=None, gt=0)
    per_column_method: dict[str, DriftMethodName] = Field(default_factory=dict)
    per_column_threshold: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    score_method: DriftMethodName = "psi"  # prediction drift: the score distribution
    score_threshold: float | None = Field(default=None, gt=0)
    bins: int = Field(default=10, ge=2, le=1000)  # quantile bins of the reference (psi, jensenshannon)
    exclude_columns: list[str] = Field(default_factory=list)
    include_high_cardinality: bool = False  # id-like columns drift in almost every period: off by default
    calendar_pattern: str = (
        r"(^|_)(year|month|week|week_number|weekday|day_of_month|day_of_week|hour|date)(_|$)"
    )
    calendar: Literal["exclude", "seasonal"] = (
        "exclude"  # seasonal: compared only against a seasonal reference
    )
    min_rows: int = Field(default=200, ge=1)  # fewer rows on a side: the check is reported, not judged


class MonitorPolicyConfig(_Model):
    """The retrain decision (pipelines/monitoring/monitor.py ``decide``)."""

    metric: Literal["pr_auc", "roc_auc"] = "pr_auc"
    performance_margin: float = Field(default=0.1, ge=0, le=1)  # live below the champion's offline by more
    severe_margin: float = Field(default=0.2, ge=0, le=1)  # a decay this large overrides the cool-down
    min_positives: int = Field(default=100, ge=1)  # matured positives needed to judge performance
    min_label_coverage: float = Field(default=0.9, gt=0, le=1)  # share of the window's labels matured
    prediction_drift: bool = True  # a drifted score distribution triggers a retrain
    importance_threshold: float = Field(default=0.1, ge=0, le=1)  # importance share of drifted features
    cooldown_periods: int = Field(default=2, ge=0)  # no new decision within this many periods of the last
    # After a drift-only retrain decision, further drift-only triggers of that shift wait until this many
    # periods of its labels have matured (the newest feeds a retrain's holdout, the earlier ones its training:
    # before then a retrain cannot learn the shift) or the champion's data reaches the shift; a performance
    # decay on matured labels still triggers. 0: off (every cool-down may retrain on the same shift).
    shift_wait_periods: int = Field(default=2, ge=0)


class MonitorConfig(_Model):
    """Monitor stage: drift and live performance of the champion, and the retrain decision."""

    period_days: int = Field(default=7, gt=0, le=3660)  # default window: this many days up to the newest
    reference: MonitorReferenceConfig = MonitorReferenceConfig()
    drift: MonitorDriftConfig = MonitorDriftConfig()
    policy: MonitorPolicyConfig = MonitorPolicyConfig()
    max_rows: int | None = Field(default=50_000, gt=0)  # per side; above it the window is sampled
    sampling: Literal["reservoir", "stratified"] = "reservoir"  # stratified: proportional per day
    performance_window: Literal["current", "matured"] = (
        "matured"  # matured: the window label_maturity_days back
    )
    label_maturity_days: int = Field(default=21, ge=0, le=3660)
    performance_days: int = Field(default=7, gt=0, le=3660)  # length of the window performance is judged on
    evidently_report: bool = True  # the Evidently HTML (costs CPU; the decision never needs it)


class QuantizeGateConfig(_Model):
    """Parity and fairness thresholds a TFLite variant must meet against the float Keras model (test split)."""

    max_roc_auc_drop: float = Field(default=0.005, ge=0, le=1)  # float Keras - variant, whole test split
    max_pr_auc_drop: float = Field(default=0.01, ge=0, le=1)
    max_mean_abs_diff: float = Field(default=0.01, ge=0, le=1)  # mean |score difference|
    max_abs_diff: float = Field(default=0.2, ge=0, le=1)  # worst single row
    min_agreement: float = Field(default=0.99, ge=0, le=1)  # same decision at the operating threshold
    slice_max_roc_auc_drop: float = Field(default=0.02, ge=0, le=1)  # per eligible slice
    slice_max_mean_abs_diff: float = Field(default=0.02, ge=0, le=1)
    slice_min_agreement: float = Field(default=0.98, ge=0, le=1)


TFLiteVariant = Literal["float32", "float16", "dynamic_range", "int8"]
_ALL_TFLITE_VARIANTS: tuple[TFLiteVariant, ...] = ("float32", "float16", "dynamic_range", "int8")


class QuantizeConfig(_Model):
    """TFLite post-training quantization (pipelines/serving/quantize.py) with a parity gate per variant."""

    variants: list[TFLiteVariant] = Field(default_factory=lambda: list(_ALL_TFLITE_VARIANTS))
    default_variant: TFLiteVariant = "int8"  # the edge model (benchmarks, docs)
    representative_rows: int = Field(default=2000, ge=10, le=100_000)  # stratified by label, train split
    threshold: float | None = Field(default=None, gt=0, lt=1)  # operating threshold; null: from alert_rate
    alert_rate: float = Field(default=0.01, gt=0, lt=1)  # null threshold: float Keras flags this test share
    slices: list[str] | None = None  # null: evaluate.slices (and its min_slice_size/positives)
    min_slice_size: int | None = Field(default=None, ge=1)  # null: evaluate.min_slice_size
    batch_size: int = Field(default=1024, ge=1, le=1_000_000)  # interpreter batch (rows per invoke)
    gate: QuantizeGateConfig = QuantizeGateConfig()
    # the edge model ships only if the Keras model passed evaluate's behavioural tests (evaluation.json)
    require_behavioural: bool = True


class PredictConfig(_Model):
    """Batch prediction (pipelines/serving/predict.py) of lake partitions with the registry's champion."""

    model: str = Field(
        default="xgboost", pattern=r"^(xgboost|keras|tflite:(float32|float16|dynamic_range|int8))$"
    )
    window_days: int = Field(default=3, ge=1, le=3660)  # default dates: the newest N lake partitions
    chunk_rows: int = Field(default=250_000, ge=1_000, le=50_000_000)  # rows scored at a time (memory bound)
    lookback_days: int = Field(default=60, ge=1, le=3660)  # history for secs_since_prev (see predict.py)
    extra_columns: list[str] = Field(default_factory=list)  # kept on every prediction row (e.g. slices)
    # XGBoost's scores by pipelines.serving.treescore (compiled) or Booster.inplace_predict; auto: compiled if it can
    scorer: Literal["auto", "compiled", "xgboost"] = "auto"


BacktestStrategy = Literal["never", "stateless", "stateful", "stateful_refit", "policy"]
_BACKTEST_STRATEGIES: tuple[BacktestStrategy, ...] = (
    "never",
    "stateless",
    "stateful",
    "stateful_refit",
    "policy",
)


class BacktestConfig(_Model):
    """The backtest (pipelines/lifecycle/backtest.py): a timeline replayed period by period, strategies side by side."""

    periods: Literal["daily", "weekly", "monthly"] = "weekly"
    start: dt.date | None = None  # first scored period; None: the lake's first day + warmup_days
    warmup_days: int = Field(default=42, ge=1, le=3660)  # history before the first period (initial model)
    train_days: int | None = Field(
        default=None, gt=0, le=36600
    )  # stateless window; None: sampling.train_days
    holdout_days: int = Field(default=7, ge=1, le=366)  # newest matured days: early stopping + the gate
    label_maturity_days: int | None = Field(default=None, ge=0, le=3660)  # None: sampling.label_maturity_days
    # which clock the train / holdout / watermark windows run on. event_time: rows by when they happened (the
    # newest matured days are the holdout). label_time: rows by when their label arrived: the holdout is the
    # labels that matured in the newest holdout_days, whatever the rows' age, and a stateful update learns
    # the labels that arrived since the watermark. Use label_time when label delay varies a lot per row
    # (hotel bookings mature at arrival: an event-time holdout holds only the short-lead ones).
    split_on: Literal["event_time", "label_time"] = "event_time"
    strategies: list[BacktestStrategy] = Field(
        default_factory=lambda: list(_BACKTEST_STRATEGIES), min_length=1
    )
    gate: bool = True  # a candidate replaces the model only if it beats it on the holdout (gate.metric)
    max_train_rows: int | None = Field(default=None, gt=0)  # stateless fits: reservoir-sample the window


class RetrainConfig(_Model):
    """Retraining (pipelines/lifecycle/retrain.py): stateful updates of the champion, a stateless refit on a schedule."""

    mode: Literal["auto", "stateful", "stateless"] = "auto"  # auto: stateful unless the schedule says refit
    xgboost_method: Literal["add_trees", "refresh_leaf", "refresh_and_add"] = "add_trees"
    stateful_rounds: int = Field(default=20, ge=1, le=10_000)  # trees added per stateful update
    refit_every: int = Field(default=4, ge=1, le=1000)  # every Nth retrain is a stateless refit (1: always)
    max_trees: int = Field(default=600, ge=1)  # a champion past this many trees is refit (update cost grows)
    replay_fraction: float = Field(
        default=0.25, ge=0, le=10
    )  # older labelled rows replayed, share of new rows
    replay_days: int = Field(default=28, ge=1, le=3660)  # replayed rows come from this many days before it
    refit_on_gate_failure: bool = True  # a stateful candidate refused by the gate: refit from scratch
    min_new_rows: int = Field(default=100, ge=1)  # fewer labelled rows since the watermark: the update fails
    keras: bool = True  # also update the Keras edge model (fine-tune, or retrain on a refit)
    keras_epochs: int = Field(default=2, ge=1, le=1000)  # stateful fine-tune epochs
    keras_lr_factor: float = Field(default=0.1, gt=0, le=1)  # fine-tune learning rate = train.keras lr x this
    quantize: bool = (
        True  # TFLite variants of a promoted candidate's Keras model (pipelines/serving/quantize.py)
    )
    backtest: BacktestConfig = BacktestConfig()


class Params(_Model):
    seed: int = Field(default=42, ge=0)
    source: SourceConfig = SourceConfig()
    # the generator, documented in docs/synthetic.md
    synthetic: SyntheticConfig = SyntheticConfig()
    schema_: SchemaConfig = Field(alias="schema")
    etl: EtlConfig = EtlConfig()
    validation: ValidationConfig = ValidationConfig()
    sampling: SamplingConfig = SamplingConfig()
    labeling: LabelingConfig = LabelingConfig()
    features: FeaturesConfig = FeaturesConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gate: GateConfig = GateConfig()
    monitor: MonitorConfig = MonitorConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    predict: PredictConfig = PredictConfig()
    retrain: RetrainConfig = RetrainConfig()

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
            msg = _unknown_key_hint(e["loc"])
        value = e.get("input")
        shown = "<missing>" if e["type"] == "missing" else repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"{path}: {loc} = {shown}: {msg}")
    return "\n".join(lines)


def _unknown_key_hint(loc: tuple[Any, ...]) -> str:
    """'unknown key; did you mean ...?' with the valid keys of the section the key is in."""
    import difflib

    model: type[BaseModel] | None = Params
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:  # a list item keeps the list's model
            continue
        field = {(f.alias or n): f for n, f in model.model_fields.items()}.get(str(part))
        model = None if field is None else _model_of(field.annotation)
    if model is None:
        return "unknown key"
    valid = sorted(f.alias or n for n, f in model.model_fields.items())
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
    section = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (f"unknown key; {hint}valid keys here: {', '.join(valid)}"
            f" (`loopline params show {section}` shows each with its default)" if section else
            f"unknown key; {hint}valid sections: {', '.join(valid)}")  # fmt: skip


def parse_params(raw: dict[str, Any], *, source: Path = DEFAULT_PARAMS) -> Params:
    """Validate an already-parsed mapping. Raises ConfigError naming each bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err, raw)) from None
    problems = cross_check(params)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    return params


def cross_check(p: Params) -> list[str]:
    """What no single section can check: the columns one section names exist where another puts them. One
    line per problem, naming the key and the fix (before, each surfaced mid-run, in the stage that needed it)."""
    declared = {c.name for c in p.schema.columns} | {p.schema.entity_key}
    problems: list[str] = []

    def need(key: str, names: list[str], *, allowed: set[str] = declared, why: str = "") -> None:
        bad = [n for n in names if n not in allowed]
        if bad:
            problems.append(f"{key} names {bad}, which schema.columns does not declare{why}; "
                            f"declared: {sorted(declared)}")  # fmt: skip

    need("evaluate.slices", list(p.evaluate.slices))
    if p.quantize.slices is not None:
        need("quantize.slices", list(p.quantize.slices))
    need("predict.extra_columns", list(p.predict.extra_columns))
    if p.sampling.method == "importance":
        need("sampling.importance.column", [p.sampling.importance.column])
    if p.features.aggregates.value_column is not None:
        need("features.aggregates.value_column", [p.features.aggregates.value_column])
    beh = p.evaluate.behavioural
    tested = [
        *beh.perturbation.columns,
        *(t.column for t in beh.invariance),
        *(t.column for t in beh.directional),
    ]
    need("evaluate.behavioural", tested)
    removed = sorted(set(tested) & (set(p.features.drop) | {p.schema.entity_key}))
    if removed:
        problems.append(f"evaluate.behavioural tests {removed}, which the model never sees (features.drop or the "
                        "entity key): test raw inputs of the model, or remove the test")  # fmt: skip
    return (
        problems  # the source's own mapping (renames, drop) is checked by its adapter: check-params builds it
    )


def edit_target(path: str | Path, text: str) -> str:
    """The file a person edits to change these parameters: ``path``, or the profile a generated copy names."""
    first = text.split("\n", 1)[0]
    return first[len(EDIT_MARKER) :].strip() if first.startswith(EDIT_MARKER) else str(path)


def params_file() -> str:
    """The params file to name in a message ("fix evaluate.slices in ..."): the profile under `loopline run`."""
    return os.environ.get(PARAMS_FILE_ENV) or str(DEFAULT_PARAMS)


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
        raise ConfigError(f"{edit_target(path, text)}: not valid YAML: {err}") from None
    return parse_params(raw, source=Path(edit_target(path, text)))


def _leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif prefix:
        yield prefix[:-1], tree


def params_origins(raw: Mapping[str, Any], params: Params) -> list[tuple[str, Any, str]]:
    """Every leaf parameter of ``params`` as ``(dotted key, value, origin)``: origin ``file`` where the
    params file (``raw``, as read) sets the key (or a list holding it), ``file (= default)`` where it sets
    it to the code's default, else ``default``."""

    def in_file(key: str) -> bool:
        node: Any = raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
            if not isinstance(node, dict):  # a list or scalar set as one value covers everything below
                return True
        return True

    resolved = params.model_dump(mode="json", by_alias=True)
    defaults = dict(_leaves(_defaults_for(params)))
    out = []
    for key, value in _leaves(resolved):
        origin = "default"
        if in_file(key):
            origin = "file (= default)" if key in defaults and defaults[key] == value else "file"
        out.append((key, value, origin))
    return out


def _defaults_for(params: Params) -> dict[str, Any]:
    """The code's defaults, for the keys that have one (the schema has none: it describes the data)."""
    return Params.model_validate(
        {"schema": params.schema_.model_dump(mode="json", by_alias=True)}
    ).model_dump(mode="json", by_alias=True) | {"schema": {}}


def _source_comments() -> dict[tuple[str, str], str]:
    """``(class, field) -> comment`` from this module's source: the comment on a field's lines, after any
    comment lines directly above it (the documentation lives beside the default, in one place)."""
    src = Path(__file__).read_text(encoding="utf-8")
    lines = src.splitlines()
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(src).readline)
        if tok.type == tokenize.COMMENT and "fmt:" not in tok.string and "type:" not in tok.string
    }
    out: dict[tuple[str, str], str] = {}
    for node in ast.parse(src).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            above: list[str] = []
            at = item.lineno - 1
            while at in comments and lines[at - 1].lstrip().startswith("#"):
                above.insert(0, comments[at])
                at -= 1
            own = [
                comments[n] for n in range(item.lineno, (item.end_lineno or item.lineno) + 1) if n in comments
            ]
            text = " ".join(above + own)
            if text:
                out[(node.name, item.target.id)] = text
    return out


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The params model a field holds (also inside ``X | None``, ``list[X]``, ``dict[str, X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is not None and typing.get_origin(annotation) is not Literal:
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _choices(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is Literal:
        return [str(a) for a in typing.get_args(annotation)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        return [c for arg in typing.get_args(annotation) for c in _choices(arg)]
    return []


def params_comments() -> dict[str, str]:
    """``dotted key -> its documentation`` for every parameter and section that has a comment in this module
    (a section without one gets its class's docstring)."""
    source = _source_comments()
    out: dict[str, str] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = prefix + (field.alias or name)
            sub = _model_of(field.annotation)
            text = source.get((model.__name__, name)) or (
                (sub.__doc__ or "").strip().split("\n")[0] if sub is not None and sub.__doc__ else ""
            )
            choices = _choices(field.annotation)
            if choices and not all(c in text for c in choices):
                text = (text + "; " if text else "") + "one of " + " | ".join(choices)
            if text:
                out[key] = text
            if sub is not None:
                walk(sub, key + ".")

    walk(Params, "")
    return out
