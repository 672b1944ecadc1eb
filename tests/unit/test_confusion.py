"""Per-class results without torch: the matrix's figures (tuitrain/core/confusion.py), the record field, compare's
per-class observations, the report's section (figure or table), and runs and files without a matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.compare_fixtures import make_record, normal_pair, write_runs
from tuitrain.catalog import load_run_file
from tuitrain.compare import Comparison
from tuitrain.core.confusion import (
    class_accuracy,
    class_differences,
    class_names,
    confusion_text,
    most_confused,
)
from tuitrain.core.errors import RecordError
from tuitrain.records import EpochRecord, parse_record, record_text
from tuitrain.report import Figure, Heading, Table, build_report, to_markdown

LOSSES = [(2.3, 0.4, 0.8), (0.4, 0.2, 0.3)]


def matrix(per_class: int = 100, errors: dict[tuple[int, int], int] | None = None) -> list[list[int]]:
    """10 classes of `per_class` test images, all right but `errors`: {(true, predicted): count}."""
    m = [[per_class if t == p else 0 for p in range(10)] for t in range(10)]
    for (t, p), n in (errors or {}).items():
        m[t][t] -= n
        m[t][p] += n
    return m


def with_matrix(label: str, final: list[list[int]], **spec) -> object:
    record = make_record(label, [90.0, 95.0], LOSSES, test_total=sum(map(sum, final)), **spec)
    record.epochs[-1].confusion = final
    record.epochs[-1].test_correct = sum(final[i][i] for i in range(len(final)))
    record.epochs[-1].test_accuracy = 100.0 * record.epochs[-1].test_correct / record.epochs[-1].test_total
    return record


def test_per_class_figures_of_a_matrix() -> None:
    m = matrix(errors={(4, 9): 23, (9, 4): 8, (7, 2): 5})
    accuracy = class_accuracy(m)
    assert accuracy[4] == pytest.approx(77.0) and accuracy[9] == pytest.approx(92.0) and accuracy[0] == 100.0
    worst = most_confused(m)
    assert worst is not None and (worst.true, worst.predicted, worst.count) == (4, 9, 23)
    assert confusion_text(worst, class_names("mnist", 10)) == "4 taken for 9: 23 times"
    assert most_confused(matrix()) is None  # nothing confused
    assert class_accuracy([[0, 0], [1, 3]]) == [None, 75.0]  # a class without test images has no accuracy
    assert class_names("fashion_mnist", 10)[6] == "Shirt" and class_names("mnist", 3) == ["0", "1", "2"]


def test_class_differences_largest_first_and_noise() -> None:
    a = matrix(1000, {(8, 3): 60, (5, 3): 12})
    b = matrix(1000, {(8, 3): 10, (5, 3): 14})
    differences = class_differences(a, b)
    assert [d.index for d in differences[:2]] == [8, 5]
    assert differences[0].points == pytest.approx(-5.0) and differences[0].beyond_noise
    assert not differences[1].beyond_noise  # 98.8% vs 98.6% of 1000 images each
    assert class_differences(a, [[1]]) == []  # matrices of different sizes are not compared


def test_record_keeps_a_square_matrix_and_older_files_read_without_one(tmp_path: Path) -> None:
    record = with_matrix("lr=0.01", matrix(errors={(4, 9): 3}))
    again = parse_record(record_text(record))
    assert again.epochs[-1].confusion == record.epochs[-1].confusion and again.epochs[0].confusion is None
    event = again.epochs[-1].event_fields()["confusion"]
    assert isinstance(event, tuple) and event[4][9] == 3

    old = json.loads(record_text(make_record("old", [90.0], LOSSES[:1])))
    old["schema_version"] = 4
    for epoch in old["epochs"]:
        epoch.pop("confusion")
    assert parse_record(json.dumps(old)).epochs[0].confusion is None
    for fixture in Path(__file__).parent.parent.joinpath("fixtures", "records").glob("v3_*.json"):
        assert all(e.confusion is None for e in parse_record(fixture.read_text()).epochs)

    bad = json.loads(record_text(record))
    bad["epochs"][-1]["confusion"] = [[1, 2], [3]]
    with pytest.raises(RecordError, match="confusion"):
        parse_record(json.dumps(bad))
    with pytest.raises(ValueError):
        EpochRecord.model_validate({**record.epochs[0].model_dump(), "confusion": [[-1]]})


def comparison(tmp_path: Path, records: list, **options) -> Comparison:
    paths = write_runs(tmp_path / "runs", records)
    return Comparison.from_files([load_run_file(p) for p in paths], **options)


def test_compare_names_the_classes_that_differ_most_between_two_runs(tmp_path: Path) -> None:
    a = with_matrix("lr=0.01", matrix(1000, {(8, 3): 60, (5, 3): 12, (4, 9): 20}))
    b = with_matrix("lr=0.1", matrix(1000, {(8, 3): 10, (5, 3): 14, (4, 9): 80}))
    notes = comparison(tmp_path, [a, b]).observations()
    per_class = [n for n in notes if n.startswith("Per class")]
    assert per_class == [
        "Per class at the final epoch, lr=0.01 vs lr=0.1 differ most on 4 (98.00% vs 92.00%, +6.00 points); "
        "8 (94.00% vs 99.00%, -5.00 points); 2 of 10 classes differ beyond noise (two standard errors of each "
        "class's test images)."
    ]
    assert (
        "Most confused at the final epoch, over the 2 runs: 4 taken for 9: 100 times (5.0% of the test images of 4; "
        "lr=0.01 20, lr=0.1 80)." in notes
    )


def test_compare_per_class_within_noise_and_with_a_baseline(tmp_path: Path) -> None:
    a = with_matrix("a", matrix(100, {(3, 5): 2}))
    b = with_matrix("b", matrix(100, {(3, 5): 1}))
    c = with_matrix("c", matrix(100, {(3, 5): 9}))
    notes = comparison(tmp_path, [a, b, c], baseline=3).observations()
    per_class = [n for n in notes if n.startswith("Per class")]
    assert len(per_class) == 2 and all(n.startswith("Per class at the final epoch, c vs ") for n in per_class)
    # without a baseline: the two best at the final epoch, here within noise
    alone = comparison(tmp_path / "2", [a, b, c]).observations()
    assert [n for n in alone if n.startswith("Per class")] == [
        "Per class at the final epoch, b vs a differ most on 3 (99.00% vs 98.00%, +1.00 points), within noise "
        "(±3.44 points for 3)."
    ]


def test_runs_without_a_matrix_add_nothing(tmp_path: Path) -> None:
    c = comparison(tmp_path, normal_pair())
    assert not any("confused" in n or n.startswith("Per class") for n in c.observations())
    report = build_report([load_run_file(p) for p in sorted((tmp_path / "runs").glob("*.json"))], with_figures=False)
    assert not any(isinstance(b, Heading) and "Confusion" in b.text for b in report.blocks)
    same = comparison(tmp_path / "same", [with_matrix("x", matrix(100)), with_matrix("y", matrix(100))])
    assert "Per class at the final epoch, x and y have the same accuracy on every class." in same.observations()
    # one run with a matrix beside one without: the one note, its section
    mixed = comparison(tmp_path / "mixed", [normal_pair()[0], with_matrix("m", matrix(100, {(7, 2): 4}))])
    assert [n for n in mixed.observations() if "confused" in n] == [
        "Most confused at the final epoch: 7 taken for 2: 4 times (4.0% of the test images of 7)."
    ]


def report_of(tmp_path: Path, with_figures: bool):
    records = [
        with_matrix("lr=0.01", matrix(1000, {(4, 9): 23, (9, 4): 8}), lr=0.01),
        with_matrix("lr=0.1", matrix(1000, {(4, 9): 31, (7, 2): 12}), lr=0.1),
    ]
    paths = write_runs(tmp_path / "runs", records)
    return build_report([load_run_file(p) for p in paths], with_figures=with_figures)


def section(report) -> list:
    start = next(i for i, b in enumerate(report.blocks) if isinstance(b, Heading) and b.text.startswith("Confusion"))
    end = next(i for i, b in enumerate(report.blocks) if i > start and isinstance(b, Heading))
    return report.blocks[start:end]


def test_report_section_without_figures_is_a_table_per_run(tmp_path: Path) -> None:
    report = report_of(tmp_path, with_figures=False)
    blocks = section(report)
    assert blocks[0].text == "Confusion matrices (final epoch)"
    tables = [b for b in blocks if isinstance(b, Table)]
    assert len(tables) == 2 and not any(isinstance(b, Figure) for b in blocks)
    assert tables[0].header == ["true \\ predicted", *"0123456789", "Accuracy"]
    assert tables[0].rows[4] == ["4", "0", "0", "0", "0", "977", "0", "0", "0", "0", "23", "97.70%"]
    text = to_markdown(report, None, tmp_path)
    assert "| 4 | 0 | 0 | 0 | 0 | 977 | 0 | 0 | 0 | 0 | 23 | 97.70% |" in text
    assert "4 taken for 9: 54 times" in text  # the observation naming the most confused pair


def test_report_section_with_matplotlib_is_one_figure_of_every_run(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from tuitrain.plots import close

    report = report_of(tmp_path, with_figures=True)
    blocks = section(report)
    figures = [b for b in blocks if isinstance(b, Figure)]
    try:
        assert [f.stem for f in figures] == ["confusion"] and not any(isinstance(b, Table) for b in blocks)
        assert [ax.get_title() for ax in figures[0].figure.axes] == ["lr=0.01 (epoch 2)", "lr=0.1 (epoch 2)"]
        texts = [t.get_text() for t in figures[0].figure.axes[0].texts]
        assert "977" in texts and "23" in texts  # the counts are written in the cells
        text = to_markdown(report, tmp_path / "figs", tmp_path)
        assert "Test confusion matrix at the final epoch of each run" in text
        assert (tmp_path / "figs" / "1-confusion.png").stat().st_size > 0
    finally:
        for b in report.blocks:
            if isinstance(b, Figure):
                close(b.figure)
