"""Plots: one set per setting, labelled with the setting and short config labels, bar charts for
few-shot episodes, heatmaps only for two or more experiences, file names that stay in the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clbench import plots
from clbench.plots import plot_leaderboard


def _row(**changes) -> dict:
    row = dict(scenario="split", scenario_fingerprint="fp", setting_id="set", scenario_overrides=json.dumps({"epochs": 2}),
               protocol="class-incremental", learner="finetune", learner_config=json.dumps({"lr": 0.1, "momentum": 0.9}),
               seed=0, created_at="2024-01-01T00:00:00+00:00", status="ok", fewshot_accuracy=float("nan"),
               fewshot_ci95=float("nan"), accuracy_matrix="[[90.0, 0.0], [40.0, 80.0]]", accuracy_curve="[90.0, 60.0]")
    return {**row, **changes}


@pytest.fixture
def texts(monkeypatch):
    """The title, x tick labels and legend entries of each saved figure's main axes, by file name."""
    seen = {}
    save = plots.save_png

    def recording(fig, path):
        ax = fig.axes[0]
        legend = ax.get_legend().get_texts() if ax.get_legend() else []
        seen[Path(path).name] = [t.get_text() for t in [ax.title, *ax.get_xticklabels(), *legend]]
        save(fig, path)

    monkeypatch.setattr(plots, "save_png", recording)
    return seen


def test_curves_and_heatmaps_name_the_setting_and_a_short_config(tmp_path, texts):
    rows = [_row(seed=0), _row(seed=1), _row(learner_config=json.dumps({"lr": 0.5, "momentum": 0.9})),
            _row(learner="nmc", learner_config="{}")]
    written = plot_leaderboard(pd.DataFrame(rows), tmp_path)
    names = sorted(p.name for p in written)
    assert len(names) == 4 and sum(n.endswith("-curves.png") for n in names) == 1  # 1 curve plot, 3 heatmaps
    assert all(p.stat().st_size > 1000 for p in written)
    curves = next(v for k, v in texts.items() if k.endswith("-curves.png"))
    assert "split (epochs=2)" in curves[0]
    assert {"finetune lr=0.1 (n=2)", "finetune lr=0.5 (n=1)", "nmc (n=1)"} <= set(curves)
    assert not any("{" in text for lines in texts.values() for text in lines)  # no raw JSON anywhere


def test_each_setting_gets_its_own_plots(tmp_path):
    rows = [_row(), _row(setting_id="other", scenario_overrides=json.dumps({"epochs": 1}))]
    names = [p.name for p in plot_leaderboard(pd.DataFrame(rows), tmp_path)]
    assert sum(n.endswith("-curves.png") for n in names) == 2 and len(set(names)) == len(names)


def test_few_shot_rows_get_a_bar_chart_and_no_heatmap(tmp_path, texts):
    episodes = dict(protocol="episodes", accuracy_matrix="[[70.0]]", accuracy_curve="[70.0]", fewshot_ci95=1.5)
    rows = [_row(**episodes, learner="nmc", learner_config="{}", fewshot_accuracy=70.0),
            _row(**episodes, learner="protonet", learner_config="{}", fewshot_accuracy=60.0)]
    written = plot_leaderboard(pd.DataFrame(rows), tmp_path)
    assert [p.name.endswith("-episodes.png") for p in written] == [True]
    assert {"nmc (n=1)", "protonet (n=1)"} <= set(texts[written[0].name])


def test_one_experience_gets_no_heatmap(tmp_path):
    rows = [_row(accuracy_matrix="[[70.0]]", accuracy_curve="[70.0]")]
    assert [p.name.endswith("-curves.png") for p in plot_leaderboard(pd.DataFrame(rows), tmp_path)] == [True]


def test_ticks_are_whole_experiences(tmp_path, texts):
    written = plot_leaderboard(pd.DataFrame([_row()]), tmp_path)
    curves, matrix = (next(p.name for p in written if p.name.endswith(end)) for end in ("-curves.png", "-matrix.png"))
    assert texts[curves][1:3] == ["1", "2"] and texts[matrix][1:] == ["0", "1"]


def test_file_names_from_data_stay_in_the_folder(tmp_path):
    rows = [_row(scenario="../../evil/..", scenario_fingerprint="../../x", setting_id="/etc/passwd", learner="../up")]
    folder = tmp_path / "plots"
    written = plot_leaderboard(pd.DataFrame(rows), folder)
    assert written and all(p.parent == folder and p.exists() for p in written)
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == sorted(p.name for p in written)
    assert all(".." not in p.name.removesuffix(".png") for p in written)


def test_plots_name_configs_exactly_as_the_tables_do(tmp_path, texts):
    """Labels that a 40-character cut made equal are unique, and the same in the legend as in the table."""
    from clbench.leaderboard import aggregate
    from clbench.leaderboard_tables import tables

    common = {"generator": "mlp", "parametrization": "standard_with_a_long_name"}
    rows = [_row(learner="hnet", learner_config=json.dumps({**common, "beta": beta}), final_accuracy=60.0)
            for beta in (0.01, 0.0)]
    written = plot_leaderboard(pd.DataFrame(rows), tmp_path)
    [(_, _, table)] = tables(aggregate(pd.DataFrame(rows)))
    named = {f"{learner} {config} (n=1)" for learner, config in zip(table["learner"], table["config"])}
    curves = next(p.name for p in written if p.name.endswith("-curves.png"))
    assert len(named) == 2 and named <= set(texts[curves])


def test_ci_bands_and_bars_stay_within_0_and_100(tmp_path, monkeypatch):
    highest = []
    save = plots.save_png

    def recording(fig, path):
        ax = fig.axes[0]
        highest.extend(p.vertices[:, 1].max() for c in ax.collections for p in c.get_paths() if len(p.vertices))
        highest.extend(line.get_ydata().max() for line in ax.lines if len(line.get_ydata()))  # error bars' lines
        save(fig, path)

    monkeypatch.setattr(plots, "save_png", recording)
    curves = [_row(seed=s, accuracy_matrix="[[99.0, 0.0], [40.0, 80.0]]", accuracy_curve=f"[{v}, 60.0]")
              for s, v in enumerate((98.0, 100.0, 100.0))]  # 99.33 ± 2.87 at the first step
    bars = [_row(scenario="fs", protocol="episodes", accuracy_matrix="[[99.0]]", accuracy_curve="[99.0]",
                 fewshot_accuracy=99.0, fewshot_ci95=3.0)]
    plot_leaderboard(pd.DataFrame(curves + bars), tmp_path)
    assert highest and max(highest) <= 100.0
