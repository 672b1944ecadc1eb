"""Grouping runs by seed (mean ± sd, Welch's t-test), figures as PNG and SVG, and `tuitrain report`:
all from runs built here, no training."""

from __future__ import annotations

import re
import statistics
import struct
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.compare_fixtures import normal_pair, seeded_runs, write_runs
from tuitrain.cli import main
from tuitrain.compare import Comparison
from tuitrain.compare.groups import group_by_seed, group_rows, spread, student_t_two_sided, welch
from tuitrain.core.errors import TuitrainError


def compare(tmp_path: Path, records) -> Comparison:
    return Comparison.from_paths(write_runs(tmp_path / "runs", records))


# ---- grouping and arithmetic --------------------------------------------------------------------
def test_runs_that_differ_only_by_seed_form_groups(tmp_path: Path) -> None:
    c = compare(tmp_path, seeded_runs())
    groups = group_by_seed(c.runs)
    assert [(g.label, g.n, g.seeds) for g in groups] == [
        ("activation=relu", 3, [0, 1, 2]),
        ("activation=tanh", 3, [0, 1, 2]),
        ("activation=sigmoid", 3, [0, 1, 2]),
    ]
    assert c.has_repeats()
    assert not compare(tmp_path / "single", normal_pair()).has_repeats()


def test_mean_and_sd_over_seeds(tmp_path: Path) -> None:
    c = compare(tmp_path, seeded_runs())
    relu = group_by_seed(c.runs)[0]
    best = [r.best_accuracy for r in relu.runs]
    s = relu.spread(lambda r: r.best_accuracy)
    assert s is not None
    assert (s.n, s.mean, s.sd, s.lo, s.hi) == pytest.approx(
        (3, statistics.fmean(best), statistics.stdev(best), min(best), max(best))
    )
    values = spread([1.0, 2.0, 3.0, 4.0, None, float("nan")])
    assert values is not None and values.n == 4 and values.mean == 2.5
    assert values.sd == pytest.approx(1.2909944)
    assert values.text() == "2.50 ± 1.29"
    one = spread([98.0])
    assert one is not None and (one.sd, one.text(unit="%")) == (0.0, "98.00%")
    assert spread([None]) is None


def test_student_t_p_values_match_the_tables() -> None:
    # two-sided 5% critical values of Student's t
    for df, t in ((1, 12.706), (4, 2.776), (10, 2.228), (30, 2.042)):
        assert student_t_two_sided(t, df) == pytest.approx(0.05, abs=5e-4)
    assert student_t_two_sided(3.169, 10) == pytest.approx(0.01, abs=2e-4)
    assert student_t_two_sided(0.0, 5) == pytest.approx(1.0)


def test_welch_t_and_degrees_of_freedom() -> None:
    a, b = (
        [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4],
        [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4],
    )
    test = welch(a, b)
    assert test is not None
    # Welch's t by hand: (ma - mb) / sqrt(va/na + vb/nb), Welch-Satterthwaite df
    va, vb = statistics.variance(a) / 15, statistics.variance(b) / 15
    assert test.t == pytest.approx((statistics.fmean(a) - statistics.fmean(b)) / (va + vb) ** 0.5)
    assert test.df == pytest.approx((va + vb) ** 2 / (va**2 / 14 + vb**2 / 14))
    assert test.t == pytest.approx(-2.46, abs=0.01) and test.df == pytest.approx(24.9, abs=0.1)
    assert test.p == pytest.approx(0.021, abs=0.001)  # Wikipedia's worked example
    assert welch([1.0], [2.0, 3.0]) is None


def test_observations_use_the_spread_across_seeds(tmp_path: Path) -> None:
    notes = "\n".join(compare(tmp_path, seeded_runs()).observations())
    assert re.search(r"Best: activation=tanh .* \(n=3\) against activation=relu .*Welch's t-test", notes)
    assert "beyond the spread across seeds" in notes
    assert re.search(r"activation=tanh beats activation=sigmoid at epoch 1 in 3 of 3 seeds, by [\d.]+ ± [\d.]+", notes)
    assert "noise of" not in notes  # the test-set noise is for single runs
    single = "\n".join(compare(tmp_path / "single", normal_pair()).observations())
    assert "Welch" not in single and "points above the next" in single  # judged against the test-set noise


def test_close_groups_are_called_a_tie(tmp_path: Path) -> None:
    records = [r for r in seeded_runs() if r.spec.activation != "sigmoid"]
    for r in records:  # relu as good as tanh, give or take the seeds' wobble
        if r.spec.activation == "relu":
            for e in r.epochs:
                e.test_accuracy += 0.8 + (0.3 if r.spec.seed == 1 else -0.2)
    notes = "\n".join(compare(tmp_path, records).observations())
    assert "No clear best" in notes and "within the spread across seeds" in notes


