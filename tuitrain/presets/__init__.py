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
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, model_validator

from tuitrain.core.errors import PresetError, TuitrainError, first_error
from tuitrain.core.spec import DATASET_SIZES, RunSpec, beyond_dataset
from tuitrain.core.text import printable

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable

    import tomllib
else:  # pragma: no cover
    from importlib.abc import Traversable

    import tomli as tomllib

SPEC_FIELDS = set(RunSpec.model_fields) - {"data_source", "model_dir"}
SEEDS_KEY = "seeds"
"""In the overrides given to `Preset.expand`: the seeds to repeat every run with (the CLI's --seeds)."""
MAX_RUNS = 1000
"""A grid larger than this is surely a mistake (and would take forever to expand)."""
_NOT_GIVEN = object()


def line_of(text: str, key: str, value: Any = _NOT_GIVEN, section: str | None = None) -> int | None:
    """1-based line where `key = ...` is set in a TOML text, within `[section]` if given (preferring the
    line that also shows `value`). Good enough to point a person at the right line."""
    pattern = re.compile(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=""")
    header = re.compile(r"^\s*\[")
    current: str | None = None
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
class _Where:
    """Where a preset error is: the file (else the preset's name), at the line that sets a key when its text is
    known."""

    base: str
    text: str = ""

    def __call__(self, key: str | None = None, value: Any = _NOT_GIVEN, section: str | None = None) -> str:
        line = line_of(self.text, key, value, section) if self.text and key else None
        return f"{self.base}:{line}" if line else self.base


def _numbered(runs: list[PresetRun]) -> list[PresetRun]:
    """Runs whose labels would repeat, told apart by a number: 'lr=0.1 #1', 'lr=0.1 #2'."""
    labels = [r.label for r in runs]
    if len(set(labels)) == len(labels):
        return runs
    seen: dict[str, int] = {}
    numbered = []
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
        numbered.append(
            PresetRun(label=f"{run.label} #{seen[run.label]}", spec=run.spec) if labels.count(run.label) > 1 else run
        )
    return numbered


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
    seeds: list[int] = Field(default_factory=list)
    """Train every run once per seed (labels gain `seed=N`); empty = once, with the run's own seed."""
    jobs: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    """Runs trained at once, each in its own worker process; "auto" picks from the machine, and on one GPU trains them
    in the invoking process (fused, or side by side on CUDA streams) (--jobs overrides)."""
    cpus_per_run: Annotated[float, Field(gt=0)] | None = None
    """With --executor ray: CPUs Ray reserves for each run (None: 1; --cpus-per-run overrides)."""
    gpus_per_run: Annotated[float, Field(ge=0)] | None = None
    """With --executor ray: GPUs Ray reserves for each run, fractions sharing a GPU (None: 0, the CPU;
    --gpus-per-run overrides)."""
    _source: str | None = PrivateAttr(None)
    _folder: str | None = PrivateAttr(None)

    @property
    def source(self) -> str | None:
        """The preset file's path, for messages (None for a preset not read from a file)."""
        return self._source

    @property
    def folder(self) -> str | None:
        """The preset file's folder, where a "module:Attr" model's module is looked up first."""
        return self._folder

    @model_validator(mode="after")
    def _check_runs(self, info: ValidationInfo) -> Preset:
        """Every run the file describes, checked as the preset is loaded (not when a run starts): plain text, known
        settings, a grid of values, a sane size, and each run's settings valid as the file types them (TOML has
        types: "3" is not a number). PresetError names the file and line: load_preset_file passes the file's path
        and TOML text as the validation context ("source", "text")."""
        context = info.context or {}
        where = _Where(context.get("source") or self.name, context.get("text", ""))
        for key, value, keep in (("title", self.title, ""), ("description", self.description, "\n\t")):
            if printable(value, keep) != value:
                raise PresetError(
                    f"{where(key)}: {key} holds a control character ({_first_control(value, keep)}); write plain text."
                )
        for section, keys in (("defaults", self.defaults), ("grid", self.grid)):
            for key in keys:
                if key not in SPEC_FIELDS:
                    raise PresetError(
                        f"{where(key, section=section)}: unknown setting {key!r}. "
                        f"Known: {', '.join(sorted(SPEC_FIELDS))}."
                    )
        for key, choices in self.grid.items():
            if not choices:
                raise PresetError(
                    f"{where(key, section='grid')}: grid.{key} is an empty list; give at least one value."
                )
        size = max(len(self.runs), 1) * math.prod(len(v) for v in self.grid.values())
        if size > MAX_RUNS:
            raise PresetError(f"{where()}: {size} runs is more than {MAX_RUNS}; make the grid smaller.")
        for run_no, entry in enumerate(self.runs, 1):
            self._check_entry(run_no, entry, where)
        for _, _, entry, swept in self._settings():
            self._spec(where, entry, swept, strict=True)
        if self.seeds:
            self._check_seeds(self.seeds, where)
        return self

    def _check_entry(self, run_no: int, entry: dict[str, Any], where: _Where) -> None:
        """Run `run_no` of [[runs]]: known settings, a plain-text label, nothing the grid sweeps."""
        label = entry.get("label")
        for key in entry:
            if key != "label" and key not in SPEC_FIELDS:
                raise PresetError(
                    f"{where(key, section='runs')}: runs[{run_no}]: unknown setting {key!r}. "
                    f"Known: {', '.join(sorted(SPEC_FIELDS))}."
                )
        if label is not None and printable(label) != str(label):
            raise PresetError(
                f"{where('label', label, 'runs')}: runs[{run_no}].label holds a control character "
                f"({_first_control(label)}); write plain text."
            )
        for key in entry:
            if key in self.grid:
                raise PresetError(
                    f"{where(key, section='runs')}: runs[{run_no}] sets {key}, which the grid sweeps; "
                    f"set it in one place."
                )

    def _settings(
        self, overrides: dict[str, Any] | None = None
    ) -> Iterator[tuple[int, str | None, dict[str, Any], dict[str, Any]]]:
        """Each run's number in [[runs]], label, settings there (without the label) and grid values, in order:
        [[runs]] x grid, the grid's axes that `overrides` set collapsed."""
        grid_keys = [k for k in self.grid if k not in (overrides or {})]
        combos = list(itertools.product(*(self.grid[k] for k in grid_keys))) if grid_keys else [()]
        for run_no, entry in enumerate(self.runs or [{}], 1):
            settings = {k: v for k, v in entry.items() if k != "label"}
            for combo in combos:
                yield run_no, entry.get("label"), settings, dict(zip(grid_keys, combo))

    def _collapsed(self, overrides: dict[str, Any]) -> set[int]:
        """The [[runs]] numbers of runs that differ from an earlier one only in settings the overrides replace."""
        seen: list[dict[str, Any]] = []
        collapsed = set()
        for run_no, entry in enumerate(self.runs, 1):
            settings = {k: v for k, v in entry.items() if k != "label"}
            remaining = {k: v for k, v in settings.items() if k not in overrides}
            if len(remaining) < len(settings) and remaining in seen:
                collapsed.add(run_no)
            seen.append(remaining)
        return collapsed

    def _spec(
        self,
        where: _Where,
        entry: dict[str, Any],
        swept: dict[str, Any],
        overrides: dict[str, Any] | None = None,
        *,
        strict: bool = False,
    ) -> RunSpec:
        """The run's settings (defaults, its entry, its grid values, then `overrides`) as a RunSpec; `strict`: the
        file's own values, strictly typed. PresetError names the setting and where the file sets it."""
        values = {**self.defaults, **entry, **swept}
        try:
            spec = RunSpec.model_validate({**values, **(overrides or {})}, strict=strict)
        except ValidationError as exc:
            first = first_error(exc)
            key, value = first.where, first.input
            section = "grid" if key in self.grid else "runs" if key in entry else "defaults"
            raise PresetError(f"{where(key, value, section)}: {key} = {value!r}: {first.msg}.") from None
        for key in DATASET_SIZES:
            if why := beyond_dataset(key, getattr(spec, key)):
                value = getattr(spec, key)
                section = "grid" if key in self.grid else "runs" if key in entry else "defaults"
                raise PresetError(f"{where(key, value, section)}: {key} = {value}: {why}.")
        return spec

    def expand(self, overrides: dict[str, Any] | None = None) -> list[PresetRun]:
        """The preset's runs (checked as it was loaded), each a RunSpec with a readable label; CLI overrides win.

        A swept setting given as an override is no longer swept: its grid axis collapses, and explicit
        runs that then differ in nothing else collapse into the first. Labels follow the overrides, so
        that a label never contradicts its run's settings (see `_relabel`).
        """
        overrides = dict(overrides or {})
        seeds = overrides.pop(SEEDS_KEY, None)
        check_overrides(overrides)
        where = _Where(self.name)  # the overrides' errors: the file's own were found as it loaded
        collapsed = self._collapsed(overrides)
        result = []
        for run_no, label, entry, swept in self._settings(overrides):
            spec = self._spec(where, entry, swept, overrides)
            if run_no in collapsed:
                continue  # differs from an earlier run only in settings the overrides replace
            if ":" in spec.model and self.folder is not None:
                spec = spec.model_copy(update={"model_dir": self.folder})
            parts = [_relabel(str(label), overrides, set(entry))] if label is not None else []
            if label is None:
                parts += [setting_label(k, overrides.get(k, v)) for k, v in entry.items()]
            parts += [setting_label(k, overrides[k] if k in overrides else swept[k]) for k in self.grid]
            result.append(PresetRun(label=", ".join(parts) or self.name, spec=spec))
        return _numbered(self._repeat_per_seed(result, seeds, overrides, where))

    def _repeat_per_seed(
        self, runs: list[PresetRun], seeds: list[int] | None, overrides: dict[str, Any], where: _Where
    ) -> list[PresetRun]:
        """Each run once per seed (the CLI's --seeds wins over the file's `seeds`), seed by seed within a run,
        so that a run's repeats sit together; a single --seed replaces the file's seeds."""
        if seeds is not None and "seed" in overrides:
            raise TuitrainError("--seed and --seeds both set the seed; give one of them.")
        seeds = list(seeds if seeds is not None else ([] if "seed" in overrides else self.seeds))
        if not seeds:
            return runs
        self._check_seeds(seeds, where)
        if len(runs) * len(seeds) > MAX_RUNS:
            raise PresetError(f"{where()}: {len(runs) * len(seeds)} runs is more than {MAX_RUNS}; use fewer seeds.")
        repeated = []
        for run in runs:
            for seed in seeds:
                try:
                    spec = run.spec.model_copy(update={"seed": RunSpec.model_validate({"seed": seed}).seed})
                except ValidationError as exc:
                    raise TuitrainError(f"seed {seed}: {_plain_error(exc.errors()[0])}.") from None
                repeated.append(PresetRun(label=f"{run.label}, seed={seed}", spec=spec))
        return repeated

    def _check_seeds(self, seeds: list[int], where: _Where) -> None:
        """Seeds to repeat every run with: each once, and the runs setting no seed of their own."""
        if len(set(seeds)) != len(seeds):
            raise PresetError(f"{where('seeds')}: seeds {seeds} repeats a seed; each seed once.")
        if "seed" in self.grid or any("seed" in entry for entry in self.runs):
            raise PresetError(
                f"{where('seeds')}: the preset sets `seed` in its runs or grid and also repeats over seeds; "
                "set it in one place."
            )

    def swept_settings(self) -> list[str]:
        """Settings that differ between the preset's runs: its grid, and keys its explicit runs set differently."""
        keys = list(self.grid)
        for entry in self.runs:
            for key in entry:
                if (
                    key != "label"
                    and key not in keys
                    and len({repr(r.get(key, self.defaults.get(key))) for r in self.runs}) > 1
                ):
                    keys.append(key)
        return keys

    def replaced_sweeps(self, overrides: dict[str, Any] | None) -> list[str]:
        """'--lr 0.05 replaces the sweep over lr', for each override of a swept setting."""
        overrides = overrides or {}
        return [
            f"{option_name(k)} {_shown(overrides[k])} replaces the sweep over {k}"
            for k in self.swept_settings()
            if k in overrides
        ]


def option_name(key: str) -> str:
    """The command-line option that overrides a run setting: batch_size -> --batch-size."""
    return "--" + key.replace("_", "-")


def setting_label(key: str, value: Any) -> str:
    """A run setting as its label shows it: "lr=0.1"; a dict setting (model_args) by its own keys,
    "hidden=16, depth=2", which reads better and makes a cleaner file name than the dict's repr."""
    if isinstance(value, dict) and value:
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return f"{key}={value}"


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def options_text(overrides: dict[str, Any]) -> str:
    """Settings as the command-line options that give them: '--epochs 2 --seeds 0,1'."""

    def shown(value: Any) -> str:
        return ",".join(map(_shown, value)) if isinstance(value, (list, tuple)) else _shown(value)

    return " ".join(f"{option_name(k)} {shown(v)}" for k, v in overrides.items())


def _plain_error(error: Any) -> str:
    """A pydantic error as a person would say it: 'must be at most 65536'."""
    ctx = error.get("ctx") or {}
    bounds = {
        "less_than_equal": ("at most", "le"),
        "less_than": ("below", "lt"),
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("above", "gt"),
    }
    if error["type"] in bounds and bounds[error["type"]][1] in ctx:
        words, key = bounds[error["type"]]
        return f"must be {words} {_shown(ctx[key])}"
    if error["type"] == "literal_error" and "expected" in ctx:
        return f"must be {ctx['expected']}"
    msg = str(error["msg"]).removeprefix("Value error, ")  # a validator's own words
    return msg[:1].lower() + msg[1:]


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; TuitrainError says what is wrong (the CLI's --seeds)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise TuitrainError(f"--seeds {text}: expected whole numbers separated by commas, e.g. 0,1,2.") from None
    if not seeds or any(s < 0 for s in seeds):
        raise TuitrainError(f"--seeds {text}: expected non-negative whole numbers separated by commas, e.g. 0,1,2.")
    if len(set(seeds)) != len(seeds):
        raise TuitrainError(f"--seeds {text}: repeats a seed; each seed once.")
    return seeds


def check_overrides(overrides: dict[str, Any]) -> None:
    """Each override on its own against the run settings' limits; the error names the option, not a preset."""
    for key, value in overrides.items():
        if key not in SPEC_FIELDS:
            raise TuitrainError(f"{option_name(key)}: not a run setting. Known: {', '.join(sorted(SPEC_FIELDS))}.")
        try:
            RunSpec.model_validate({key: value})
        except ValidationError as exc:
            raise TuitrainError(f"{option_name(key)} {_shown(value)}: {_plain_error(exc.errors()[0])}.") from None


def _relabel(label: str, overrides: dict[str, Any], set_by_run: set[str]) -> str:
    """An explicit label made true again under overrides: where it states an overridden setting
    ("lr=0.1", "lr 0.1") the value is replaced; where its run set that setting itself (so the label
    may rest on it, e.g. "fast") the new value is appended ("fast, lr=0.05")."""
    for key, value in overrides.items():
        name = re.escape(key).replace("_", "[_ -]")
        stated = re.compile(rf"(?<![A-Za-z0-9_])({name}(?:\s*[=:]\s*|\s+))[^\s,;)\]]+", re.IGNORECASE)
        if stated.search(label):
            shown = _shown(value).replace("\\", "\\\\")  # a replacement template: a backslash stands for itself
            label = stated.sub(rf"\g<1>{shown}", label)
        elif key in set_by_run:
            label = f"{label}, {key}={_shown(value)}"
    return label


def _first_control(text: Any, keep: str = "") -> str:
    """The first control character of `text` not in `keep`, escaped, for an error message."""
    for char in str(text):
        if printable(char, keep) != char:
            return printable(char)
    return ""


def builtin_presets() -> Traversable:
    """The presets shipped inside the package (this folder), read through importlib.resources."""
    return resources.files(__name__)


def presets_dirs() -> list[Path | Traversable]:
    """Where named presets are looked up, first match wins: TUITRAIN_PRESETS_DIR, ./presets, then the
    ones shipped with tuitrain."""
    dirs: list[Path] = []
    if os.environ.get("TUITRAIN_PRESETS_DIR"):
        dirs.append(Path(os.environ["TUITRAIN_PRESETS_DIR"]))
    dirs.append(Path.cwd() / "presets")
    seen: set[Path] = set()
    unique: list[Path | Traversable] = []
    for d in dirs:
        key = d.resolve() if d.exists() else d
        if key not in seen and d.is_dir():
            seen.add(key)
            unique.append(d)
    builtin = builtin_presets()
    if not (isinstance(builtin, Path) and builtin.resolve() in seen):  # a checkout's ./presets is this folder
        unique.append(builtin)
    return unique


def load_preset_file(path: Path | Traversable) -> Preset:
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
        preset = Preset.model_validate(data, context={"source": str(path), "text": text})
    except RecursionError:
        raise PresetError(f"{path}: nested too deeply to be a preset.") from None
    except ValidationError as exc:
        first = first_error(exc)
        line = line_of(text, str(first.loc[-1])) if first.loc else None
        where = f"{path}:{line}" if line else str(path)
        msg = f"unknown key. Known: {', '.join(Preset.model_fields)}" if first.kind == "extra_forbidden" else first.msg
        raise PresetError(f"{where}: {first.where}: {msg}.") from None
    preset._source = str(path)
    if isinstance(path, Path):
        preset._folder = str(path.resolve().parent)
    stem = path.name.removesuffix(".toml")
    if preset.name != stem and in_presets_folder(path):
        raise PresetError(
            f"{path}:{line_of(text, 'name') or 1}: name = {preset.name!r} differs from the file name; a preset in a "
            f"presets folder is found by its file name, so rename the file to {preset.name}.toml "
            f"or set name = {stem!r}."
        )
    return preset


def in_presets_folder(path: Path | Traversable) -> bool:
    """Is this file one of the named presets (directly in a presets folder)?"""
    if not isinstance(path, Path):
        return True  # a packaged resource: a shipped preset
    folders = {d.resolve() for d in presets_dirs() if isinstance(d, Path)}
    return path.resolve().parent in folders


def available_presets() -> dict[str, Path | Traversable]:
    """Named presets (file name without .toml) to their files, first folder first."""
    found: dict[str, Path | Traversable] = {}
    for folder in presets_dirs():
        for path in sorted(
            (p for p in folder.iterdir() if p.name.endswith(".toml") and p.is_file()), key=lambda p: p.name
        ):
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
        misnamed = [str(p) for p in known.values() if _declared_name(p) == name_or_path]
        hint = (
            f" {misnamed[0]} says name = {name_or_path!r} but is named otherwise; see --list-presets."
            if misnamed
            else ""
        )
        raise PresetError(f"unknown preset {name_or_path!r}. Available: {names}. Or pass a path to a .toml file.{hint}")
    return load_preset_file(known[name_or_path])


def _declared_name(path: Path | Traversable) -> str | None:
    """The `name` a preset file declares, or None if it cannot be read."""
    try:
        name = tomllib.loads(path.read_text(encoding="utf-8")).get("name")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return name if isinstance(name, str) else None
