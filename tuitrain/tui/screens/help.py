"""The keys of each screen. Static content (snapshot-tested)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Markdown

from tuitrain.tui.widgets.too_small import TooSmall

HELP = """\
# tuitrain keys

## Presets and saved runs (home)
| Key | Does |
|---|---|
| Enter | train the highlighted preset (on the presets list); watch a *live* run (on the saved runs) |
| Tab | move between the presets and the saved runs |
| Space | select / unselect the highlighted saved run |
| c | compare the selected runs |
| r | reload the saved runs |

## Training (run screen)
| Key | Does |
|---|---|
| p | pause / resume training |
| n | stop the current run (saved as *interrupted*); the preset goes on with the next run |
| x | stop all: the current run is saved as *interrupted*, no more runs start |
| s | smoothed (EMA) / raw batch losses |
| l | linear / log scale for the loss chart |
| Esc | back to the presets once training is over (at any time when watching another process's run) |

## Everywhere
| Key | Does |
|---|---|
| ? | this help (Esc closes it) |
| q | quit; while training it asks first, then saves the run as *interrupted* |

Run files are JSON, one per run, under the runs folder (`--runs-dir`, default `runs/`).
"""


class HelpScreen(Screen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close help")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Markdown(HELP)
        yield Footer()
        yield TooSmall()

    def action_close(self) -> None:
        self.dismiss(None)
