"""Synthetic card-payment events: the embedded default data set.

The model (documented in docs/synthetic.md):

* A fixed population of cards (home country, typical spend, preferred channel, activity weight drawn
  from a heavy-tailed law, so that a few cards are very active and card histories are long enough for
  velocity features) and of merchants (high-cardinality ids with Zipf popularity, one merchant category
  each).
* Each day draws ``rows_per_day`` events. An event's fraud probability is a logistic function of being
  abroad, online, unusually large for the card, at night, on a new device and in a risky category.
  On top, a few *compromised cards* per day produce bursts of fraudulent payments within hours (what
  velocity features catch).
* Missing values by two mechanisms: ``distance_km`` is missing completely at random (MCAR);
  ``device_age_days`` is missing *not* at random (MNAR): new devices hide their age.
* Labels are natural labels with a delay: a fraud label matures when the chargeback arrives (a gamma
  delay), a legitimate one after a fixed clean window; a few labels never arrive.
* From ``drift.date`` on: a covariate shift (larger amounts, more online payments) and a new fraud
  pattern (small online payments in a category never seen before, ``digital_goods``).
* On request, bad records are injected (malformed lines, wrong types, duplicates within and across days,
  future timestamps, labels outside {0, 1}, negative amounts); their counts go to a sidecar JSON.

Every day is generated from ``(seed, day)`` alone, so days are independent, reproducible byte for byte,
and a date range can be extended without touching earlier files.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines.core.config import SyntheticConfig

__all__ = ["LANDING_COLUMNS", "Population", "generate_day", "make_population", "to_csv_bytes"]

log = logging.getLogger(__name__)

COUNTRIES = np.array(["PT", "ES", "FR", "DE", "GB", "IT", "NL", "US", "BR", "NG", "CN", "IN"])
COUNTRY_P = np.array([0.38, 0.18, 0.10, 0.09, 0.07, 0.05, 0.04, 0.04, 0.02, 0.01, 0.01, 0.01])
CATEGORIES = np.array(
    [
        "grocery", "restaurant", "fuel", "transport", "retail", "electronics", "travel",
        "entertainment", "health", "utilities", "jewelry", "gaming",
    ]
)  # fmt: skip
CATEGORY_AMOUNT = np.array([0.0, 0.2, 0.4, -0.6, 0.5, 1.5, 1.8, 0.3, 0.6, 0.8, 2.0, 0.1])
RISKY_CATEGORIES = {"electronics", "jewelry", "gaming", "travel"}
NEW_PATTERN_CATEGORY = "digital_goods"
CHANNELS = np.array(["pos", "online", "atm"])
LANDING_COLUMNS = [
    "event_id", "event_time", "card_id", "merchant_id", "merchant_category", "country", "channel",
    "amount", "distance_km", "device_age_days", "label", "label_time",
]  # fmt: skip
BAD_KINDS = (
    "malformed_line", "wrong_type", "duplicate_within_day", "duplicate_across_days",
    "future_timestamp", "label_out_of_range", "negative_amount",
)  # fmt: skip
DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class Population:
    card_country: np.ndarray
    card_mu: np.ndarray  # log typical amount
    card_channel: np.ndarray  # preferred channel index
    card_weight: np.ndarray  # activity probability
    merchant_category: np.ndarray  # category index
    merchant_weight: np.ndarray
    logit_offset: float  # calibrates the background fraud rate before drift


def make_population(cfg: SyntheticConfig, *, seed: int) -> Population:
    rng = np.random.default_rng([seed, 0xCA2D])
    n_c, n_m = cfg.n_cards, cfg.n_merchants
    activity = rng.pareto(1.5, n_c) + 0.2
    merchant_pop = 1.0 / np.arange(1, n_m + 1) ** 1.05
    rng.shuffle(merchant_pop)
    pop = Population(
        card_country=rng.choice(len(COUNTRIES), n_c, p=COUNTRY_P),
        card_mu=rng.normal(3.4, 0.6, n_c),
        card_channel=rng.choice(3, n_c, p=[0.6, 0.32, 0.08]),
        card_weight=activity / activity.sum(),
        merchant_category=rng.choice(len(CATEGORIES), n_m),
        merchant_weight=merchant_pop / merchant_pop.sum(),
        logit_offset=0.0,
    )
    # Calibrate the intercept on a pre-drift sample so the background fraud rate is cfg.fraud_rate.
    sample = _draw_events(pop, cfg, rng, n=50_000, day_start_ns=0, drifted=False)
    logits = _fraud_logit(sample, pop)
    lo, hi = -20.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        rate = float(np.mean(1.0 / (1.0 + np.exp(-(logits + mid)))))
        lo, hi = (mid, hi) if rate < cfg.fraud_rate else (lo, mid)
    return Population(**{**pop.__dict__, "logit_offset": (lo + hi) / 2})


def _draw_events(
    pop: Population,
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    *,
    n: int,
    day_start_ns: int,
    drifted: bool,
) -> dict[str, np.ndarray]:
    card = rng.choice(len(pop.card_weight), n, p=pop.card_weight)
    merchant = rng.choice(len(pop.merchant_weight), n, p=pop.merchant_weight)
    daytime = rng.random(n) < 0.8
    hour = np.where(daytime, np.clip(rng.normal(14.0, 3.5, n), 0, 23.999), rng.uniform(0, 24, n))
    event_ns = day_start_ns + (hour * 3600 * 1e9).astype(np.int64)
    channel = np.where(rng.random(n) < 0.7, pop.card_channel[card], rng.choice(3, n, p=[0.5, 0.4, 0.1]))
    if drifted:
        to_online = rng.random(n) < max(0.0, cfg.drift.online_share - 0.35) / 0.65
        channel = np.where(to_online, 1, channel)
    foreign = rng.random(n) < 0.07
    country = np.where(foreign, rng.choice(len(COUNTRIES), n), pop.card_country[card])
    foreign = country != pop.card_country[card]
    category = pop.merchant_category[merchant]
    log_amount = rng.normal(pop.card_mu[card] + CATEGORY_AMOUNT[category], 0.8)
    amount = np.exp(log_amount) * (cfg.drift.amount_scale if drifted else 1.0)
    distance = np.where(foreign, rng.exponential(1500.0, n) + 300.0, rng.exponential(12.0, n))
    device_age = np.where(rng.random(n) < 0.06, rng.uniform(0, 7, n), rng.exponential(400.0, n) + 7)
    return {
        "card": card, "merchant": merchant, "event_ns": event_ns, "hour": hour, "channel": channel,
        "country": country, "foreign": foreign, "category": category, "amount": amount,
        "log_excess": log_amount - pop.card_mu[card], "distance": distance, "device_age": device_age,
    }  # fmt: skip


def _fraud_logit(ev: dict[str, np.ndarray], pop: Population) -> np.ndarray:
    risky = np.isin(CATEGORIES[ev["category"]], list(RISKY_CATEGORIES))
    night = (ev["hour"] < 5) | (ev["hour"] >= 23)
    return (
        1.6 * ev["foreign"]
        + 0.9 * (ev["channel"] == 1)
        + 1.3 * (ev["log_excess"] > 1.2)
        + 1.0 * night
        + 1.4 * (ev["device_age"] < 7)
        + 0.8 * risky
        + pop.logit_offset
    )


def _day_seed(seed: int, day: dt.date) -> list[int]:
    return [seed, day.toordinal()]


def generate_day(
    cfg: SyntheticConfig, pop: Population, day: dt.date, *, seed: int, inject_bad: bool | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One day of landing events as a DataFrame of the landing columns, plus injected-bad counts.

    With bad records, the frame's columns are strings (wrong types have to be representable) and
    malformed lines are returned in ``df.attrs["malformed_lines"]`` to be appended to the CSV text.
    """
    rng = np.random.default_rng(_day_seed(seed, day))
    drifted = cfg.drift.enabled and day >= cfg.drift.date
    day_start_ns = int(pd.Timestamp(day, tz="UTC").value)

    n_bursts = rng.poisson(cfg.n_cards * cfg.compromised_card_rate)
    burst_sizes = rng.poisson(3.0, n_bursts) + 2
    n_burst_rows = int(burst_sizes.sum())
    n_new = int(rng.binomial(cfg.rows_per_day, cfg.drift.new_pattern_rate)) if drifted else 0
    n_base = max(cfg.rows_per_day - n_burst_rows - n_new, 0)

    ev = _draw_events(pop, cfg, rng, n=n_base, day_start_ns=day_start_ns, drifted=drifted)
    p = 1.0 / (1.0 + np.exp(-_fraud_logit(ev, pop)))
    fraud = rng.random(n_base) < p
    category = CATEGORIES[ev["category"]].astype(object)
    country = COUNTRIES[ev["country"]].astype(object)
    channel = CHANNELS[ev["channel"]].astype(object)
    parts = [
        dict(card=ev["card"], merchant=ev["merchant"], event_ns=ev["event_ns"], category=category,
             country=country, channel=channel, amount=ev["amount"], distance=ev["distance"],
             device_age=ev["device_age"], fraud=fraud)
    ]  # fmt: skip

    if n_burst_rows:
        # Compromised cards: a burst of payments within 90 minutes, mostly online and often abroad.
        cards = np.repeat(rng.choice(len(pop.card_weight), n_bursts, p=pop.card_weight), burst_sizes)
        start = np.repeat(rng.uniform(0, 21 * 3600, n_bursts), burst_sizes)
        t = day_start_ns + ((start + rng.uniform(0, 1.5 * 3600, n_burst_rows)) * 1e9).astype(np.int64)
        abroad = rng.random(n_burst_rows) < 0.5
        ctry = np.where(abroad, rng.choice(len(COUNTRIES), n_burst_rows), pop.card_country[cards])
        merch = rng.choice(len(pop.merchant_weight), n_burst_rows)
        parts.append(
            dict(card=cards, merchant=merch, event_ns=t,
                 category=CATEGORIES[pop.merchant_category[merch]].astype(object),
                 country=COUNTRIES[ctry].astype(object),
                 channel=np.where(rng.random(n_burst_rows) < 0.8, "online", "pos").astype(object),
                 amount=np.exp(rng.normal(pop.card_mu[cards] + 1.0, 0.9)),
                 distance=np.where(ctry != pop.card_country[cards], rng.exponential(1500.0, n_burst_rows) + 300, rng.exponential(30.0, n_burst_rows)),
                 device_age=np.where(rng.random(n_burst_rows) < 0.6, rng.uniform(0, 7, n_burst_rows), rng.exponential(300.0, n_burst_rows)),
                 fraud=np.ones(n_burst_rows, dtype=bool))
        )  # fmt: skip

    if n_new:
        # The new fraud pattern after the drift date: small, domestic, online, in a new category.
        cards = rng.choice(len(pop.card_weight), n_new, p=pop.card_weight)
        parts.append(
            dict(card=cards, merchant=rng.choice(len(pop.merchant_weight), n_new),
                 event_ns=day_start_ns + (rng.uniform(0, 24 * 3600, n_new) * 1e9).astype(np.int64),
                 category=np.full(n_new, NEW_PATTERN_CATEGORY, dtype=object),
                 country=COUNTRIES[pop.card_country[cards]].astype(object),
                 channel=np.full(n_new, "online", dtype=object),
                 amount=np.exp(rng.normal(2.3, 0.5, n_new)), distance=rng.exponential(12.0, n_new),
                 device_age=rng.exponential(200.0, n_new), fraud=rng.random(n_new) < 0.55)
        )  # fmt: skip

    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = len(cols["card"])
    cols["event_ns"] = cols["event_ns"] // 10**9 * 10**9  # landing files carry whole seconds
    order = np.argsort(cols["event_ns"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}

    distance = np.round(cols["distance"], 2)
    distance = np.where(rng.random(n) < cfg.mcar_rate, np.nan, distance)  # MCAR
    device_age = np.round(cols["device_age"], 1)
    hide = (device_age < 30) & (rng.random(n) < cfg.mnar_rate)  # MNAR: missingness depends on the value
    device_age = np.where(hide, np.nan, device_age)

    fraud = cols["fraud"]
    chargeback = np.minimum(1.0 + rng.gamma(2.0, cfg.chargeback_delay_days / 2.0, n), cfg.clean_label_days)
    delay_days = np.where(fraud, chargeback, float(cfg.clean_label_days))
    label_ns = cols["event_ns"] + (delay_days * DAY_NS).astype(np.int64)
    never = rng.random(n) < cfg.unlabelled_rate
    label = pd.array(np.where(never, pd.NA, fraud.astype(int)), dtype="Int8")

    df = pd.DataFrame(
        {
            "event_id": np.char.add(f"evt-{day:%Y%m%d}-", np.char.zfill(np.arange(n).astype(str), 7)),
            "event_time": pd.to_datetime(cols["event_ns"], utc=True),
            "card_id": np.char.add("card-", np.char.zfill(cols["card"].astype(str), 6)),
            "merchant_id": np.char.add("m-", np.char.zfill(cols["merchant"].astype(str), 5)),
            "merchant_category": cols["category"],
            "country": cols["country"],
            "channel": cols["channel"],
            "amount": np.round(cols["amount"], 2),
            "distance_km": distance,
            "device_age_days": device_age,
            "label": label,
            "label_time": pd.to_datetime(np.where(never, np.iinfo(np.int64).min, label_ns), utc=True),
        }
    )
    do_bad = cfg.bad_records.enabled if inject_bad is None else inject_bad
    if not do_bad:
        return df, {}
    return _inject_bad_records(df, cfg, pop, day, rng, seed=seed)


def _iso(ts: pd.Series) -> pd.Series:
    """ISO 8601 UTC with a Z suffix and whole seconds; missing values become empty strings."""
    values = ts.dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    text = np.char.add(np.datetime_as_string(values, unit="s"), "Z").astype(object)
    return pd.Series(np.where(ts.notna().to_numpy(), text, ""), index=ts.index, dtype=object)


def _inject_bad_records(
    df: pd.DataFrame,
    cfg: SyntheticConfig,
    pop: Population,
    day: dt.date,
    rng: np.random.Generator,
    *,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, int]]:
    n = len(df)
    per_kind = max(1, round(n * cfg.bad_records.rate / len(BAD_KINDS)))
    s = df.astype(object)
    s["event_time"] = _iso(df["event_time"])
    s["label_time"] = _iso(df["label_time"])
    s = s.astype(str).replace({"nan": "", "<NA>": "", "NaT": ""})
    counts: dict[str, int] = {}
    victims = rng.permutation(n)
    take = iter(np.array_split(victims[: per_kind * 5], 5))

    idx = next(take)
    s.loc[idx, "amount"] = "not-a-number"
    counts["wrong_type"] = len(idx)
    idx = next(take)
    s.loc[idx, "event_time"] = _iso(df.loc[idx, "event_time"] + pd.Timedelta(days=30))
    counts["future_timestamp"] = len(idx)
    idx = next(take)
    s.loc[idx, "label"] = "2"
    counts["label_out_of_range"] = len(idx)
    idx = next(take)
    s.loc[idx, "amount"] = (-df.loc[idx, "amount"]).astype(str)
    counts["negative_amount"] = len(idx)
    dup_idx = next(take)
    dups = s.loc[dup_idx]
    counts["duplicate_within_day"] = len(dups)
    frames = [s, dups]
    prev = day - dt.timedelta(days=1)
    if prev >= cfg.start_date:
        prev_df, _ = generate_day(cfg, pop, prev, seed=seed, inject_bad=False)
        pick = prev_df.sample(n=min(per_kind, len(prev_df)), random_state=int(rng.integers(2**31)))
        pd_prev = pick.astype(object)
        pd_prev["event_time"] = _iso(pick["event_time"])
        pd_prev["label_time"] = _iso(pick["label_time"])
        frames.append(pd_prev.astype(str).replace({"nan": "", "<NA>": "", "NaT": ""}))
        counts["duplicate_across_days"] = len(pick)
    out = pd.concat(frames, ignore_index=True)
    malformed = []
    for i in range(per_kind):
        row = out.iloc[int(rng.integers(len(out)))].tolist()
        malformed.append(",".join(row[: 4 + i % 5]) if i % 2 == 0 else ",".join([*row, "extra", "fields"]))
    out.attrs["malformed_lines"] = malformed
    counts["malformed_line"] = len(malformed)
    return out, counts


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    """The landing CSV: ISO-8601 UTC timestamps, empty string for missing values."""
    if df.attrs.get("malformed_lines") is not None or df["amount"].dtype == object:
        buf = io.StringIO()
        df.to_csv(buf, index=False, lineterminator="\n")
        text = buf.getvalue()
        extra = df.attrs.get("malformed_lines") or []
        if extra:
            text += "\n".join(extra) + "\n"
        return text.encode()
    table = pa.Table.from_pandas(
        df.assign(event_time=_iso(df["event_time"]), label_time=_iso(df["label_time"])), preserve_index=False
    )
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(quoting_style="needed"))
    return sink.getvalue()