def test_text_and_json_show_the_groups(tmp_path: Path) -> None:
    c = compare(tmp_path, seeded_runs())
    text = c.render("text")
    assert "Across seeds (mean ± sd over each group's seeds)" in text
    assert re.search(r"activation=tanh\s+3\s+0,1,2\s+\d+\.\d\d ± \d\.\d\d%", text)
    import json

    groups = json.loads(c.render("json"))["groups"]
    assert [g["seeds"] for g in groups] == [[0, 1, 2]] * 3
    assert groups[0]["best_accuracy"]["n"] == 3


def test_identical_reruns_are_duplicates_not_repeats_across_seeds(tmp_path: Path) -> None:
    # `tuitrain --preset smoke --no-ui` twice: the same settings and seed, once per invocation
    again = normal_pair()
    for r in again:
        r.invocation, r.id = "inv-2", r.id + "-again"
    again[0].epochs[-1].test_accuracy = 98.1  # not bitwise repeatable: still a duplicate
    c = compare(tmp_path, [*normal_pair(), *again])
    groups = group_by_seed(c.runs)
    assert [g.n for g in groups] == [1, 1, 1, 1] and not c.has_repeats()
    assert [g.duplicate_of.index if g.duplicate_of else None for g in groups] == [None, None, 1, 2]
    text = c.render("text")
    assert "Across seeds" not in text and "Welch" not in text and "inf" not in text
    notes = "\n".join(c.observations())
    assert "relu (fixture) #2 repeats relu (fixture) #1 with the same settings and seed (0): a duplicate" in notes
    assert "tanh (fixture) #2 repeats tanh (fixture) #1" in notes
    # a run is ranked against the next other run, not against its own duplicate ("differ by 0.00 points")
    assert (
        "Best: tanh (fixture) #1 with 98.60% best test accuracy (epoch 3), 0.40 points above the next, "
        "relu (fixture) #1" in notes
    )
    # a duplicate beside real repeats across seeds stays out of their group and their test
    twice = [*seeded_runs(), *seeded_runs(seeds=(1,), invocation="inv-again")]
    for r in twice[-3:]:
        r.id += "-again"
    c = compare(tmp_path / "seeds", twice)
    assert [(g.n, g.duplicate_of is not None) for g in c.groups()] == [(3, False)] * 3 + [(1, True)] * 3
    assert [row[1] for row in group_rows(c.groups(), c.threshold)] == ["3"] * 3  # the duplicates are no group rows


def test_no_t_test_between_groups_without_spread(tmp_path: Path) -> None:
    records = [r for r in seeded_runs(seeds=(0, 1)) if r.spec.activation != "sigmoid"]
    for r in records:  # every seed the same figures: no spread on either side
        r.epochs = [
            e.model_copy(update={"test_accuracy": 97.0 + (1 if r.spec.activation == "tanh" else 0)}) for e in r.epochs
        ]
    assert welch([97.0, 97.0], [98.0, 98.0]) is None
    c = compare(tmp_path, records)
    assert c.has_repeats()
    notes = "\n".join(c.observations())
    assert "no spread across seeds on either side for a test" in notes
    assert "t = " not in notes and "inf" not in c.render("text")


def test_failed_diverged_and_differently_labelled_runs_are_never_pooled(tmp_path: Path) -> None:
    # four script runs, one config, different labels: one failed, one logged NaN losses and says completed
    records = [r for r in normal_pair() if r.label == "relu"] * 4
    records = [r.model_copy(deep=True) for r in records]
    for r, label in zip(records, ("baseline", "wider", "broken", "nan")):
        r.label, r.id, r.config = label, f"script-{label}", {"lr": 0.01}
    records[2].status, records[2].error = "failed", "RuntimeError: out of memory"
    records[3].batch_losses[3] = float("nan")
    c = compare(tmp_path, records)
    assert [(g.label, g.n) for g in c.groups()] == [("baseline", 1), ("wider", 1), ("broken", 1), ("nan", 1)]
    # the same label across seeds is pooled, but never a failed or diverged run with a completed one
    seeded = [r.model_copy(deep=True) for r in records[:1] * 4]
    for seed, r in enumerate(seeded):
        r.id, r.config = f"s{seed}", {"lr": 0.01, "seed": seed}
    seeded[2].status = "failed"
    seeded[3].batch_losses[3] = float("nan")
    groups = compare(tmp_path / "seeded", seeded).groups()
    assert [(g.n, g.seeds) for g in groups] == [(2, [0, 1]), (1, [2]), (1, [3])]


