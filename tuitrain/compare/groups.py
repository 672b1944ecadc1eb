"""Runs that differ only by seed, grouped: mean ± standard deviation (and n) of their figures, and
Welch's t-test between two groups.

The t-test's p-value comes from Student's t distribution through the regularized incomplete beta
function (a continued fraction, as in Numerical Recipes), computed here with the standard library:
no scipy.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tuitrain import format as fmt
from tuitrain.compare.runs import RunColumn, param_text
from tuitrain.core.spec import RunSpec

IGNORED = ("seed", "data_source", "log_every")
"""Spec fields that do not make two runs different experiments: the seed (what repeats vary) and bookkeeping."""
_SEED_IN_LABEL = re.compile(r"(?:,\s*|\s+)?\bseed\s*[=:]?\s*\d+\b", re.IGNORECASE)


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation (0 for one value), extremes and count of some finite numbers."""

    n: int
    mean: float
    sd: float
    lo: float
    hi: float

    def text(self, digits: int = 2, unit: str = "") -> str:
        """'98.12 ± 0.10%' (or '98.12%' when n = 1)."""
        if self.n == 1:
            return f"{self.mean:.{digits}f}{unit}"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}{unit}"


def spread(values: Sequence[float | None]) -> Spread | None:
    """The spread of the finite values among `values`, or None if there are none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return Spread(len(finite), statistics.fmean(finite), sd, min(finite), max(finite))


@dataclass
class RunGroup:
    """Runs with the same settings but for the seed, one run per seed, in the order they were compared; or one run
    alone: one that did not complete with finite losses, or a duplicate of an earlier run (same settings and seed)."""

    label: str
    runs: list[RunColumn]
    duplicate_of: RunColumn | None = None
    """The earlier run this one repeats exactly (same settings, same seed): a duplicate, not a seed repeat."""

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list[int | None]:
        return [run_seed(r) for r in self.runs]

    def seeds_text(self) -> str:
        """'0,1,2' ('–' for a script run that logged no seed)."""
        return ",".join("–" if s is None else str(s) for s in self.seeds)

    def values(self, value_of: Callable[[RunColumn], float | None]) -> list[float | None]:
        return [value_of(r) for r in self.runs]

    def spread(self, value_of: Callable[[RunColumn], float | None]) -> Spread | None:
        return spread(self.values(value_of))

    def by_seed(self) -> dict[int | None, RunColumn]:
        return {run_seed(r): r for r in self.runs}

    def accuracy_at(self, epoch: int) -> list[float | None]:
        """Each run's test accuracy at `epoch` (1-based), None where it did not get there."""
        return [r.record.epochs[epoch - 1].test_accuracy if r.epochs_done >= epoch else None for r in self.runs]


