"""Preset experiments: TOML files validated by pydantic, expanded into labelled runs.

A preset has a name, a title, a description, `defaults` (RunSpec fields shared by all runs), and
either a list of `[[runs]]` (each with optional `label` and RunSpec fields), a `[grid]` of
RunSpec fields to lists of values (expanded as a cartesian product), or both (grid x runs).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuitrain.core.errors import PresetError
from tuitrain.core.spec import RunSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPEC_FIELDS = set(RunSpec.model_fields) - {"data_source"}
MAX_RUNS = 1000
"""A grid larger than this is surely a mistake (and would take forever to expand)."""
_NOT_GIVEN = object()


def line_of(text: str, key: str, value: Any = _NOT_GIVEN, section: Optional[str] = None) -> Optional[int]:
    """1-based line where `key = ...` is set in a TOML text, within `[section]` if given (preferring the
    line that also shows `value`). Good enough to point a person at the right line."""
    pattern = re.compile(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=""")
    header = re.compile(r"^\s*\[")
    current: Optional[str] = None
    lines = []
    for i, line in enumerate(text.splitlines(), 1):
        if header.match(line):
            current = line.strip().strip("[]").strip()
        elif pattern.match(line) and (section is None or current == section):
            lines.append(i)
    if value is not _NOT_GIVEN:
        shown = [i for i in lines if str(value).lower() in text.splitlines()[i - 1].lower()]
        lines = shown or lines
    return lines[0] if lines else None


@dataclass(frozen=True)
class PresetRun:
    label: str
    spec: RunSpec


