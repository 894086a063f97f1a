"""The errors a user can act on, told apart from bugs.

A command that fails on an :class:`InputError` (a file, params key, row or option that is wrong), on any
exception class Loopline defines, or on a storage error (``OSError``) ends with one line that names the thing
and the fix, and exit code 2; a check that ran and refused (validation, leakage, the gate) says so in one
line with exit code 1. Anything else is a bug: the CLI prints the traceback and exits 1
(:func:`pipelines.cli.main`).
"""

from __future__ import annotations

EXIT_USER_ERROR = 2
EXIT_CHECK_FAILED = 1


class LooplineError(Exception):
    """An expected failure: the message names the file, key or row and the fix."""

    exit_code = EXIT_USER_ERROR


class InputError(LooplineError, ValueError):
    """Bad input (a file, params key, row or command-line option); still a ``ValueError`` for callers."""


def is_expected(err: BaseException) -> bool:
    """A failure the user can fix (one line), as opposed to a bug (a traceback)."""
    if isinstance(err, LooplineError | OSError):
        return True
    return type(err).__module__.split(".")[0] == "pipelines"  # every class Loopline defines (edge/ included)


def exit_code(err: BaseException) -> int:
    """2 for an error the user fixes, 1 for a check that refused (the class says so with ``exit_code``)."""
    return int(getattr(type(err), "exit_code", EXIT_USER_ERROR))


def error_line(err: BaseException) -> str:
    """The one line an expected failure ends with."""
    return "error: " + (" ".join(str(err).split()) or type(err).__name__)
