"""Leaderboard rows, protocol figures, aggregation over seeds within one setting, rendering."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from clbench import leaderboard, leaderboard_tables, metrics, runner
from clbench.datasets import Dataset, LabeledArrays
from clbench.errors import ClbenchError
from clbench.learner import get_learner
from clbench.learners.nmc import NMC
from clbench.protocols.sessions import stream_from_sessions
from clbench.scenario import Scenario, ScenarioSpec
from clbench.setting import setting_identity
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
    assert row["final_seen_accuracy"] == json.loads(row["accuracy_curve"])[-1]


def test_round_trip_and_metrics_recompute_from_the_matrix(row, leaderboard_path):
    leaderboard.append_rows(leaderboard_path, [row, row])
    frame = leaderboard.read(leaderboard_path)
    assert len(frame) == 2
    back = frame.iloc[0]
    assert back["accuracy_matrix"] == row["accuracy_matrix"] and back["setting_id"] == row["setting_id"]
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


def _with_spec(scenario: Scenario, **overrides) -> Scenario:
    return Scenario(scenario.spec.with_overrides(overrides), scenario.dataset, scenario.stream)


def test_the_setting_id_names_the_setting_not_the_learner(row):
    scenario = make_scenario()
    result = runner.run(scenario, get_learner("nmc"), progress=False)
    nmc = leaderboard.make_row(result, scenario, "features")
    finetune = leaderboard.make_row(dataclasses.replace(result, learner="finetune"), scenario, "images")
    assert nmc["setting_id"] == finetune["setting_id"]
    other = leaderboard.make_row(result, _with_spec(scenario, encoder="small_cnn"), "features")
    assert other["scenario_fingerprint"] == nmc["scenario_fingerprint"]  # the same data ...
    assert other["setting_id"] != nmc["setting_id"]  # ... seen another way


def test_two_settings_are_never_averaged_together(row):
    """The runs of issue 10 §1: nmc flatten vs small_cnn, finetune 1 vs 2 epochs."""
    scenario = make_scenario()
    settings = {"flatten": scenario, "small_cnn": _with_spec(scenario, encoder="small_cnn"),
                "1 epoch": _with_spec(scenario, epochs=1), "2 epochs": _with_spec(scenario, epochs=2)}
    ids = {k: setting_identity(s.spec) for k, s in settings.items()}
    accuracy = {"flatten": 90.53, "small_cnn": 70.94, "1 epoch": 9.77, "2 epochs": 19.77}
    rows = [{**row, "learner": "nmc" if k in ("flatten", "small_cnn") else "finetune", "setting_id": ids[k],
             "final_accuracy": accuracy[k], "seed": 0} for k in settings]
    summary = leaderboard.aggregate(pd.DataFrame(rows))
    assert len(summary) == 4 and summary["seeds"].tolist() == [1, 1, 1, 1]
    assert sorted(summary["final_accuracy_mean"]) == sorted(accuracy.values())  # none merged (84.00 ± 11.31 was)
    assert summary["final_accuracy_std"].isna().all()


def test_aggregate_mean_and_std_over_seeds(row):
    rows = [{**row, "seed": s, "final_accuracy": acc} for s, acc in ((0, 60.0), (1, 70.0), (2, 80.0))]
    rows.append({**row, "learner": "other", "final_accuracy": 10.0})
    summary = leaderboard.aggregate(pd.DataFrame(rows))
    finetune = summary[summary["learner"] == "finetune"].iloc[0]
    assert finetune["seeds"] == 3 and finetune["final_accuracy_mean"] == 70.0
    assert finetune["final_accuracy_std"] == pytest.approx(10.0)  # sample std over seeds
    assert summary.attrs["duplicates"] == 0
    text = leaderboard_tables.render(summary, "markdown")
    assert "70.00 ± 10.00" in text and text.index("finetune") < text.index("other")
    assert "duplicate" not in text


def test_a_repeated_seed_counts_once_the_newest_row(row):
    rows = [{**row, "seed": 0, "final_accuracy": 10.0, "created_at": "2024-01-02T00:00:00+00:00"},
            {**row, "seed": 0, "final_accuracy": 30.0, "created_at": "2024-01-03T00:00:00+00:00"},  # newest seed 0
            {**row, "seed": 0, "final_accuracy": 20.0, "created_at": "2024-01-01T00:00:00+00:00"},
            {**row, "seed": 1, "final_accuracy": 50.0}]
    summary = leaderboard.aggregate(pd.DataFrame(rows))
    assert summary.attrs["duplicates"] == 2
    only = summary.iloc[0]
    assert only["seeds"] == 2 and only["final_accuracy_mean"] == 40.0  # (30 + 50) / 2, not (10 + 30 + 20 + 50) / 4
    assert only["final_accuracy_std"] == pytest.approx(np.std([30.0, 50.0], ddof=1))
    assert "2 duplicate run(s) set aside" in leaderboard_tables.render(summary)
    runs, duplicates = leaderboard.latest_runs(pd.DataFrame(rows))
    assert duplicates == 2 and runs["final_accuracy"].tolist() == [30.0, 50.0]  # file order kept


def test_failed_runs_and_other_configs_are_apart(row):
    rows = [{**row, "final_accuracy": 60.0}, {**row, "final_accuracy": 0.0, "status": "failed"},
            {**row, "learner_config": json.dumps({"lr": 0.5}), "final_accuracy": 20.0}]
    summary = leaderboard.aggregate(pd.DataFrame(rows))
    assert sorted(summary["final_accuracy_mean"]) == [20.0, 60.0]


def test_older_rows_without_a_setting_id_stay_apart(row):
    legacy = {**row, "setting_id": float("nan"), "final_accuracy": 10.0}
    legacy_modified = {**legacy, "scenario_overrides": json.dumps({"epochs": 2}), "final_accuracy": 30.0}
    rows = [{**row, "final_accuracy": 50.0}, legacy, {**legacy, "seed": 2, "final_accuracy": 20.0}, legacy_modified]
    summary = leaderboard.aggregate(pd.DataFrame(rows))
    assert sorted(summary["final_accuracy_mean"]) == [15.0, 30.0, 50.0]
    assert summary["setting_id"].str.startswith("legacy-").sum() == 2


def test_every_protocol_has_its_figures_headline_first():
    assert list(leaderboard.figures("class-incremental"))[:2] == ["final acc", "avg inc acc"]
    assert leaderboard.figures("federated") == leaderboard.figures("core50-ni") == leaderboard.figures("task-incremental")
    assert next(iter(leaderboard.figures("fscil").items())) == ("last session", "final_seen_accuracy")
    assert next(iter(leaderboard.figures("core50-nc").items())) == ("final acc (full test set)", "final_seen_accuracy")
    assert leaderboard.figures("core50-nic")["final acc (mean over batches)"] == "final_accuracy"
    assert leaderboard.figures("episodes") == {"episode acc": "fewshot_accuracy", "± 95% CI": "fewshot_ci95"}
    for protocol in ("class-incremental", "fscil", "core50-nc", "episodes"):
        assert set(leaderboard.figures(protocol).values()) <= set(leaderboard.COLUMNS)


class BaseOnly(NMC):
    """Learns the base session's classes only: right on every base class, wrong on every novel one."""

    name = "base-only"

    def learn(self, x, y, task):
        keep = y < 6
        super().learn(x[keep], y[keep], task)