class Preset(BaseModel):
    """A preset experiment file."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)
    """Short name used on the command line (--preset NAME)."""
    title: str = Field(min_length=1)
    """One-line title."""
    description: str = ""
    """What the experiment shows."""
    defaults: dict[str, Any] = Field(default_factory=dict)
    """RunSpec fields shared by every run."""
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """RunSpec fields to lists of values; every combination becomes a run."""
    runs: list[dict[str, Any]] = Field(default_factory=list)
    """Explicit runs: optional `label` plus RunSpec fields."""

    def expand(self, overrides: Optional[dict[str, Any]] = None, source: str = "", text: str = "") -> list[PresetRun]:
        """The preset's runs, each a validated RunSpec with a readable label; CLI overrides win.

        Values from the file are checked strictly (TOML has types: "3" is not a number); `text`, the
        file's TOML, lets errors name the line.
        """

        def where(key: Optional[str] = None, value: Any = _NOT_GIVEN, section: Optional[str] = None) -> str:
            line = line_of(text, key, value, section) if text and key else None
            base = source or self.name
            return f"{base}:{line}" if line else base

        for section, keys in (("defaults", self.defaults), ("grid", self.grid)):
            for key in keys:
                if key not in SPEC_FIELDS:
                    raise PresetError(f"{where(key, section=section)}: unknown setting {key!r}. Known: {', '.join(sorted(SPEC_FIELDS))}.")
        for key, values in self.grid.items():
            if not values:
                raise PresetError(f"{where(key, section='grid')}: grid.{key} is an empty list; give at least one value.")
        size = max(len(self.runs), 1) * math.prod(len(v) for v in self.grid.values())
        if size > MAX_RUNS:
            raise PresetError(f"{where()}: {size} runs is more than {MAX_RUNS}; make the grid smaller.")
        explicit = self.runs or [{}]
        grid_keys = list(self.grid)
        combos = list(itertools.product(*(self.grid[k] for k in grid_keys))) if grid_keys else [()]
        result = []
        for run_no, entry in enumerate(explicit, 1):
            entry = dict(entry)
            label = entry.pop("label", None)
            for key in entry:
                if key not in SPEC_FIELDS:
                    raise PresetError(
                        f"{where(key, section='runs')}: runs[{run_no}]: unknown setting {key!r}. Known: {', '.join(sorted(SPEC_FIELDS))}."
                    )
            for combo in combos:
                values = {**self.defaults, **entry, **dict(zip(grid_keys, combo))}
                try:
                    RunSpec.model_validate(values, strict=True)  # the file's own values, strictly typed
                    spec = RunSpec.model_validate({**values, **(overrides or {})})
                except ValidationError as exc:
                    first = exc.errors()[0]
                    key = ".".join(str(p) for p in first["loc"])
                    value = first.get("input")
                    section = "grid" if key in grid_keys else "runs" if key in entry else "defaults"
                    raise PresetError(f"{where(key, value, section)}: {key} = {value!r}: {first['msg']}.") from None
                parts = [str(label)] if label is not None else []
                if label is None:
                    parts += [f"{k}={v}" for k, v in entry.items()]
                parts += [f"{k}={v}" for k, v in zip(grid_keys, combo)]
                result.append(PresetRun(label=", ".join(parts) or self.name, spec=spec))
        labels = [r.label for r in result]
        if len(set(labels)) != len(labels):
            seen: dict[str, int] = {}
            for i, r in enumerate(result):
                seen[r.label] = seen.get(r.label, 0) + 1
                if labels.count(r.label) > 1:
                    result[i] = PresetRun(label=f"{r.label} #{seen[r.label]}", spec=r.spec)
        return result


def builtin_presets() -> Traversable:
    """The presets shipped inside the package (this folder), read through importlib.resources."""
    return resources.files(__name__)


def presets_dirs() -> list[Union[Path, Traversable]]:
    """Where named presets are looked up, first match wins: TUITRAIN_PRESETS_DIR, ./presets, then the
    ones shipped with tuitrain."""
    dirs: list[Union[Path, Traversable]] = []
    if os.environ.get("TUITRAIN_PRESETS_DIR"):
        dirs.append(Path(os.environ["TUITRAIN_PRESETS_DIR"]))
    dirs.append(Path.cwd() / "presets")
    seen, unique = set(), []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if key not in seen and d.is_dir():
            seen.add(key)
            unique.append(d)
    builtin = builtin_presets()
    if not (isinstance(builtin, Path) and builtin.resolve() in seen):  # a checkout's ./presets is this folder
        unique.append(builtin)
    return unique


def load_preset_file(path: Union[Path, Traversable]) -> Preset:
    """Read and validate a preset file (a path, or a packaged resource); PresetError says what is wrong."""
    path = path if isinstance(path, Traversable) else Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(f"{path}: cannot read ({exc}).") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        at = re.search(r"\s*\(at line (\d+), column (\d+)\)", msg)
        where = f" at line {at.group(1)}, column {at.group(2)}" if at else ""
        msg = msg[: at.start()] if at else msg
        raise PresetError(
            f"{path}: TOML syntax error{where}: {msg}. Fix the syntax there (key = value, strings in quotes)."
        ) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer with too many digits, absurd nesting
        raise PresetError(f"{path}: not a usable TOML file ({type(exc).__name__}: {str(exc)[:100]}).") from None
    try:
        preset = Preset.model_validate(data)
    except RecursionError:
        raise PresetError(f"{path}: nested too deeply to be a preset.") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        line = line_of(text, str(first["loc"][-1])) if first["loc"] else None
        where = f"{path}:{line}" if line else str(path)
        if first["type"] == "extra_forbidden":
            msg = f"unknown key. Known: {', '.join(Preset.model_fields)}"
        else:
            msg = first["msg"]
        raise PresetError(f"{where}: {key}: {msg}.") from None
    preset.expand(source=str(path), text=text)  # validate every run now, not when it starts
    return preset


def available_presets() -> dict[str, Union[Path, Traversable]]:
    """Named presets (file name without .toml) to their files, first folder first."""
    found: dict[str, Union[Path, Traversable]] = {}
    for folder in presets_dirs():
        for path in sorted((p for p in folder.iterdir() if p.name.endswith(".toml") and p.is_file()), key=lambda p: p.name):
            found.setdefault(path.name[: -len(".toml")], path)
    return found


def find_preset(name_or_path: str) -> Preset:
    """A preset by name (from the presets folders) or by path to a .toml file."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix == ".toml" or os.sep in name_or_path or candidate.is_file():
        if not candidate.is_file():
            raise PresetError(f"{candidate}: no such preset file.")
        return load_preset_file(candidate)
    known = available_presets()
    if name_or_path not in known:
        names = ", ".join(sorted(known)) or "(none found)"
        raise PresetError(f"unknown preset {name_or_path!r}. Available: {names}. Or pass a path to a .toml file.")
    return load_preset_file(known[name_or_path])
