"""What every ``loopline`` command shares: the ``--params`` option, logging, and reading params once."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipelines.core.config import PARAMS_FILE_ENV, Params, edit_target, load_params
from pipelines.core.errors import InputError

log = logging.getLogger("loopline")

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def local_path(value: str | Path) -> Path:
    """The parser of every option that takes a local path only: an ``s3://`` (or any URL) value is refused
    in one line. Typed as a plain Path, ``s3://bucket/x`` became the local folder ``s3:/bucket/x``. (Typer
    also passes an option's default through the parser: a Path default is returned as it is.)"""
    if isinstance(value, Path):
        return value
    if _URL.match(value):
        raise typer.BadParameter(
            f"{value} is a URL; this option writes or reads a local path only. Use a local folder (and copy "
            "it to object storage afterwards, e.g. `aws s3 sync FOLDER s3://...`)"
        )
    return Path(value)


ParamsOpt = Annotated[
    Path, typer.Option("--params", "-p", parser=local_path, help="params file (a profile) to read")
]


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("great_expectations", "urllib3", "botocore", "matplotlib", "h5py", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def params_or_exit(path: Path) -> Params:
    """The validated params, or one line naming the file and key and exit 2."""
    params = load_params(path)  # a ConfigError ends the command in one line (pipelines.cli.LazyGroup.invoke)
    # messages about a parameter name the file the user edits (the profile behind a `loopline run` copy)
    os.environ[PARAMS_FILE_ENV] = edit_target(path, path.read_text(encoding="utf-8"))
    return params


def iso_date(value: str, option: str) -> dt.date:
    """A command-line date, or one line naming the option and the form it takes."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InputError(f"{option} {value!r}: expected a date YYYY-MM-DD, e.g. 2024-03-01") from None


def iso_time(value: str, option: str) -> dt.datetime:
    """A command-line time (a date alone means its midnight), or one line naming the option and the form."""
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{option} {value!r}: expected an ISO date or time, e.g. 2024-03-01 or 2024-03-01T12:00:00+00:00"
        ) from None
