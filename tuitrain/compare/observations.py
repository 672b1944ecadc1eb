"""Observations: claims the compared runs' numbers support, each stated with its numbers.

A difference is claimed only beyond noise: two standard errors of the difference of two test
accuracies (binomial, over the test images evaluated).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tuitrain import format as fmt
from tuitrain.compare.groups import duplicate_notes, group_by_seed, has_repeats, ranking_notes, seed_groups
from tuitrain.compare.runs import RunColumn, epochs_text
from tuitrain.core.confusion import class_differences, class_totals, confusion_text, most_confused, summed

if TYPE_CHECKING:
    from tuitrain.compare.model import Comparison

Z_NOISE = 2.0  # two standard errors: a difference of test accuracies smaller than this is a tie

UNFINISHED = {
    "interrupted": "was interrupted",
    "crashed": "crashed (its process is gone)",
    "failed": "failed",
    "running": "is still running",
}


def chosen_wording(r: RunColumn) -> str:
    """What a run's best accuracy is: the best test accuracy, or the test accuracy of the epoch that did best on a
    held-out validation split."""
    if r.record.best_epoch_chosen_on == "validation":
        return "test accuracy at its best validation epoch"
    return "best test accuracy"


def noise(a: RunColumn, b: RunColumn) -> float:
    """Two standard errors (in points) of the difference of two test accuracies."""
    var = 0.0
    for run in (a, b):
        p = (run.best_accuracy or 0.0) / 100.0
        var += p * (1 - p) / max(run.test_total, 1)
    return Z_NOISE * 100.0 * math.sqrt(var)


def last_mean_loss(r: RunColumn) -> float:
    return r.record.epochs[-1].mean_loss


def at_chance(r: RunColumn) -> bool:
    """Best accuracy within a few points of 100/classes and last-epoch loss near ln(classes)."""
    chance = 100.0 / r.num_classes
    loss = last_mean_loss(r)
    return (
        (r.best_accuracy or 0.0) <= chance * 1.5
        and math.isfinite(loss)
        and abs(loss - math.log(r.num_classes)) <= 0.1 * math.log(r.num_classes)
    )


def observations(c: Comparison) -> list[str]:
    """Claims the numbers support, each with its numbers."""
    notes: list[str] = []
    # the accuracy claims are about classifiers; runs without accuracy are ranked by their metric (rank_notes)
    trained = [r for r in c.runs if r.has_accuracy]
    stuck = {r.index for r in trained if at_chance(r)}

    for r in c.runs:
        if r.status == "diverged":
            notes.append(_diverged(r))
        elif r.status in UNFINISHED:
            error = f" ({r.record.error})" if r.status == "failed" and r.record.error else ""
            notes.append(
                f"{r.label} {UNFINISHED[r.status]}{error} after {r.epochs_done}/{r.record.spec.epochs} epochs; "
                "its figures cover only those."
            )
    for r in trained:
        if r.index in stuck:
            loss = last_mean_loss(r)
            notes.append(
                f"{r.label} is stuck at chance level: best test accuracy {fmt.accuracy(r.best_accuracy)} "
                f"(chance {100 / r.num_classes:.0f}% for {r.num_classes} classes), mean training loss of the "
                f"last epoch {loss:.4f} (ln {r.num_classes} = {math.log(r.num_classes):.4f})."
            )
    every_group = group_by_seed(c.runs)
    notes += duplicate_notes(every_group)
    duplicates = {g.runs[0].index for g in every_group if g.duplicate_of is not None}
    learning = [r for r in trained if r.index not in stuck and r.status != "diverged"]
    groups = group_by_seed(learning)
    if len(seed_groups(groups)) > 1 and has_repeats(groups):
        # settings repeated across seeds: their spread says what is beyond noise, not the test set's size
        notes += ranking_notes(groups, c.threshold)
    else:
        # a diverged run's figures came after its loss stopped being a number: never ranked; a duplicate is not
        # ranked against the run it repeats
        ranked = [r for r in trained if r.index not in duplicates]
        notes += _ranking([r for r in ranked if r.status != "diverged"], stuck)
        notes += _convergence(c, ranked, stuck)
    for r in trained:
        notes += _instability(r, r.index in stuck)
    notes += _metric_ranking(c)
    notes += class_notes(c)
    notes += _training_time(c)
    devices = {r.device for r in c.runs}
    if len(devices) > 1:
        notes.append(f"The runs trained on different devices ({', '.join(sorted(devices))}): times are not comparable.")
    return notes


def _diverged(r: RunColumn) -> str:
    before = r.epochs_before_divergence
    note = (
        f"{r.label} diverged: {r.record.error or 'non-finite loss'}; "
        f"{epochs_text(before) if before else 'no epoch'} completed before it"
    )
    if r.epochs_done > before:  # on_divergence = "continue": it trained on
        later = f"epoch {r.epochs_done}" if r.epochs_done == before + 1 else f"epochs {before + 1}–{r.epochs_done}"
        note += f", and its figures for {later} come after it"
    return note + "."


def _ranking(trained: list[RunColumn], stuck: set[int]) -> list[str]:
    def best_of(r: RunColumn) -> float:
        assert r.best_accuracy is not None  # a trained run has epochs, so a best accuracy
        return r.best_accuracy

    ranked = sorted(trained, key=best_of, reverse=True)
    if len(ranked) < 2:
        return []
    notes = []
    best, second = ranked[0], ranked[1]
    diff = best_of(best) - best_of(second)
    margin = noise(best, second)
    if diff > margin:
        notes.append(
            f"Best: {best.label} with {fmt.accuracy(best.best_accuracy)} {chosen_wording(best)} (epoch "
            f"{best.best_epoch}), {diff:.2f} points above the next, {second.label} "
            f"({fmt.accuracy(second.best_accuracy)})."
        )
    else:
        notes.append(
            f"No clear best: {best.label} ({fmt.accuracy(best.best_accuracy)}) and {second.label} "
            f"({fmt.accuracy(second.best_accuracy)}) differ by {diff:.2f} points, within the "
            f"±{margin:.2f} noise of {best.test_total:,} test images."
        )
    others = [r for r in ranked[2:] if r.index not in stuck and r.status == "completed"]
    # the lowest is named only where it is beyond noise below the best: a tie has no lowest either
    if others and best_of(best) - best_of(others[-1]) > noise(best, others[-1]):
        worst = others[-1]
        notes.append(
            f"Lowest: {worst.label} with {fmt.accuracy(worst.best_accuracy)}, "
            f"{best_of(best) - best_of(worst):.2f} points below {best.label}."
        )
    return notes


def _convergence(c: Comparison, trained: list[RunColumn], stuck: set[int]) -> list[str]:
    learning = [r for r in trained if r.index not in stuck and r.status != "diverged"]
    if len(learning) < 2:
        return []
    notes = []
    t = f"{c.threshold:g}%"
    reaching = {r.index: epoch for r in learning if (epoch := r.epoch_reaching(c.threshold))}
    reached = sorted((r for r in learning if r.index in reaching), key=lambda r: reaching[r.index])
    never = [r for r in learning if r.index not in reaching]
    if reached and (never or reaching[reached[0].index] < reaching[reached[-1].index]):
        parts = [f"{r.label} at epoch {reaching[r.index]}" for r in reached]
        parts += [
            f"{r.label} never (best {fmt.accuracy(r.best_accuracy)} in {epochs_text(r.epochs_done)})" for r in never
        ]
        notes.append(f"Fastest to {t} test accuracy: " + "; ".join(parts) + ".")
    else:
        who = (
            "All runs"
            if len(learning) == len(trained)
            else "The runs that learn (" + ", ".join(r.label for r in learning) + ")"
        )
        if reached:
            notes.append(f"{who} first reached {t} at epoch {reaching[reached[0].index]}.")
        else:
            notes.append(f"{'No run' if who == 'All runs' else who + ': none'} reached {t} test accuracy.")

    # After the first epoch: split the runs at the widest gap in accuracy, if that gap is beyond noise.
    def acc1(r: RunColumn) -> float:
        return r.accuracy(1)

    first = sorted(learning, key=acc1, reverse=True)
    gap, cut = max((acc1(a) - acc1(b), i + 1) for i, (a, b) in enumerate(zip(first, first[1:])))
    if gap > noise(first[cut - 1], first[cut]):
        listing = ", ".join(f"{r.label} {fmt.accuracy(acc1(r))}" for r in first)
        faster = " and ".join(r.label for r in first[:cut])
        slower = " and ".join(r.label for r in first[cut:])
        verb = "converges" if cut == 1 else "converge"
        notes.append(
            f"After epoch 1: {listing}; {faster} {verb} faster than {slower} ({gap:.2f} points ahead or more)."
        )
    return notes


def _instability(r: RunColumn, stuck: bool) -> list[str]:
    notes = []
    epochs = r.record.epochs
    drops = [(r.accuracy(b.epoch) - r.accuracy(a.epoch), a, b) for a, b in zip(epochs, epochs[1:])]
    if drops and not stuck:
        drop, a, b = min(drops, key=lambda d: d[0])
        p = r.accuracy(a.epoch) / 100.0
        margin = Z_NOISE * 100.0 * math.sqrt(2 * p * (1 - p) / max(b.test_total, 1))
        if -drop > margin:
            notes.append(
                f"{r.label}: test accuracy fell from {fmt.accuracy(a.test_accuracy)} (epoch {a.epoch}) "
                f"to {fmt.accuracy(b.test_accuracy)} (epoch {b.epoch})."
            )
    rises = [
        (b.mean_loss - a.mean_loss, a, b)
        for a, b in zip(epochs, epochs[1:])
        if math.isfinite(a.mean_loss) and math.isfinite(b.mean_loss)
    ]
    if rises:
        rise, a, b = max(rises, key=lambda d: d[0])
        if rise > 0.02 * abs(a.mean_loss) and rise > 1e-3:
            notes.append(
                f"{r.label}: mean training loss rose from {a.mean_loss:.4f} (epoch {a.epoch}) to "
                f"{b.mean_loss:.4f} (epoch {b.epoch})."
            )
    return notes


def _metric_ranking(c: Comparison) -> list[str]:
    """Best and worst by the ranking metric (runs without accuracy, or --metric): its goal says which way is better.
    Runs whose figures tie as shown are no best or worst, and a diverged run is not ranked (as by accuracy)."""
    name = c.ranking_metric()
    ranked = [(r, v) for r, v in c.ranked() if r.status != "diverged"]
    if name is None or len(ranked) < 2:
        return []
    goal = c.goal(name)
    way = "lower" if goal == "min" else "higher"
    (best, value), (second, other) = ranked[0], ranked[1]
    shown = fmt.printable(name)
    if fmt.metric(value) == fmt.metric(other):
        tied = [r.label for r, v in ranked if fmt.metric(v) == fmt.metric(value)]
        note = f"No clear best by {shown}: {', '.join(tied[:-1])} and {tied[-1]} all have {fmt.metric(value)}"
        if len(tied) == 2:
            note = f"No clear best by {shown}: {tied[0]} and {tied[1]} both have {fmt.metric(value)}"
    else:
        note = (
            f"Best by {shown} ({way} is better): {best.label} with {fmt.metric(value)}, "
            f"{fmt.metric(abs(value - other))} {'below' if goal == 'min' else 'above'} the next, {second.label} "
            f"({fmt.metric(other)})"
        )
    worst, last = ranked[-1]
    if len(ranked) > 2 and fmt.metric(last) != fmt.metric(other):
        note += f"; worst: {worst.label} ({fmt.metric(last)})"
    return [note + "."]


def _training_time(c: Comparison) -> list[str]:
    """Which completed run trained longest, in training and evaluation time (pauses and downtime excluded)."""
    timed = [r for r in c.runs if r.time_s and r.status == "completed"]
    if len(timed) < 2:
        return []

    def seconds(r: RunColumn) -> float:
        assert r.time_s is not None  # timed runs have a training time
        return r.time_s

    fast = min(timed, key=seconds)
    slow = max(timed, key=seconds)
    if seconds(slow) <= 1.2 * seconds(fast) or fmt.duration(seconds(slow)) == fmt.duration(seconds(fast)):
        return []  # alike, or alike as shown ('took 0s, 0s (2.0×)' says nothing)
    note = (
        f"Training time: {fast.label} took {fmt.duration(seconds(fast))}, "
        f"{slow.label} {fmt.duration(seconds(slow))} ({seconds(slow) / seconds(fast):.1f}×)"
    )
    # Epochs of one run do the same work: if their times differ a lot, the machine was busy.
    spread = [
        (max(d) / min(d), r, min(d), max(d))
        for r in timed
        if len(d := [e.duration_s for e in r.record.epochs]) > 1 and min(d) > 0
    ]
    widest = max(spread, key=lambda x: x[0]) if spread else None
    if widest is not None and widest[0] > 2 and fmt.duration(widest[2]) != fmt.duration(widest[3]):
        _, r, lo, hi = widest
        note += (
            f"; but epochs of one run took from {fmt.duration(lo)} to {fmt.duration(hi)} "
            f"({r.label}), so the machine was busy and these times say little about the runs"
        )
    return [note + "."]


CLASS_DIFFERENCES_SHOWN = 3
"""The classes named where two runs' per-class accuracies are compared: those that differ most."""
MOST_CONFUSED_RUNS_LISTED = 4
"""Up to this many runs, the most confused pair's note gives each run's count."""