def _fscil_scenario() -> Scenario:
    """6 base classes, then 2 sessions of 2 novel classes; 3 test images per class."""
    rng = np.random.default_rng(0)

    def part(per: int) -> LabeledArrays:
        labels = np.repeat(np.arange(10), per).astype(np.int64)
        images = (labels[:, None, None, None] * 20 + rng.integers(0, 5, (len(labels), 1, 2, 2))).astype(np.uint8)
        return LabeledArrays(images, labels, tuple(f"c{c}" for c in range(10)))

    dataset = Dataset("synthetic", {"train": part(2), "test": part(3)})
    train = dataset.partition("train").labels
    sessions = [np.flatnonzero(np.isin(train, classes)) for classes in (range(6), (6, 7), (8, 9))]
    stream = stream_from_sessions(train, dataset.partition("test").labels, sessions)
    spec = ScenarioSpec(name="fscil-synthetic", dataset="synthetic", protocol="fscil", n_experiences=3, batch_size=4)
    return Scenario(spec, dataset, stream)


def test_fscil_headline_is_the_pooled_last_session():
    scenario = _fscil_scenario()
    result = runner.run(scenario, BaseOnly, progress=False)
    row = leaderboard.make_row(result, scenario, "features")
    assert result.accuracy_matrix[-1] == [100.0, 0.0, 0.0]
    assert row["final_seen_accuracy"] == 60.0  # 18 of 30 test images: the literature's "last session"
    assert row["final_accuracy"] == pytest.approx(100 / 3, abs=1e-3)  # DESIGN's mean over sessions, not the headline
    assert row["base_accuracy"] == 100.0 and row["novel_accuracy"] == 0.0
    assert row["fscil_average"] == pytest.approx((100.0 + 75.0 + 60.0) / 3, abs=1e-3)  # 18/18, 18/24, 18/30
    assert row["fscil_drop"] == pytest.approx(40.0)
    text = leaderboard_tables.render(leaderboard.aggregate(pd.DataFrame([row])))
    assert "last session" in text and "60.00" in text and "avg inc acc" not in text


