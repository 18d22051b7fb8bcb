"""The leaderboard CSV: round trip, recomputable metrics, safe concurrent appends, old files."""

from __future__ import annotations

import csv
import json
import multiprocessing

import pandas as pd
import pytest

from clbench import leaderboard, metrics, runner
from clbench.errors import ClbenchError
from clbench.learner import get_learner
from clbench.plots import plot_leaderboard
from synthetic import make_scenario


@pytest.fixture(scope="module")
def row():
    scenario = make_scenario(task_incremental=True)
    result = runner.run(scenario, get_learner("finetune"), seed=1, progress=False)
    return leaderboard.make_row(result, scenario, "images")


def test_row_has_the_documented_columns(row):
    assert tuple(row) == leaderboard.COLUMNS
    assert row["status"] == "ok" and row["seed"] == 1 and row["n_experiences"] == 2
    assert row["protocol"] == "task-incremental" and row["backbone"] == "mlp"


def test_round_trip_and_metrics_recompute_from_the_matrix(row, leaderboard_path):
    leaderboard.append_rows(leaderboard_path, [row, row])
    frame = leaderboard.read(leaderboard_path)
    assert len(frame) == 2
    back = frame.iloc[0]
    assert back["accuracy_matrix"] == row["accuracy_matrix"]
    recomputed = leaderboard.recompute_metrics(back)
    assert set(recomputed) == set(leaderboard.METRICS)
    for name, value in recomputed.items():
        assert back[name] == pytest.approx(value, abs=1e-3), name
    assert back["forward_transfer"] == pytest.approx(
        metrics.forward_transfer(json.loads(back["accuracy_matrix"]), json.loads(back["untrained_accuracy"])), abs=1e-3)
    assert json.loads(back["learner_config"]) == json.loads(row["learner_config"])
    assert back["scenario_fingerprint"] == row["scenario_fingerprint"]


def test_formula_cells_are_neutralised(row, leaderboard_path):
    evil = {**row, "learner": "=HYPERLINK(\"x\")", "device": "@cmd", "forgetting": -3.5}
    leaderboard.append_rows(leaderboard_path, [evil])
    with open(leaderboard_path, newline="") as f:
        record = list(csv.DictReader(f))[0]
    assert record["learner"].startswith("'=") and record["device"] == "'@cmd"
    assert record["forgetting"] == "-3.5"  # numbers are numbers, not formulas


def _append_many(args):
    path, row, n = args
    for _ in range(n):
        leaderboard.append_rows(path, [row])


def test_concurrent_appends_lose_and_tear_nothing(row, leaderboard_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_append_many, [(leaderboard_path, row, 15)] * 4)
    frame = leaderboard.read(leaderboard_path)
    assert len(frame) == 60
    assert all(len(json.loads(m)) == 2 for m in frame["accuracy_matrix"])
    assert not list(leaderboard_path.parent.glob("*.tmp"))


def test_an_older_file_with_other_columns_still_reads_and_appends(row, leaderboard_path):
    leaderboard_path.parent.mkdir(parents=True)
    old_columns = ["seed", "learner", "scenario", "scenario_fingerprint", "final_accuracy", "legacy_note"]
    pd.DataFrame([{"seed": 0, "learner": "old", "scenario": "s", "scenario_fingerprint": "f",
                   "final_accuracy": 12.5, "legacy_note": "kept"}])[old_columns].to_csv(leaderboard_path, index=False)
    assert leaderboard.read(leaderboard_path).iloc[0]["final_accuracy"] == 12.5
    leaderboard.append_rows(leaderboard_path, [row])
    frame = leaderboard.read(leaderboard_path)
    assert list(frame.columns[: len(leaderboard.COLUMNS)]) == list(leaderboard.COLUMNS)
    assert frame["learner"].tolist() == ["old", "finetune"]
    assert frame.iloc[0]["legacy_note"] == "kept"


def test_aggregate_mean_and_std_over_seeds(row):
    rows = [{**row, "seed": s, "final_accuracy": acc} for s, acc in ((0, 60.0), (1, 70.0), (2, 80.0))]
    rows.append({**row, "learner": "other", "final_accuracy": 10.0})
    summary = leaderboard.aggregate(pd.DataFrame(rows))
    finetune = summary[summary["learner"] == "finetune"].iloc[0]
    assert finetune["seeds"] == 3 and finetune["final_accuracy_mean"] == 70.0
    assert finetune["final_accuracy_std"] == pytest.approx(10.0)  # sample std over seeds
    text = leaderboard.render(summary, "markdown")
    assert "70.00 ± 10.00" in text and text.index("finetune") < text.index("other")


def test_unwritable_path_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ClbenchError, match="cannot write the leaderboard"):
        leaderboard.check_writable(blocker / "sub" / "leaderboard.csv")
    with pytest.raises(ClbenchError, match="is a directory"):
        leaderboard.check_writable(tmp_path)


def test_plots_are_written(row, tmp_path):
    frame = pd.DataFrame([{**row, "seed": s} for s in (0, 1)] + [{**row, "learner": "other"}])
    written = plot_leaderboard(frame, tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert len(names) == 3 and names[0].endswith("-curves.png") and all(p.stat().st_size > 1000 for p in written)
