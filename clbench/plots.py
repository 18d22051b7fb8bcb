"""Pictures of the leaderboard, one set per (scenario, stream, setting): accuracy curves with 95% CI
bands, or for few-shot episodes a bar chart with CI bars, and accuracy-matrix heatmaps."""

from __future__ import annotations

import io

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pandas as pd

from clbench.leaderboard import TABLE, latest_runs
from clbench.leaderboard_tables import config_labels, setting_label
from clbench.stats import ci95
from clbench.training_plots import training_curves

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _safe(text: str, limit: int = 40) -> str:
    """A file-name part made from data: letters, digits, `_` and `-` only (no dot, no slash)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:limit] or "x"


def _short_hash(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8]


def plot_leaderboard(frame: pd.DataFrame, folder: str | Path) -> list[Path]:
    """Write the plots of `frame` (see `figures`) into `folder` as `<name>.png`; returns the paths."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for _, name, fig in figures(frame):
        written.append(folder / f"{name}.png")
        save_png(fig, written[-1])
        plt.close(fig)
    return written


def save_png(fig: Figure, target: str | Path | BinaryIO) -> None:
    """A figure as PNG, with no metadata that changes from one rendering to the next, reduced to a
    256-colour palette (plots use few colours: the file, and the page embedding it, is ~2.5x smaller)."""
    from PIL import Image

    rendered = io.BytesIO()
    fig.savefig(rendered, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    rendered.seek(0)
    Image.open(rendered).convert("RGB").quantize(colors=256).save(target, format="PNG", optimize=True)


def figures(frame: pd.DataFrame) -> Iterator[tuple[tuple[str, str, str], str, Figure]]:
    """The plots of every table (scenario, stream, setting: `leaderboard.TABLE`) of `frame`, each seed
    of a (setting, learner, config) counted once (`leaderboard.latest_runs`), as (table key, name,
    figure): `<scenario>-<id>-curves` (accuracy on all test data seen so far after each experience,
    the mean over seeds per learner and config with its Student-t 95% CI, clipped to [0, 100], as a
    band), or `<scenario>-<id>-episodes` for few-shot episodes (mean episode accuracy per learner
    with the runs' 95% CI as error bars), and one `<scenario>-<id>-<learner>[-<config id>]-matrix`
    heatmap (mean accuracy matrix) per learner and config where there are at least two experiences.
    `<id>` is a short hash of the stream and the setting; configs carry the labels the tables give
    them (`leaderboard_tables.config_labels`)."""
    import matplotlib

    matplotlib.use("Agg")
    runs, _ = latest_runs(frame)
    for key, group in runs.groupby(TABLE, sort=False, dropna=False):
        scenario, stream, setting = key
        group = group.assign(config_label=config_labels(group))
        stem = f"{_safe(str(scenario))}-{_short_hash(stream, setting)}"
        title = f"{setting_label(scenario, group['scenario_overrides'].iloc[0])}\n{group['protocol'].iloc[0]}, setting {setting}"
        by_config = list(group.groupby(["learner", "learner_config"], sort=False))
        if group["protocol"].iloc[0] == "episodes":
            yield key, f"{stem}-episodes", _episode_bars(by_config, title)
        else:
            yield key, f"{stem}-curves", _curves(by_config, title)
        training = training_curves([(_name(rows), rows) for _, rows in by_config], title)
        if training is not None:  # `<scenario>-<id>-training`: per-epoch loss, accuracy, seconds
            yield key, f"{stem}-training", training
        several = group.groupby("learner")["learner_config"].nunique()
        for (learner, config), rows in by_config:
            matrices = [json.loads(m) for m in rows["accuracy_matrix"].dropna()]
            if not matrices or len({np.shape(m) for m in matrices}) != 1 or np.ndim(matrices[0]) != 2 or len(matrices[0]) < 2:
                continue
            suffix = f"-{_short_hash(config)}" if several[learner] > 1 else ""
            yield key, f"{stem}-{_safe(str(learner))}{suffix}-matrix", \
                _heatmap(np.asarray(matrices, dtype=float), f"{title}\n{_name(rows)}")


def _ticks(count: int, first: int = 0) -> np.ndarray:
    """Whole-number ticks for `count` experiences: every one up to 20, else about ten."""
    return np.arange(first, first + count, 1 if count <= 20 else -(-count // 10))


def _name(rows: pd.DataFrame) -> str:
    """`learner config-label (n=seeds)` of one (learner, config) group."""
    label = rows["config_label"].iloc[0]
    return f"{rows['learner'].iloc[0]}{' ' + label if label else ''} (n={len(rows)})"


def _curves(by_config: list, title: str) -> Figure:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if len(by_config) > 10:  # the default cycle repeats after ten colours
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    for _, rows in by_config:
        curves = [json.loads(c) for c in rows["accuracy_curve"].dropna()]
        if not curves or len({len(c) for c in curves}) != 1 or not curves[0]:
            continue
        curves = np.asarray(curves, dtype=float)
        steps = np.arange(1, curves.shape[1] + 1)
        mean, half = curves.mean(0), np.array([ci95(column) for column in curves.T])
        ax.plot(steps, mean, marker="o", label=_name(rows))
        if not np.isnan(half).all():
            ax.fill_between(steps, np.clip(mean - half, 0, 100), np.clip(mean + half, 0, 100), alpha=0.2)
    ax.set(xlabel="experiences trained", ylabel="accuracy on all seen test data (%), band: 95% CI",
           title=title, ylim=(0, 100))
    if ax.lines:
        ax.set_xticks(_ticks(len(ax.lines[0].get_xdata()), first=1))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=8, frameon=False)
    return fig


def _episode_bars(by_config: list, title: str) -> Figure:
    import matplotlib.pyplot as plt

    names = [_name(rows) for _, rows in by_config]
    means = [rows["fewshot_accuracy"].mean() for _, rows in by_config]
    cis = [rows["fewshot_ci95"].mean() for _, rows in by_config]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 2), 4))
    positions = np.arange(len(names))
    below, above = np.minimum(cis, means), np.minimum(cis, 100 - np.asarray(means))  # the CI clipped to [0, 100]
    ax.bar(positions, means, yerr=[below, above], capsize=6, color="tab:blue", alpha=0.8)
    for x, mean, ci in zip(positions, means, cis):
        ax.annotate(f"{mean:.2f} ± {ci:.2f}", (x, mean), xytext=(0, 14), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(positions, names, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel="mean episode accuracy (%), bars: 95% CI", title=title, ylim=(0, 105))
    return fig


def _heatmap(matrices: np.ndarray, title: str) -> Figure:
    import matplotlib.pyplot as plt

    mean = np.nanmean(matrices, axis=0)
    size = len(mean)
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    image = ax.imshow(mean, vmin=0, vmax=100, cmap="viridis")
    ax.set_xticks(_ticks(size))
    ax.set_yticks(_ticks(size))
    ax.set(xlabel="evaluated experience j", ylabel="trained through experience i", title=title)
    if size <= 10:
        for (i, j), value in np.ndenumerate(mean):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7, color="w" if value < 60 else "k")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.title.set_fontsize(8)
    return fig