# ---- figures ------------------------------------------------------------------------------------
def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_compare_plots_writes_png_and_svg(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    from tests.compare_fixtures import grid_runs

    write_runs(tmp_path / "runs", grid_runs())
    out = tmp_path / "figs"
    assert main(["compare", "--no-ui", str(tmp_path / "runs"), "--plots", str(out), "--log-loss"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy.png",
        "accuracy.svg",
        "grid.png",
        "grid.svg",
        "loss.png",
        "loss.svg",
    ]
    for png in out.glob("*.png"):
        width, height = png_size(png)
        assert width > 300 and height > 200
    for svg in out.glob("*.svg"):
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg")
    assert "grid" in capsys.readouterr().err


def test_figure_palette_is_the_apps() -> None:
    pytest.importorskip("matplotlib")
    from tuitrain.plots import PALETTE
    from tuitrain.tui.widgets.charts import PALETTE as APP_PALETTE

    assert PALETTE == APP_PALETTE


def test_without_matplotlib_one_line_says_how_to_install(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    write_runs(tmp_path / "runs", normal_pair())
    assert main(["compare", "--no-ui", str(tmp_path / "runs"), "--plots", str(tmp_path / "f")]) == 2
    assert main(["report", str(tmp_path / "runs"), "--output", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("pip install 'tuitrain[plots]'" in line for line in err)
    assert not (tmp_path / "r.md").exists()


# ---- the report ---------------------------------------------------------------------------------
class Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.headers: list[str] = []
        self._in_th = False

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)
        self._in_th = tag == "th"

    def handle_data(self, data) -> None:
        if self._in_th:
            self.headers.append(data)

    def handle_endtag(self, tag) -> None:
        self._in_th = False


def test_markdown_report_holds_tables_and_links_that_resolve(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    write_runs(tmp_path / "runs", seeded_runs())
    out = tmp_path / "out" / "report.md"
    assert main(["report", str(tmp_path / "runs"), "--output", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# fixture\n")
    assert text.count("| Epoch | Initial training loss | Final training loss | Test accuracy |") == 3
    assert "**activation=tanh (n=3, seeds 0,1,2)**" in text
    assert re.search(r"\| 1 \| 2\.3000 ± 0\.0000 \| 0\.\d{4} ± 0\.\d{4} \| \d+\.\d\d ± 0\.\d\d% \|", text)
    assert "| Group | n | Seeds | Final test acc | Best test acc |" in text
    assert "\n## Observations\n" in text and "Welch's t-test" in text
    levels = [len(line) - len(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")]
    assert levels[0] == 1 and all(b <= a + 1 for a, b in zip(levels, levels[1:])), levels  # no # then ###
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert {Path(link).suffix for link in links} == {".png", ".svg"}
    for link in links:
        assert not Path(link).is_absolute()
        assert (out.parent / link).is_file()
    for png in out.parent.rglob("*.png"):
        assert png_size(png)[0] > 300


def test_html_report_is_one_file_with_tables_and_inline_svg(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_runs(tmp_path / "runs", seeded_runs())
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "runs"), "--format", "html", "--output", str(out)]) == 0
    parser = Tables()
    parser.feed(out.read_text(encoding="utf-8"))
    assert parser.tags.count("table") >= 5  # three per-epoch tables, the groups, the runs
    assert parser.tags.count("svg") == 2  # loss and accuracy, inlined
    assert "img" not in parser.tags and "script" not in parser.tags  # nothing to fetch
    assert "Initial training loss" in parser.headers and "Test accuracy" in parser.headers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "runs"]  # self-contained


def test_report_of_two_invocations_has_a_section_each(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_runs(tmp_path / "a", seeded_runs(invocation="inv-a"))
    write_runs(tmp_path / "b", normal_pair())
    out = tmp_path / "r.md"
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Report on 2 experiments")
    assert text.count("\n## fixture\n") == 2
    assert (tmp_path / "r-figures" / "2-accuracy.png").is_file()


def test_report_bad_input(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--output", str(tmp_path / "r.md")]) == 2
    assert main(["report", "--runs-dir", str(tmp_path / "empty"), "--output", str(tmp_path / "r.md")]) == 2
    paths = write_runs(tmp_path / "runs", normal_pair())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["report", str(tmp_path / "runs"), "--output", str(blocker / "r.md")]) == 2
    assert main(["report", str(tmp_path / "runs"), "--output", str(paths[0])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("tuitrain: error: ") for line in err)
    assert not (tmp_path / "r.md").exists()
    # some unreadable: the report is written, and they are listed; exit 1
    (tmp_path / "runs" / "broken.json").write_text("{not json")
    out = tmp_path / "r.md"
    assert main(["report", str(tmp_path / "runs"), "--output", str(out)]) == 1
    assert "broken.json" in capsys.readouterr().err
    assert "## Unreadable run files" in out.read_text(encoding="utf-8")


def test_report_api_refuses_no_runs(tmp_path: Path) -> None:
    from tuitrain.report import write_report

    with pytest.raises(TuitrainError, match="nothing to report"):
        write_report([], tmp_path / "r.md")
