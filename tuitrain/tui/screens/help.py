"""The keys of each screen. Static content (snapshot-tested)."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Markdown

from tuitrain.tui.widgets.too_small import SizedScreen, TooSmall

HOME = """\
## Presets and saved runs (home)
| Key | Does |
|---|---|
| Enter | on a preset: train it; on a saved run: watch it if *live*, else open it in the comparison |
| Tab | move between the presets and the saved runs |
| Space | select / unselect the highlighted saved run |
| c | compare the selected runs |
| r | reload the saved runs |
| / | filter the saved runs: words (label, preset, tags, note, path), tag:NAME, status:live; Esc clears it |
| d | move the selected runs (else the highlighted one) to the trash, runs/.trash, after asking; not a live run |
| u | bring back the runs d just trashed (`tuitrain restore` lists the trash) |
| l / t / n | rename the highlighted run / tag the selected runs (+TAG, -TAG) / write a note on them |
| j | runs trained at once: auto, 1, 2, … up to the cores (the Jobs column and the times follow) |
"""

TRAINING = """\
## Training (run screen)
| Key | Does |
|---|---|
| Tab / Shift+Tab | with several runs training at once: highlight the next / previous one (p and n act on it) |
| p | pause / resume the highlighted run (one run at a time: training) |
| n | stop the highlighted run (saved as *interrupted*); the preset goes on with the next run |
| x | stop all: the runs in progress are saved as *interrupted*, no more runs start |
| p n x | watching another tuitrain process's runs: the same, asked of that process (shown once it has done it) |
| s | smoothed (EMA) / raw batch losses |
| l | linear / log scale for the loss chart (and a per-epoch figure other than accuracy) |
| m | pick the metric drawn: any per-step series the runs logged (left chart) or per-epoch figure (right) |
| z | step range of the left chart: all steps, the latest half, tenth, hundredth |
| c | the highlighted run's latest test confusion matrix, per-class accuracy beside it, in the charts' place |
| f | once training is over: the run files' whole folder (the line above the charts cuts it), also to the clipboard |
| Esc | back to the presets once training is over (at any time when watching another process's run) |
"""

COMPARE = """\
## Comparing runs (compare screen)
| Key | Does |
|---|---|
| 1 … 6 | views: charts and run list, summary, observations, per epoch, grid, unreadable files |
| Space | in the run list: show / leave out the highlighted run |
| b | pin the highlighted run (the summary's column under the cursor) as the baseline; again to unpin |
| a | all hyperparameters / only those that differ |
| t | next threshold for "first epoch ≥ threshold" |
| m | pick the metric drawn: a per-step series (upper chart) or per-epoch figure (lower; ranks the runs) |
| l | linear / log scale for the upper chart |
| z | step range of the upper chart: all, the latest half, tenth, hundredth |
| r | write the report of the shown runs (report.md and its figures, in their folder; needs tuitrain[plots]) |
| ← → | in the tables: move across the runs' columns (the line above says which are in view) |
| Esc | back (in `tuitrain compare`: quit) |
"""

EVERYWHERE = """\
## Everywhere
| Key | Does |
|---|---|
| ? | this help (Esc closes it) |
| q | quit, from any screen; while training it asks first, then saves the run as *interrupted* |
"""

SECTIONS = {"home": HOME, "training": TRAINING, "compare": COMPARE, "everywhere": EVERYWHERE}
FOOTNOTE = "\nRun files are JSON, one per run, under the runs folder (`--runs-dir`, default `runs/`).\n"


def help_text(sections: Sequence[str] = tuple(SECTIONS)) -> str:
    return "# tuitrain keys\n\n" + "\n".join(SECTIONS[s] for s in sections) + FOOTNOTE


class HelpScreen(SizedScreen[None]):
    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape,question_mark", "close", "Close help")]

    def __init__(self, sections: Sequence[str] = tuple(SECTIONS)) -> None:
        """`sections`: the screens whose keys to list (`tuitrain compare` has only the compare screen)."""
        super().__init__()
        self.sections = tuple(sections)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Markdown(help_text(self.sections))
        yield Footer()
        yield TooSmall()

    def action_close(self) -> None:
        self.dismiss(None)
