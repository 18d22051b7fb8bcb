"""The rendered tables: their fixed order, ranks and Holm p-values against the best, CIs clipped to
[0, 100], the chance level, groups too small to test, unique config labels, and no training times."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from clbench import leaderboard, leaderboard_tables
from clbench.scenario import available_scenarios


def _row(**changes) -> dict:
    row = dict(scenario="split-digits", scenario_fingerprint="fp", setting_id="set", scenario_overrides="{}",
               protocol="class-incremental", learner="a", learner_config="{}", seed=0, status="ok",
               created_at="2024-01-01T00:00:00+00:00", final_accuracy=50.0, chance_accuracy=10.0, train_seconds=3.0)
    return {**row, **changes}


def _seeds(learner: str, values: tuple[float, ...], **changes) -> list[dict]:
    return [_row(learner=learner, seed=seed, final_accuracy=value, **changes) for seed, value in enumerate(values)]


def _tables(rows: list[dict]) -> list[tuple[str, pd.DataFrame]]:
    return [(title, table) for _, title, table in leaderboard_tables.tables(leaderboard.aggregate(pd.DataFrame(rows)))]


def test_the_ci_shown_is_clipped_to_percentages():
    # 98, 100, 100: mean 99.33, s = 1.1547, half-width 4.3026527 * 1.1547 / sqrt 3 = 2.8685 -> [96.46, 102.20]
    [(_, table)] = _tables(_seeds("a", (98.0, 100.0, 100.0)) + _seeds("b", (1.0, 0.0, 2.0)))
    assert table["95% CI"].tolist() == ["[96.46, 100.00]", "[0.00, 3.48]"]  # b: 1 ± 2.4841, cut at 0


def test_tables_follow_the_fixed_scenario_order():
    rows = [_row(scenario=name, setting_id=name) for name in
            ("miniimagenet-fscil", "split-digits-online", "aaa-mine", "split-digits-til", "split-digits")]
    rows.append(_row(setting_id="changed", scenario_overrides=json.dumps({"epochs": 2})))
    titles = [title for title, _ in _tables(rows)]
    assert [title.split(" · ")[0] for title in titles] == [
        "split-digits", "split-digits (epochs=2)", "split-digits-til", "split-digits-online", "aaa-mine",
        "miniimagenet-fscil"]  # the shipped spec unchanged before its modified settings
    assert set(leaderboard_tables.FIRST_SCENARIOS) <= set(available_scenarios())  # no typo in the fixed order


def test_the_title_gives_the_chance_level_and_rows_at_chance_are_marked():
    rows = (_seeds("near", (1.29 + 0.1, 1.29 - 0.1), chance_accuracy=1.0)
            + _seeds("also", (0.8, 1.0), chance_accuracy=1.0))
    [(title, table)] = _tables(rows)
    assert "chance 1.00 % (every row at chance)" in title
    assert table["vs chance"].tolist() == ["at chance", "at chance"]
    [(title, table)] = _tables(_seeds("good", (60.0, 61.0)) + _seeds("bad", (9.0, 11.0)) + _seeds("worse", (2.0, 3.0)))
    assert "chance 10.00 % ·" in title and "every row" not in title
    assert table["vs chance"].tolist() == ["above", "at chance", "below"]


def test_a_chance_level_missing_from_old_rows_is_derived_from_the_spec():
    rows = [_row(chance_accuracy=float("nan")), _row(scenario="split-digits-til", setting_id="til",
                                                      chance_accuracy=float("nan"), protocol="task-incremental"),
            _row(scenario="mine", setting_id="mine", chance_accuracy=float("nan"))]
    summary = leaderboard.aggregate(pd.DataFrame(rows)).set_index("scenario")
    assert summary.loc["split-digits", "chance_accuracy"] == 10.0  # 10 digits
    assert summary.loc["split-digits-til", "chance_accuracy"] == 50.0  # 2 classes per task
    assert pd.isna(summary.loc["mine", "chance_accuracy"])
    assert "chance unknown" in [t for t, _ in _tables(rows)][-1]


def test_each_row_shows_its_holm_p_against_the_best_and_the_test():
    rows = (_seeds("best", (90.0, 91.0, 92.0)) + _seeds("apart", (85.0, 86.0, 87.5))
            + _seeds("noisy", (70.0, 95.0, 80.0)) + [_row(learner="single", final_accuracy=89.0)])
    [(title, table)] = _tables(rows)
    shown = dict(zip(table["learner"], zip(table["rank"], table["p vs best (Holm)"])))
    # raw p 0.001187 (apart) and 0.316870 (noisy), Holm over the 2 tested: 0.002374 and 0.316870
    # untested and significantly-below rows keep their rank by mean (89 is 2nd, 86.17 3rd), listed by mean
    assert shown == {"best": ("=1", "best"), "noisy": ("=1", "0.317 (paired t)"), "single": ("2", "untested (1 seed)"),
                     "apart": ("3", "0.002 (paired t)")}
    assert table["learner"].tolist() == ["best", "single", "apart", "noisy"]
    assert "no significance test" not in title


def test_a_group_whose_best_has_one_seed_claims_no_tie():
    rows = [_row(learner="joint", final_accuracy=100.0), _row(learner="finetune", final_accuracy=56.21),
            _row(learner="other", final_accuracy=80.0)]
    [(title, table)] = _tables(rows)
    assert title.endswith("1 seed: no significance test")
    assert table["rank"].tolist() == ["1", "2", "3"] and not any("=" in rank for rank in table["rank"])
    assert table["p vs best (Holm)"].tolist() == ["best", "untested (1 seed)", "untested (1 seed)"]


def test_one_seed_few_shot_rows_are_tested_on_their_episodes():
    episodic = dict(protocol="episodes", scenario="fs", chance_accuracy=20.0)
    rows = [_row(learner="a", fewshot_accuracy=60.0, fewshot_ci95=1.96, **episodic),
            _row(learner="b", fewshot_accuracy=58.0, fewshot_ci95=1.96, **episodic),
            _row(learner="c", fewshot_accuracy=21.0, fewshot_ci95=1.96, **episodic)]
    [(title, table)] = _tables(rows)
    assert table["rank"].tolist() == ["=1", "=1", "3"] and "no significance test" not in title
    assert table["p vs best (Holm)"].tolist()[1] == "0.157 (z on episodes)"  # z = 2 / sqrt 2
    assert table["vs chance"].tolist() == ["above", "above", "at chance"]  # 21 ± 1.96 holds 20


def test_config_labels_are_unique_when_configs_differ_past_the_limit():
    """Cut at 40 characters, both read `generator=mlp, parametrization=standard…` before."""
    common = {"generator": "mlp", "parametrization": "standard_with_a_long_name"}
    configs = [json.dumps({**common, "beta": 0.01}), json.dumps({**common, "beta": 0.0}),
               json.dumps({"generator": "rnn", "parametrization": "mip", "beta": 0.01})]
    frame = pd.DataFrame({"learner": ["hnet"] * 3, "learner_config": configs})
    labels = leaderboard_tables.config_labels(frame).tolist()
    assert labels == ["beta=0.01, gener.=mlp, param.=standard_with_a_long_name",
                      "beta=0.0, gener.=mlp, param.=standard_with_a_long_name", "beta=0.01, gener.=rnn, param.=mip"]
    short = pd.DataFrame({"learner": ["x", "x"], "learner_config": [json.dumps({"k": [1, 2]}), json.dumps({"k": "1,2"})]})
    first, second = leaderboard_tables.config_labels(short)
    assert first != second and first.startswith("k=1,2 #") and second.startswith("k=1,2 #")  # same text: hashed


def test_training_time_is_left_out_of_the_tables():
    [(_, table)] = _tables(_seeds("a", (50.0, 60.0)))
    assert "train s" not in table.columns and not any("3.0" in cell for cell in table.astype(str).values.ravel())
    assert "training times are left out" in leaderboard_tables.render(leaderboard.aggregate(pd.DataFrame(_seeds("a", (1.0,)))))


@pytest.mark.parametrize("fmt", ["text", "markdown", "html"])
def test_the_notes_say_which_test_and_correction(fmt):
    text = leaderboard_tables.render(leaderboard.aggregate(pd.DataFrame(_seeds("a", (50.0, 60.0)))), fmt)
    for words in ("paired t-test", "Welch", "Holm-corrected", "alpha 0.05", "z-test", "clipped to [0, 100]"):
        assert words in text