def run_seed(run: RunColumn) -> int | None:
    """The seed a run trained with: a preset run's from its spec, a script run's from its config (None where it
    gave none: its spec's seed is only the default)."""
    seed = run.param("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def setting_key(run: RunColumn) -> tuple[Any, ...]:
    """What makes two runs the same experiment but for the seed: the label without its seed (runs labelled apart
    were meant apart: a script's settings need not all be in its config), the spec and a script's config."""
    spec = run.record.spec.model_dump(mode="json")
    config = run.record.config or {}
    return (
        label_without_seed(run.record.label or run.record.id),
        tuple((k, repr(spec[k])) for k in RunSpec.model_fields if k not in IGNORED),
        tuple(sorted((k, repr(v)) for k, v in config.items() if k not in IGNORED)),
    )


def poolable(run: RunColumn) -> bool:
    """May this run's figures be pooled with others'? Only a completed run whose losses are all finite: a failed,
    interrupted, running or diverged run's figures cover another course of training."""
    return run.status == "completed" and run.first_non_finite is None


def label_without_seed(label: str) -> str:
    """'activation=relu, seed=1' -> 'activation=relu'."""
    return _SEED_IN_LABEL.sub("", label).strip(" ,;") or label


def group_by_seed(runs: Sequence[RunColumn]) -> list[RunGroup]:
    """Groups of runs that differ only by seed (every run in exactly one group), in first-seen order.

    Only completed runs with finite losses are pooled; any other run is a group of its own. A run with the same
    settings and seed as one already grouped is a duplicate: a group of its own, that says which run it repeats.
    A group is labelled by its runs' label without the seed; where that does not tell the groups apart,
    by the settings that differ between the groups.
    """
    keyed: dict[tuple[Any, ...], list[RunColumn]] = {}
    members: list[list[RunColumn]] = []
    duplicate_of: dict[int, RunColumn] = {}
    for r in runs:
        if not poolable(r):
            members.append([r])
            continue
        key = setting_key(r)
        group = keyed.get(key)
        if group is None:
            keyed[key] = group = [r]
            members.append(group)
        elif (same := next((o for o in group if run_seed(o) == run_seed(r)), None)) is not None:
            duplicate_of[r.index] = same
            members.append([r])
        else:
            group.append(r)
    labels = [label_without_seed(group[0].label) if len(group) > 1 else group[0].label for group in members]
    if len(set(labels)) != len(labels):
        differing = [
            k
            for k in RunSpec.model_fields
            if k not in IGNORED and len({param_text(g[0].param(k)) for g in members}) > 1
        ]
        labels = [", ".join(f"{k}={param_text(g[0].param(k))}" for k in differing) or g[0].label for g in members]
        if len(set(labels)) != len(labels):
            labels = [f"{label} #{i}" for i, label in enumerate(labels, 1)]
    return [RunGroup(label, group, duplicate_of.get(group[0].index)) for label, group in zip(labels, members)]


def seed_groups(groups: Sequence[RunGroup]) -> list[RunGroup]:
    """The groups without the duplicates: what is ranked and tabled across seeds."""
    return [g for g in groups if g.duplicate_of is None]


def has_repeats(groups: Sequence[RunGroup]) -> bool:
    """Is there a spread to speak of: at least one group of two or more seeds?"""
    return any(g.n > 1 for g in groups)


def duplicate_notes(groups: Sequence[RunGroup]) -> list[str]:
    """One note per run that repeats an earlier one exactly."""
    notes = []
    for g in groups:
        if g.duplicate_of is not None:
            seed = run_seed(g.runs[0])
            same = "settings and no seed of its own" if seed is None else f"settings and seed ({seed})"
            notes.append(
                f"{g.runs[0].label} repeats {g.duplicate_of.label} with the same {same}: a duplicate, not a "
                "repeat across seeds, so the two are not pooled."
            )
    return notes


# ---- Welch's t-test ------------------------------------------------------------------------------
@dataclass(frozen=True)
class WelchTest:
    t: float
    df: float
    p: float
    """Two-sided p-value from Student's t distribution with `df` (Welch–Satterthwaite) degrees of freedom."""


def welch(a: Sequence[float], b: Sequence[float]) -> WelchTest | None:
    """Welch's unequal-variance t-test of mean(a) - mean(b); None with fewer than two values on a side, or where
    neither side has any spread (t would be infinite: identical values are no sample of the seeds' noise)."""
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return None
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return WelchTest(t, df, student_t_two_sided(t, df))


def student_t_two_sided(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom: I_x(df/2, 1/2) with x = df / (df + t²)."""
    if math.isinf(df):
        return math.erfc(abs(t) / math.sqrt(2))
    return regularized_beta(df / (df + t * t), df / 2, 0.5)


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, by Lentz's continued fraction."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point: use the symmetry
        return 1.0 - front * _beta_fraction(1 - x, b, a) / b
    return front * _beta_fraction(x, a, b) / a


def _beta_fraction(x: float, a: float, b: float) -> float:
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


# ---- what the groups say ------------------------------------------------------------------------
def _best(r: RunColumn) -> float | None:
    return r.best_accuracy


def ranking_notes(groups: Sequence[RunGroup], threshold: float, alpha: float = 0.05) -> list[str]:
    """Which group is best by mean best test accuracy, and whether the seeds' spread supports it
    (Welch's t-test), and which converges faster at epoch 1 (paired by seed)."""
    notes: list[str] = []
    scored = [(g, s) for g in seed_groups(groups) if (s := g.spread(_best)) is not None]
    scored.sort(key=lambda gs: gs[1].mean, reverse=True)
    if len(scored) >= 2:
        (best, sb), (second, ss) = scored[0], scored[1]
        diff = sb.mean - ss.mean
        test = welch(
            [v for v in best.values(_best) if v is not None], [v for v in second.values(_best) if v is not None]
        )
        figures = (
            f"{best.label} {sb.text(unit='%')} (n={sb.n}) against {second.label} {ss.text(unit='%')} (n={ss.n}), "
            f"{diff:.2f} points"
        )
        if test is None:
            why = "too few seeds on one side" if min(sb.n, ss.n) < 2 else "no spread across seeds on either side"
            notes.append(f"Best test accuracy, mean over seeds: {figures}; {why} for a test.")
        elif test.p < alpha:
            notes.append(
                f"Best: {figures} apart, mean best test accuracy over seeds; Welch's t-test t = {test.t:.2f}, "
                f"df = {test.df:.1f}, {_p_text(test.p)}: a difference beyond the spread across seeds."
            )
        else:
            notes.append(
                f"No clear best: {figures} apart, mean best test accuracy over seeds; Welch's t-test t = "
                f"{test.t:.2f}, df = {test.df:.1f}, {_p_text(test.p)}: within the spread across seeds."
            )
    notes += _epoch_one(groups)
    notes += _reaching(groups, threshold)
    return notes


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _epoch_one(groups: Sequence[RunGroup]) -> list[str]:
    """The fastest and slowest group at epoch 1, compared seed by seed where they share seeds."""
    at_one = [(g, s) for g in seed_groups(groups) if g.n > 1 and (s := spread(g.accuracy_at(1))) is not None]
    if len(at_one) < 2:
        return []
    at_one.sort(key=lambda gs: gs[1].mean, reverse=True)
    fast, slow = at_one[0][0], at_one[-1][0]
    slow_runs = slow.by_seed()
    pairs = [
        (r.record.epochs[0].test_accuracy, slow_runs[seed].record.epochs[0].test_accuracy)
        for seed, r in fast.by_seed().items()
        if seed in slow_runs and r.epochs_done and slow_runs[seed].epochs_done
    ]
    if len(pairs) < 2:
        return []
    diffs = [a - b for a, b in pairs]
    wins = sum(d > 0 for d in diffs)
    d = spread(diffs)
    assert d is not None
    listing = ", ".join(f"{g.label} {s.text(unit='%')}" for g, s in at_one)
    return [
        f"After epoch 1 (mean ± sd over seeds): {listing}; {fast.label} beats {slow.label} at epoch 1 in "
        f"{wins} of {len(pairs)} seeds, by {d.text()} points."
    ]


def _reaching(groups: Sequence[RunGroup], threshold: float) -> list[str]:
    """Epochs to the threshold per group, where the groups differ in it."""
    parts = []
    means = []
    for g in seed_groups(groups):
        reached = [r.epoch_reaching(threshold) for r in g.runs]
        s = spread([float(e) for e in reached if e is not None])
        if s is None:
            parts.append(f"{g.label} never in {g.n} seed(s)")
            means.append(math.inf)
            continue
        missing = sum(e is None for e in reached)
        parts.append(f"{g.label} {s.text(digits=1)}" + (f" ({missing} of {g.n} seeds never)" if missing else ""))
        means.append(s.mean if not missing else math.inf)
    if len(set(means)) < 2:
        return []
    return [f"Epochs to {threshold:g}% test accuracy (mean ± sd over seeds): " + "; ".join(parts) + "."]


# ---- the group table ------------------------------------------------------------------------------
def group_header(threshold: float) -> list[str]:
    return ["Group", "n", "Seeds", "Final test acc", "Best test acc", f"First epoch ≥ {threshold:g}%", "Training time"]


def group_rows(groups: Sequence[RunGroup], threshold: float) -> list[list[str]]:
    """One row per group (duplicates left out): mean ± sd (and the seeds) of its figures."""
    rows = []
    for g in seed_groups(groups):
        final = g.spread(lambda r: r.final_accuracy)
        best = g.spread(_best)
        reached = [r.epoch_reaching(threshold) for r in g.runs]
        epochs = spread([float(e) for e in reached if e is not None])
        epochs_text = "never" if epochs is None else epochs.text(digits=1)
        if epochs is not None and epochs.n < g.n:
            epochs_text += f" ({g.n - epochs.n} never)"
        time = g.spread(lambda r: r.time_s)
        time_text = (
            "–" if time is None else fmt.duration(time.mean) + (f" ± {fmt.duration(time.sd)}" if g.n > 1 else "")
        )
        rows.append(
            [
                g.label,
                str(g.n),
                g.seeds_text(),
                "–" if final is None else final.text(unit="%"),
                "–" if best is None else best.text(unit="%"),
                epochs_text,
                time_text,
            ]
        )
    return rows
