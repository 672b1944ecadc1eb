"""Errors a user can fix: the CLI prints them as one line and exits 2, without a traceback."""

from dataclasses import dataclass
from typing import Any

from tuitrain.core.text import printable


class TuitrainError(Exception):
    """A problem with the user's input or environment, worded for the user (what, where, how to fix)."""

    exit_code = 2


class DataError(TuitrainError):
    """The MNIST data could not be found or is malformed."""


class PresetError(TuitrainError):
    """A preset file is missing, unparsable or invalid."""


class RecordError(TuitrainError):
    """A run file cannot be read: not JSON, not a run record, or from a newer tuitrain."""


@dataclass(frozen=True)
class FirstError:
    """The first error of a pydantic ValidationError, for a one-line message."""

    where: str
    """Dotted location ('spec.lr', 'epochs.0.test_accuracy'); '(top level)' when there is none."""
    msg: str
    """Pydantic's message, e.g. 'Input should be less than or equal to 65536'."""
    loc: tuple[Any, ...]
    """The location's parts."""
    kind: str
    """Pydantic's error type, e.g. 'extra_forbidden'."""
    input: Any
    """The value that was refused."""


def first_error(exc: Any) -> FirstError:
    """The first error of a pydantic ValidationError. Takes the error duck-typed (anything with .errors()), so
    core need not import pydantic."""
    first = exc.errors()[0]
    loc = tuple(first.get("loc", ()))
    where = printable(".".join(str(p) for p in loc)) or "(top level)"  # field names come from the file
    msg = str(first["msg"]).removeprefix("Value error, ")  # a validator's own words, without pydantic's prefix
    return FirstError(where=where, msg=msg, loc=loc, kind=first.get("type", ""), input=first.get("input"))


class RunFilesError(TuitrainError):
    """A run file or checkpoint could not be written while training (folder unwritable or gone, disk full).

    The run ends as interrupted, resumable once the cause is fixed; the runs after it do not start."""

    exit_code = 1
