"""The training-curve plot (issue 23): per setting, each (learner, config)'s per-epoch training loss,
training accuracy and seconds, the mean over its seeds; learners without a loss named, not drawn as 0."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

from clbench import leaderboard, plots, runner
from test_training_log import KnownLosses, NoLoss, _scenario

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("single_thread")


def _rows(cls, seeds=(0, 1)):
    return [leaderboard.make_row(runner.run(_scenario(), cls, seed=seed, device="cpu", progress=False), _scenario(),
                                 "images") for seed in seeds]


def _curves(ax):
    """The labelled lines of a panel (not the experience boundaries)."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def _training_figures(frame):
    return {name: fig for _, name, fig in plots.figures(frame) if name.endswith("-training")}


def test_one_training_plot_per_setting_with_the_mean_over_seeds_and_none_without_a_loss():
    rows = _rows(KnownLosses) + _rows(NoLoss)
    log = json.loads(rows[1]["training_log"])  # the other seed: a different mean would show in the curve
    rows[1]["training_log"] = json.dumps({**log, "loss": [[1.75, 4.75], [7.75, 10.75]]})
    [(name, fig)] = _training_figures(pd.DataFrame(rows)).items()
    assert name.startswith("synthetic-") and name.endswith("-training")
    loss, accuracy, seconds = fig.axes[:3]
    [known] = _curves(loss)  # no-loss has no loss curve
    assert known.get_label() == "known-losses (n=2)"
    assert np.array_equal(known.get_ydata(), [1.25, 4.25, 7.25, 10.25])  # (0.75 + 1.75) / 2, ...
    assert np.array_equal(known.get_xdata(), [1, 2, 3, 4])
    assert [list(line.get_ydata()) for line in _curves(accuracy)] == [[50.0, 50.0, 0.0, 0.0]]
    assert {line.get_label() for line in _curves(seconds)} == {"known-losses (n=2)", "no-loss (n=2)"}
    assert [line.get_xdata()[0] for line in loss.get_lines() if line not in _curves(loss)] == [2.5]  # the boundary
    assert fig.texts[-1].get_text() == "no training loss or accuracy reported by: no-loss (n=2)"
    assert _training_figures(pd.DataFrame(rows[2:])) == {}  # no-loss alone: nothing to draw
    assert _training_figures(pd.DataFrame(rows[:2]).drop(columns="training_log")) == {}  # rows from before the log


def test_many_learners_fit_beside_the_panels_and_the_note_wraps():
    """Fifteen learners, most without a log (the committed split-digits table): the legend sits beside the
    panels, covering none of them, and the note under them wraps instead of widening the figure."""
    from clbench.training_plots import training_curves

    log = json.dumps({"loss": [[1.0, 0.5]], "accuracy": [[50.0, 90.0]], "seconds": [[0.1, 0.1]]})
    silent = json.dumps({"loss": [[None, None]], "accuracy": [[None, None]], "seconds": [[0.1, 0.1]]})
    loss_only = json.dumps({"loss": [[1.0, 0.5]], "accuracy": [[None, None]], "seconds": [[0.1, 0.1]]})
    named = [(f"learner-{i} with a long configuration label (n=3)",
              pd.DataFrame({"training_log": [log if i < 3 else loss_only if i == 3 else silent]})) for i in range(15)]
    fig = training_curves(named, "split-digits")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    [legend] = fig.legends
    box = legend.get_window_extent(renderer)
    assert not any(box.overlaps(ax.get_tightbbox(renderer)) for ax in fig.axes)
    note = fig.texts[-1].get_text().splitlines()
    assert note[0].startswith("no training loss or accuracy reported by: learner-4 with")
    assert note[-1] == "training loss only: learner-3 with a long configuration label (n=3)"
    assert all(len(line) <= 170 for line in note) and len(note) > 2
