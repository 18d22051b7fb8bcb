"""Pictures of the leaderboard: accuracy curves per scenario and accuracy-matrix heatmaps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def plot_leaderboard(frame: pd.DataFrame, folder: str | Path) -> list[Path]:
    """Write, per scenario fingerprint, `<scenario>-<fp>-curves.png` (accuracy on all seen test data
    after each experience, mean over seeds per learner and config, shaded ± std) and one
    `<scenario>-<fp>-<learner>-matrix.png` heatmap per learner (mean accuracy matrix over its runs).
    Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    ok = frame[frame["status"].fillna("ok") == "ok"]
    for (scenario, fingerprint), runs in ok.groupby(["scenario", "scenario_fingerprint"], sort=False):
        stem = f"{_safe(scenario)}-{fingerprint[:8]}"
        fig, ax = plt.subplots(figsize=(6, 4))
        for (learner, config), group in runs.groupby(["learner", "learner_config"], sort=False):
            curves = [json.loads(c) for c in group["accuracy_curve"]]
            if len({len(c) for c in curves}) != 1 or len(curves[0]) < 1:
                continue
            curves = np.asarray(curves)
            steps = np.arange(1, curves.shape[1] + 1)
            several = runs.loc[runs["learner"] == learner, "learner_config"].nunique() > 1
            label = f"{learner} {config}" if several else learner
            ax.plot(steps, curves.mean(0), marker="o", label=f"{label} (n={len(curves)})")
            ax.fill_between(steps, curves.mean(0) - curves.std(0), curves.mean(0) + curves.std(0), alpha=0.2)
        ax.set(xlabel="experiences trained", ylabel="accuracy on all seen test data (%)", title=scenario, ylim=(0, 100))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(folder / f"{stem}-curves.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
        for learner, group in runs.groupby("learner", sort=False):
            matrices = [json.loads(m) for m in group["accuracy_matrix"]]
            if len({np.shape(m) for m in matrices}) != 1:
                continue
            mean = np.nanmean(np.asarray(matrices, dtype=float), axis=0)
            fig, ax = plt.subplots(figsize=(4.5, 4))
            image = ax.imshow(mean, vmin=0, vmax=100, cmap="viridis")
            ax.set(xlabel="evaluated experience j", ylabel="trained through experience i",
                   title=f"{scenario}: {learner} A[i][j]")
            if len(mean) <= 10:
                for (i, j), value in np.ndenumerate(mean):
                    ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7, color="w" if value < 60 else "k")
            fig.colorbar(image, ax=ax, label="accuracy (%)")
            fig.tight_layout()
            written.append(folder / f"{stem}-{_safe(learner)}-matrix.png")
            fig.savefig(written[-1], dpi=120)
            plt.close(fig)
    return written
