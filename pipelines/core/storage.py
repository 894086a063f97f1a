"""The one storage layer every stage reads and writes through.

A location is a string: a local path (``data/lake``) or, once the S3 backend is configured, an
``s3://bucket/prefix`` URI. Stages never open files on their own; they call the functions here, which
dispatch on the location's scheme.

Writes are atomic: a local write goes to a hidden temporary file in the target folder, is fsync'ed,
then renamed over the target (``os.replace``), so a reader sees either the old content or the new one,
never a partial file, even if the writer is killed mid-write. Listing skips those hidden temporaries.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.errors import InputError
from pipelines.core.storage_backend import TMP_PREFIX, Backend

__all__ = [
    "Backend",
    "backend_for",
    "copy_file",
    "create_bytes",
    "delete",
    "exists",
    "join",
    "list_files",
    "read_bytes",
    "read_json",
    "read_parquet",
    "sha256_of",
    "stat",
    "write_bytes",
    "write_json",
    "write_parquet",
]


class LocalBackend:
    """Local disk with temp-file + rename writes."""

    def read_bytes(self, loc: str) -> bytes:
        return Path(loc).read_bytes()

    def write_bytes(self, loc: str, data: bytes) -> None:
        target = Path(loc)
        tmp = ""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=target.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except OSError as err:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            # Name the target and the fix: a bare "[Errno 28] No space left on device" names nothing.
            raise OSError(
                err.errno,
                f"cannot write {target} ({len(data)} bytes): {err.strerror or err}; "
                f"check free space and write permission on {target.parent}",
            ) from err
        except BaseException:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, loc: str) -> bool:
        return Path(loc).exists()

    def list_files(self, loc: str, pattern: str = "*", recursive: bool = False) -> list[str]:
        root = Path(loc)
        if not root.is_dir():
            return []
        it = root.rglob("*") if recursive else root.iterdir()
        out = []
        for p in it:
            if p.is_file() and not p.name.startswith(TMP_PREFIX) and fnmatch.fnmatch(p.name, pattern):
                out.append(str(p))
        return sorted(out)

    def delete(self, loc: str) -> None:
        p = Path(loc)
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)

    def create_bytes(self, loc: str, data: bytes) -> bool:
        """Write ``data`` to ``loc`` only if nothing is there (temp file + hard link: atomic, never clobbers)."""
        target = Path(loc)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, target)  # fails with FileExistsError if another writer got there first
            except FileExistsError:
                return False
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    def local_path(self, loc: str) -> Path | None:
        return Path(loc)

    def stat(self, loc: str) -> tuple[int, int]:
        st = Path(loc).stat()
        return st.st_size, st.st_mtime_ns


_LOCAL = LocalBackend()
_BACKENDS: dict[str, Backend] = {}


def register_backend(scheme: str, backend: Backend) -> None:
    """Register a backend for a URI scheme (the S3 backend registers ``s3``)."""
    _BACKENDS[scheme] = backend


def backend_for(loc: str) -> Backend:
    if "://" in loc:
        scheme = loc.split("://", 1)[0]
        if scheme not in _BACKENDS and scheme == "s3":
            from pipelines.core.s3_storage import (
                S3Backend,  # lazy: boto3 is heavy and local runs never need it
            )

            register_backend("s3", S3Backend())
        if scheme not in _BACKENDS:
            raise InputError(
                f"location {loc!r}: no storage backend for scheme {scheme!r}; use a local path or s3://"
            )
        return _BACKENDS[scheme]
    return _LOCAL


def join(base: str | Path, *parts: str) -> str:
    base = str(base)
    if "://" in base:
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def read_bytes(loc: str | Path) -> bytes:
    return backend_for(str(loc)).read_bytes(str(loc))


def write_bytes(loc: str | Path, data: bytes) -> None:
    backend_for(str(loc)).write_bytes(str(loc), data)


def exists(loc: str | Path) -> bool:
    return backend_for(str(loc)).exists(str(loc))


def list_files(loc: str | Path, pattern: str = "*", *, recursive: bool = False) -> list[str]:
    return backend_for(str(loc)).list_files(str(loc), pattern, recursive)


def create_bytes(loc: str | Path, data: bytes) -> bool:
    """Create ``loc`` holding ``data`` only if it does not exist yet: True if this call created it, False if
    something was already there (left untouched). Atomic and race-free: of several concurrent callers
    exactly one gets True (local: hard link of a complete temp file; S3: conditional PUT If-None-Match)."""
    backend = backend_for(str(loc))
    create = getattr(backend, "create_bytes", None)
    if create is None:
        raise NotImplementedError(
            f"location {loc}: the {type(backend).__name__} storage backend has no exclusive create; "
            "use a local path or s3://"
        )
    return bool(create(str(loc), data))


def delete(loc: str | Path) -> None:
    backend_for(str(loc)).delete(str(loc))


def stat(loc: str | Path) -> tuple[int, int]:
    """(size in bytes, last-modified time in ns) of a file or object, without reading it."""
    return backend_for(str(loc)).stat(str(loc))


def local_path(loc: str | Path) -> Path | None:
    """The local filesystem path for a location, or None when it is remote."""
    return backend_for(str(loc)).local_path(str(loc))


def ensure_dir(loc: str | Path) -> None:
    """Create a local folder (an output that must exist even when empty); a no-op for object stores."""
    path = local_path(loc)
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)


def copy_file(src: str | Path, dst: str | Path) -> None:
    write_bytes(dst, read_bytes(src))


def read_json(loc: str | Path) -> Any:
    return json.loads(read_bytes(loc))


def write_json(loc: str | Path, obj: Any) -> None:
    """Deterministic JSON (sorted keys, fixed indent) so identical content gives identical bytes."""
    write_bytes(loc, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_parquet(loc: str | Path, columns: list[str] | None = None) -> pa.Table:
    path = local_path(loc)
    if path is not None:
        return pq.read_table(path, columns=columns)
    return pq.read_table(io.BytesIO(read_bytes(loc)), columns=columns)


def parquet_rows(loc: str | Path) -> int:
    """The row count in a Parquet file's footer (a local file is not read beyond its footer)."""
    path = local_path(loc)
    src: Any = path if path is not None else io.BytesIO(read_bytes(loc))
    return int(pq.ParquetFile(src).metadata.num_rows)


