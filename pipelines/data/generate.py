"""Generate stage: write the synthetic source's landing files (one CSV per day)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from tqdm import tqdm

from pipelines.core import storage
from pipelines.core.config import SyntheticConfig
from pipelines.data.sources.synthetic import generate_day, make_population, to_csv_bytes

log = logging.getLogger(__name__)


def landing_name(day: dt.date) -> str:
    return f"{day.isoformat()}.csv"


def generate_landing(cfg: SyntheticConfig, *, out: str, seed: int, progress: bool = True) -> dict[str, Any]:
    """Write ``cfg.days`` daily files into ``out``; a file whose bytes are already there is not rewritten.

    With bad records on, each day's injected counts go to ``<day>.injected.json`` beside its CSV.
    """
    pop = make_population(cfg, seed=seed)
    written = kept = rows = 0
    injected_total: dict[str, int] = {}
    days = [cfg.start_date + dt.timedelta(days=i) for i in range(cfg.days)]
    for day in tqdm(days, desc="generate", unit="day", disable=not progress):
        df, injected = generate_day(cfg, pop, day, seed=seed)
        data = to_csv_bytes(df)
        loc = storage.join(out, landing_name(day))
        rows += len(df) + len(df.attrs.get("malformed_lines") or [])
        if storage.exists(loc) and storage.read_bytes(loc) == data:
            kept += 1
        else:
            storage.write_bytes(loc, data)
            written += 1
        if injected:
            storage.write_json(storage.join(out, f"{day.isoformat()}.injected.json"), injected)
            for k, v in injected.items():
                injected_total[k] = injected_total.get(k, 0) + v
    log.info("generated %d day(s): %d written, %d unchanged, %d rows", len(days), written, kept, rows)
    return {
        "days": len(days),
        "files_written": written,
        "files_unchanged": kept,
        "rows": rows,
        "injected_bad_records": injected_total,
    }
