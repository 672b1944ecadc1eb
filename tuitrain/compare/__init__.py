"""Comparing saved runs: the numbers, the observations they support, and the exports.

Shared by `tuitrain compare --no-ui` and the app's compare screen; never imports torch or textual
and never writes to a run file. Every figure comes from the run records; nothing is estimated.

- model: the runs, the baseline, the hyperparameters shown, the table's figure rows, the grid
- observations: the claims the numbers support
- exports: text, markdown, csv and json
- curves: smoothed loss, accuracy and learning rate per epoch, for charts
"""

from tuitrain.compare.curves import accuracy_curve, group_curve, has_lr_schedule, loss_curve, lr_curve
from tuitrain.compare.exports import FORMATS, markdown_table
from tuitrain.compare.model import DEFAULT_THRESHOLD, Comparison, Grid, Metric
from tuitrain.compare.runs import RunColumn, param_text

__all__ = [
    "DEFAULT_THRESHOLD",
    "FORMATS",
    "Comparison",
    "Grid",
    "Metric",
    "RunColumn",
    "accuracy_curve",
    "group_curve",
    "has_lr_schedule",
    "loss_curve",
    "lr_curve",
    "markdown_table",
    "param_text",
]