def class_notes(c: Comparison) -> list[str]:
    """What the runs' final confusion matrices say: the pair of classes most often confused, and the classes that
    differ most between two runs (the baseline and each other run; without a baseline the two runs, or the two
    best). Runs that diverged, or have no matrix (script runs, older files), are left out."""
    runs = [r for r in c.runs if r.final_confusion is not None and r.status != "diverged"]
    if not runs or len({(r.record.spec.dataset, len(r.final_confusion or ())) for r in runs}) > 1:
        return []  # no matrix, or matrices of different classes: nothing to add up or set side by side
    notes = _most_confused(runs)
    base = c.baseline_run
    if base is not None and base in runs:
        pairs = [(base, r) for r in runs if r is not base]
    elif len(runs) == 2:
        pairs = [(runs[0], runs[1])]
    elif len(runs) > 2 and all(r.final_accuracy is not None for r in runs):
        best = sorted(runs, key=lambda r: r.final_accuracy or 0.0, reverse=True)
        pairs = [(best[0], best[1])]
    else:
        pairs = []
    return notes + [_class_difference(a, b) for a, b in pairs]


def _most_confused(runs: list[RunColumn]) -> list[str]:
    matrices = [r.final_confusion for r in runs if r.final_confusion is not None]
    total = summed(matrices)
    worst = most_confused(total)
    if worst is None:
        return []
    names = runs[0].class_names
    of_class = class_totals(total)[worst.true]
    share = f"{100 * worst.count / of_class:.1f}% of the test images of {names[worst.true]}"
    if len(runs) == 1:
        return [f"Most confused at the final epoch: {confusion_text(worst, names)} ({share})."]
    if len(runs) <= MOST_CONFUSED_RUNS_LISTED:
        share += "; " + ", ".join(f"{r.label} {(r.final_confusion or [])[worst.true][worst.predicted]}" for r in runs)
    return [f"Most confused at the final epoch, over the {len(runs)} runs: {confusion_text(worst, names)} ({share})."]


def _class_difference(a: RunColumn, b: RunColumn) -> str:
    assert a.final_confusion is not None and b.final_confusion is not None  # class_notes keeps runs with one
    differences = class_differences(a.final_confusion, b.final_confusion)
    names = a.class_names
    beyond = [d for d in differences if d.beyond_noise]
    shown = (beyond or [d for d in differences if d.points != 0])[:CLASS_DIFFERENCES_SHOWN]
    if not shown:
        return f"Per class at the final epoch, {a.label} and {b.label} have the same accuracy on every class."
    listing = "; ".join(
        f"{names[d.index]} ({fmt.accuracy(d.accuracy_a)} vs {fmt.accuracy(d.accuracy_b)}, {d.points:+.2f} points)"
        for d in shown
    )
    if not beyond:
        return (
            f"Per class at the final epoch, {a.label} vs {b.label} differ most on {listing}, within noise "
            f"(±{shown[0].noise:.2f} points for {names[shown[0].index]})."
        )
    return (
        f"Per class at the final epoch, {a.label} vs {b.label} differ most on {listing}; "
        f"{len(beyond)} of {len(differences)} classes {'differs' if len(beyond) == 1 else 'differ'} beyond noise "
        "(two standard errors of each class's test images)."
    )
