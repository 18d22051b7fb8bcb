"""The training-curve plot of one setting: per epoch of the whole stream, the training loss, the
training accuracy and the seconds each (learner, config) reported (its rows' `training_log`, the mean
over seeds), with the experience boundaries marked. Called by `plots.figures` for each table."""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PANELS = (("loss", "training loss (mean over the epoch)"), ("accuracy", "training accuracy (%)"),
          ("seconds", "seconds per epoch"))


def epoch_series(log: dict, key: str) -> np.ndarray:
    """One figure of a `training_log` cell (`loss`, `accuracy`, `seconds`), epoch after epoch through the
    whole stream (NaN where the learner reported none)."""
    return np.array([np.nan if v is None else v for phase in log[key] for v in phase], dtype=float)


def boundaries(log: dict) -> np.ndarray:
    """The epochs after which a training phase (an experience, or a federated client's share) ended."""
    return np.cumsum([len(phase) for phase in log["seconds"]])[:-1]


def training_curves(named: list[tuple[str, pd.DataFrame]], title: str) -> Figure | None:
    """The training curves of one setting's (label, rows) groups, each the mean over its rows (seeds);
    learners that reported no loss, or no training accuracy, are named under the plot; up to 50
    experience boundaries are drawn. None when no row reported any loss or training accuracy (a
    setting of such learners only, or rows from before the log existed)."""
    import matplotlib.pyplot as plt

    curves = []
    for label, rows in named:
        logs = [json.loads(cell) for cell in rows.get("training_log", pd.Series(dtype=object)).dropna()]
        if not logs or len({len(epoch_series(log, "seconds")) for log in logs}) != 1:
            continue
        series = {key: _mean(np.stack([epoch_series(log, key) for log in logs])) for key, _ in PANELS}
        curves.append((label, series, boundaries(logs[0])))
    if all(series["loss"] is None and series["accuracy"] is None for _, series, _ in curves):
        return None
    fig, axes = plt.subplots(1, len(PANELS), figsize=(13, 3.8))
    palette = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20").colors  # one colour per learner, every panel
    for ax, (key, ylabel) in zip(axes, PANELS):
        for (label, series, _), colour in zip(curves, palette * len(curves)):
            if series[key] is not None:
                ax.plot(np.arange(1, len(series[key]) + 1), series[key], label=label, color=colour, linewidth=1)
        edges = curves[0][2] if len(curves[0][2]) <= 50 else ()
        for edge in edges:
            ax.axvline(edge + 0.5, color="0.85", linewidth=0.6, zorder=0)
        ax.set(xlabel="epochs trained" + (" (lines: experience boundaries)" if len(edges) else ""), ylabel=ylabel)
    axes[1].set_ylim(0, 100)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    handles, labels = axes[-1].get_legend_handles_labels()  # seconds: every learner with a log
    if handles:  # beside the panels, so that no label covers an axis (the saved PNG is cropped to fit)
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    note = silent_note(curves)
    if note:
        fig.text(0.02, -0.02, note, ha="left", va="top", fontsize=8)
    return fig


def silent_note(curves: list[tuple[str, dict, np.ndarray]]) -> str:
    """The lines under the plot naming the learners that reported neither loss nor training accuracy,
    and those that reported a loss only; wrapped to the figure's width."""
    import textwrap

    nothing = [label for label, series, _ in curves if series["loss"] is None and series["accuracy"] is None]
    loss_only = [label for label, series, _ in curves if series["loss"] is not None and series["accuracy"] is None]
    parts = [f"{what}: {', '.join(labels)}" for what, labels in
             (("no training loss or accuracy reported by", nothing), ("training loss only", loss_only)) if labels]
    return "\n".join(textwrap.fill(part, 170) for part in parts)


def _mean(runs: np.ndarray) -> np.ndarray | None:
    """The mean over runs (rows) of each epoch, NaN where none reported it; None where none reported any."""
    if np.isnan(runs).all():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an epoch no run reported: NaN, as meant
        return np.nanmean(runs, axis=0)