def test_few_shot_rows_show_accuracy_with_their_ci_and_the_spread_over_seeds(row):
    episodic = {**row, "protocol": "episodes", "scenario": "fs", "n_experiences": 1, "accuracy_matrix": "[[70.0]]",
                "accuracy_curve": "[70.0]"}
    rows = [{**episodic, "seed": 0, "fewshot_accuracy": 70.0, "fewshot_ci95": 1.0},
            {**episodic, "seed": 1, "fewshot_accuracy": 80.0, "fewshot_ci95": 2.0}]
    text = leaderboard_tables.render(leaderboard.aggregate(pd.DataFrame(rows)))
    assert "episode acc ± 95% CI" in text and "75.00 ± 1.50" in text  # mean of the runs' own CIs
    assert f"{np.std([70.0, 80.0], ddof=1):.2f}" in text  # the spread over seeds: 7.07
    assert "final acc" not in text and "avg inc acc" not in text


def test_one_table_per_setting_sorted_by_its_headline(row):
    other = {**row, "setting_id": "feedbeef0000", "scenario_overrides": json.dumps({"epochs": 2})}
    rows = [{**row, "learner": "low", "final_accuracy": 10.0}, {**row, "learner": "high", "final_accuracy": 90.0},
            {**other, "final_accuracy": 50.0}]
    text = leaderboard_tables.render(leaderboard.aggregate(pd.DataFrame(rows)), "markdown")
    assert text.count("#### ") == 2 and "synthetic (epochs=2)" in text and "setting feedbeef0000" in text
    assert text.index("high") < text.index("low")
    html = leaderboard_tables.render(leaderboard.aggregate(pd.DataFrame(rows)), "html")
    assert html.count("<h4>") == 2 and html.count("<table") == 2


def test_labels_are_short():
    frame = pd.DataFrame({"learner": ["a", "a", "b"], "learner_config": [
        json.dumps({"lr": 0.1, "momentum": 0.9}), json.dumps({"lr": 0.5, "momentum": 0.9}), json.dumps({"k": 1})]})
    assert leaderboard_tables.config_labels(frame).tolist() == ["lr=0.1", "lr=0.5", ""]
    assert leaderboard_tables.setting_label("s", json.dumps({"mean": [0.5, 0.4], "epochs": 2})) == "s (epochs=2, mean=0.5,0.4)"
    assert leaderboard_tables.setting_label("s", "{}") == "s"
    assert len(leaderboard_tables.setting_label("s", json.dumps({"weights": "x" * 200}))) < 70


def test_unwritable_path_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ClbenchError, match="cannot write the leaderboard"):
        leaderboard.check_writable(blocker / "sub" / "leaderboard.csv")
    with pytest.raises(ClbenchError, match="is a directory"):
        leaderboard.check_writable(tmp_path)


def test_configs_are_labelled_within_their_own_table(row):
    """Another setting's config of the same learner does not lengthen this table's labels."""
    other = {**row, "setting_id": "feedbeef0000", "learner_config": json.dumps({"lr": 0.5})}
    tables = leaderboard_tables.tables(leaderboard.aggregate(pd.DataFrame([row, other])))
    assert [table["config"].tolist() for _, _, table in tables] == [["-"], ["-"]]


def test_ranks_tie_learners_not_significantly_apart_and_show_the_ci(row):
    rows = [{**row, "learner": learner, "seed": seed, "final_accuracy": acc}
            for learner, accs in (("best", (90.0, 91.0, 92.0)), ("close", (89.0, 93.0, 90.0)), ("far", (50.0, 51.0, 52.0)))
            for seed, acc in enumerate(accs)]
    summary = leaderboard.aggregate(pd.DataFrame(rows)).set_index("learner")
    assert summary.loc["best", "rank"] == summary.loc["close", "rank"] == 1 and summary.loc["best", "tied"]
    assert summary.loc["far", "rank"] == 3 and not summary.loc["far", "tied"]
    assert summary.loc["best", "final_accuracy_ci95"] == pytest.approx(4.3026527 / 3 ** 0.5, abs=1e-5)  # s = 1, n = 3
    text = leaderboard_tables.render(summary.reset_index())
    assert "=1" in text and "[88.52, 93.48]" in text  # 91 ± 2.4841
