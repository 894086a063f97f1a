from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core import storage


def test_atomic_write_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.bin"
    storage.write_bytes(target, b"hello")
    storage.write_bytes(target, b"world")
    assert target.read_bytes() == b"world"
    assert [p.name for p in target.parent.iterdir()] == ["b.bin"]


def test_failed_write_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    storage.write_json(target, {"v": 1})

    class Boom:
        def __bytes__(self) -> bytes:
            raise RuntimeError("boom")

    with pytest.raises(TypeError):
        storage.write_bytes(target, Boom())  # type: ignore[arg-type]
    assert storage.read_json(target) == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["x.json"]


def test_listing_skips_hidden_temporaries(tmp_path: Path) -> None:
    (tmp_path / ".tmp-123").write_bytes(b"partial")
    (tmp_path / "part-a.parquet").write_bytes(b"x")
    assert storage.list_files(tmp_path) == [str(tmp_path / "part-a.parquet")]


def test_parquet_bytes_are_deterministic(tmp_path: Path) -> None:
    t = pa.table({"a": [1, 2, 3], "b": ["x", None, "z"]})
    storage.write_parquet(tmp_path / "one.parquet", t)
    storage.write_parquet(tmp_path / "two.parquet", t)
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()
    assert storage.read_parquet(tmp_path / "one.parquet").equals(t)


def test_json_is_canonical(tmp_path: Path) -> None:
    storage.write_json(tmp_path / "a.json", {"b": 1, "a": 2})
    storage.write_json(tmp_path / "b.json", {"a": 2, "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no storage backend for scheme 'gs'"):
        storage.read_bytes("gs://bucket/key")


def test_streamed_parquet_is_one_file_written_only_when_the_stream_ends(tmp_path: Path) -> None:
    target = tmp_path / "p" / "part.parquet"
    batches = [pa.record_batch({"a": [i, i + 1], "b": ["x", None]}) for i in (0, 2, 4)]
    assert storage.write_parquet_batches(target, iter(batches)) == 6
    assert storage.read_parquet(target).equals(pa.Table.from_batches(batches))
    old = target.read_bytes()

    def failing():
        yield batches[0]
        raise RuntimeError("producer failed mid-stream")

    with pytest.raises(RuntimeError, match="mid-stream"):
        storage.write_parquet_batches(target, failing())
    assert target.read_bytes() == old  # the earlier file stays whole; no partial file, no temporaries
    assert [p.name for p in target.parent.iterdir()] == ["part.parquet"]
    with pytest.raises(ValueError, match="no record batches"):
        storage.write_parquet_batches(tmp_path / "empty.parquet", iter([]))
    assert not (tmp_path / "empty.parquet").exists()


def test_streamed_parquet_encoding_options_keep_the_content(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    batch = pa.record_batch({"id": ["a", "b", "c"], "cat": ["x", "x", "y"], "score": [0.1, 0.2, 0.3]})
    target = tmp_path / "p.parquet"
    storage.write_parquet_batches(target, [batch], no_dictionary=["id", "score"], statistics=["score"])
    assert storage.read_parquet(target).equals(pa.Table.from_batches([batch]))
    meta = pq.ParquetFile(target).metadata.row_group(0)
    cols = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert cols["cat"].has_dictionary_page and not cols["id"].has_dictionary_page
    assert cols["score"].is_stats_set and not cols["id"].is_stats_set


def test_dictionary_columns_stream_out_and_read_back_as_plain_strings(tmp_path: Path) -> None:
    """Dictionary-coded text read from a file (read_dictionary) writes as it is; with store_schema=False
    a reader gets the plain strings back, as if they had never been coded."""
    plain = pa.table({"id": ["a", "b", "c", "d"], "cat": ["x", None, "y", "x"], "v": [1.0, 2.0, 3.0, 4.0]})
    src = tmp_path / "src.parquet"
    storage.write_parquet(src, plain)
    batches = list(storage.iter_parquet_batches(src, batch_size=3, read_dictionary=["cat"]))
    assert [b.num_rows for b in batches] == [3, 1]
    assert pa.types.is_dictionary(batches[0].schema.field("cat").type)
    assert not pa.types.is_dictionary(batches[0].schema.field("id").type)
    out = tmp_path / "out.parquet"
    assert storage.write_parquet_batches(out, batches, store_schema=False) == 4
    assert storage.read_parquet(out).equals(plain)
