"""The interface every storage backend implements (local disk in ``storage``, S3 in ``s3_storage``).

Kept apart from both so that neither backend imports the other: ``storage`` dispatches on a location's scheme
and loads the S3 backend only when an ``s3://`` location is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

TMP_PREFIX = ".tmp-"


class Backend(Protocol):
    def read_bytes(self, loc: str) -> bytes: ...
    def write_bytes(self, loc: str, data: bytes) -> None: ...
    def exists(self, loc: str) -> bool: ...
    def list_files(self, loc: str, pattern: str = "*", recursive: bool = False) -> list[str]: ...
    def delete(self, loc: str) -> None: ...
    def local_path(self, loc: str) -> Path | None: ...
    def stat(self, loc: str) -> tuple[int, int]: ...  # (size in bytes, modified time in ns)
