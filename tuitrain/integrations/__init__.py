"""Training frameworks logging to tuitrain through its logging API (tuitrain.script): a Lightning logger
(tuitrain.integrations.lightning) and a Hugging Face Trainer callback (tuitrain.integrations.transformers).

Each imports its framework in its own module only (an optional extra: tuitrain[lightning], tuitrain[transformers]);
importing one without its framework is an ImportError that says what to install. This package imports neither.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Mapping
from typing import Any


def missing(framework: str, extra: str, exc: ImportError) -> ImportError:
    """The ImportError for an integration whose framework is not installed, naming the extra."""
    return ImportError(f"tuitrain.integrations.{extra} needs {framework} ({exc}): pip install 'tuitrain[{extra}]'")


def config_values(params: Mapping[str, Any]) -> dict[str, Any]:
    """A framework's hyperparameters as a run's config accepts them: nested mappings kept (flattened to 'a/b' by
    the API), numbers, strings, bools and lists of them as they are, anything else (a class, a module, a dtype, a
    path, an enum) as its text."""

    def value(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): value(x) for k, x in v.items()}
        if isinstance(v, enum.Enum):
            v = v.value
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else str(v)
        if isinstance(v, (list, tuple)) and all(x is None or isinstance(x, (bool, int, float, str)) for x in v):
            return list(v)
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        return str(v)

    return {str(k): value(v) for k, v in params.items()}
