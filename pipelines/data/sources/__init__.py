"""Source adapters: map raw files of one kind onto the event-table contract (DESIGN.md).

An adapter lists its landing files and reads one into a pyarrow table whose columns are the event
table's (``event_id``, ``event_time``, the entity key, the declared feature columns, ``label``,
``label_time``), still as raw strings where the file is text: type coercion and every row-level check
happen in the ETL stage, the same for every source. An adapter never drops a row; it may drop columns
(leaky ones), and it reports lines it could not parse so that they are quarantined, not lost.
"""

from __future__ import annotations

from pipelines.core.errors import InputError
from pipelines.core.config import Params
from pipelines.data.sources.base import (
    BadLine,
    CsvAdapter,
    FileRejected,
    RawBatch,
    SourceAdapter,
    count_data_lines,
)
from pipelines.data.sources.generic import GenericAdapter
from pipelines.data.sources.hotel import HotelAdapter

__all__ = ["BadLine", "FileRejected", "RawBatch", "SourceAdapter", "adapter_for", "count_data_lines"]


def adapter_for(params: Params) -> SourceAdapter:
    """The adapter that ``params.source.kind`` selects."""
    kind = params.source.kind
    if kind == "synthetic":
        return CsvAdapter(schema=params.schema, pattern="*.csv", encoding=params.source.encoding)
    if kind == "generic":
        return GenericAdapter(
            schema=params.schema, cfg=params.source.generic, encoding=params.source.encoding
        )
    if kind == "hotel":
        return HotelAdapter(schema=params.schema, cfg=params.source.hotel, encoding=params.source.encoding)
    raise InputError(f"params: source.kind = {kind!r}: expected synthetic, hotel or generic")
