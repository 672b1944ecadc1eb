"""Errors a user can fix: the CLI prints them as one line and exits 2, without a traceback."""

from typing import Any


class TuitrainError(Exception):
    """A problem with the user's input or environment, worded for the user (what, where, how to fix)."""

    exit_code = 2


class DataError(TuitrainError):
    """The MNIST data could not be found or is malformed."""


class PresetError(TuitrainError):
    """A preset file is missing, unparsable or invalid."""


class RecordError(TuitrainError):
    """A run file cannot be read: not JSON, not a run record, or from a newer tuitrain."""


def first_error(exc: Any) -> tuple[str, str]:
    """(where, what) of the first error of a pydantic ValidationError, for a one-line message.

    `where` is the dotted location ('spec.lr', 'epochs.0.test_accuracy'), '(top level)' when there is none.
    Takes the error duck-typed (anything with .errors()), so core need not import pydantic.
    """
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return where, first["msg"]


class RunFilesError(TuitrainError):
    """A run file or checkpoint could not be written while training (folder unwritable or gone, disk full).

    The run ends as interrupted, resumable once the cause is fixed; the runs after it do not start."""

    exit_code = 1