def parquet_bytes(table: pa.Table, *, compression: str = "zstd") -> bytes:
    """Serialize a table to Parquet bytes deterministically (same table -> same bytes)."""
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression=None if compression == "none" else compression,
        write_statistics=True,
        store_schema=True,
    )
    return sink.getvalue()


def write_parquet(loc: str | Path, table: pa.Table, *, compression: str = "zstd") -> None:
    write_bytes(loc, parquet_bytes(table, compression=compression))


def write_parquet_batches(
    loc: str | Path,
    batches: Iterable[pa.RecordBatch],
    *,
    compression: str = "zstd",
    no_dictionary: Iterable[str] = (),
    statistics: bool | list[str] = True,
    store_schema: bool = True,
) -> int:
    """Stream record batches into one Parquet file (a row group per batch), written atomically at the end
    like :func:`write_parquet`. Each batch is encoded on a writer thread as soon as it arrives (Arrow
    releases the GIL), while the producer makes the next (at most two wait), so encoding overlaps the
    producer's work. ``no_dictionary`` names columns not worth dictionary-encoding (unique ids, floats:
    the encoder tries and gives up), ``statistics`` the columns whose min/max a reader prunes on (or all /
    none). ``store_schema=False`` leaves the Arrow schema out of the file: dictionary-typed columns (cheap
    to write: the dictionary is already built) then read back as their plain value type.
    Returns the number of rows; raises ValueError on no batches (a Parquet file needs a schema)."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    skip = set(no_dictionary)
    sink = io.BytesIO()
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopline-write") as pool:
            pending: deque[Future[None]] = deque()
            for batch in batches:
                if writer is None:
                    dictionary = [c for c in batch.schema.names if c not in skip] if skip else True
                    writer = pq.ParquetWriter(
                        sink, batch.schema, compression=None if compression == "none" else compression,
                        use_dictionary=dictionary, write_statistics=statistics, store_schema=store_schema,
                    )  # fmt: skip
                pending.append(pool.submit(writer.write_batch, batch))
                rows += batch.num_rows
                while len(pending) > 2:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise InputError(f"{loc}: no record batches to write")
    write_bytes(loc, sink.getvalue())
    return rows


def sha256_of(loc: str | Path, chunk: int = 1 << 20) -> str:
    path = local_path(loc)
    h = hashlib.sha256()
    if path is not None:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
    else:
        h.update(read_bytes(loc))
    return h.hexdigest()


def iter_parquet_batches(
    loc: str | Path,
    batch_size: int = 65_536,
    columns: list[str] | None = None,
    read_dictionary: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream a Parquet file in record batches (bounded memory); ``read_dictionary`` columns come
    dictionary-typed (no strings materialized for a column the file stores dictionary-encoded)."""
    path = local_path(loc)
    src: Any = path if path is not None else io.BytesIO(read_bytes(loc))
    pf = pq.ParquetFile(src, read_dictionary=read_dictionary)
    yield from pf.iter_batches(batch_size=batch_size, columns=columns)
