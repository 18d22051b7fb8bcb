"""class_order = "seeded": each run's stream is cut in the order its own seed draws
(`RandomState(seed).permutation`), through `clbench run`, `clbench sweep` and `clbench reproduce`;
its rows (one fingerprint per seed) are aggregated by their setting, while fixed orders behave as
before and two fixed streams are never merged."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from clbench import leaderboard, runner
from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.learner import get_learner
from clbench.scenario import build_scenario, load_spec
from clbench.setting import setting_identity

SEEDED = load_spec("split-digits").with_overrides({"class_order": "seeded"})
SPLIT_DIGITS_FINGERPRINT = "0d459c438ea72072"
"""split-digits' stream in its natural order, as the committed leaderboard's rows record it."""


def test_two_seeds_draw_two_orders_and_one_seed_the_same_twice():
    zero, one, again = (build_scenario(SEEDED, seed=s) for s in (0, 1, 0))
    assert zero.stream.class_order == tuple(np.random.RandomState(0).permutation(10))
    assert one.stream.class_order == tuple(np.random.RandomState(1).permutation(10)) != zero.stream.class_order
    assert zero.fingerprint != one.fingerprint and again.fingerprint == zero.fingerprint
    assert zero.for_seed(1).fingerprint == one.fingerprint and zero.for_seed(0) is zero
    assert setting_identity(zero.spec) == setting_identity(one.spec) == setting_identity(SEEDED)
    assert setting_identity(SEEDED).startswith("seeded-")


def test_fixed_orders_are_unchanged():
    spec = load_spec("split-digits")
    scenario = build_scenario(spec)
    assert scenario.fingerprint == SPLIT_DIGITS_FINGERPRINT and scenario.for_seed(7) is scenario
    assert scenario.order_seed is None and not setting_identity(spec).startswith("seeded")
    assert build_scenario(spec, seed=3).fingerprint == SPLIT_DIGITS_FINGERPRINT  # the seed does not move it


def test_a_seeded_order_needs_a_seed_and_a_protocol_that_has_an_order():
    with pytest.raises(ClbenchError, match="drawn from the run's seed"):
        build_scenario(SEEDED)
    with pytest.raises(ClbenchError, match="no class order to draw"):
        build_scenario(SEEDED.with_overrides({"protocol": "fscil"}), seed=0)


def test_a_run_on_another_seed_s_order_makes_no_row():
    zero = build_scenario(SEEDED.with_overrides({"n_experiences": 2}), seed=0)
    result = runner.run(zero, get_learner("nmc"), seed=1, progress=False)
    with pytest.raises(ClbenchError, match="class order of seed 0"):
        leaderboard.make_row(result, zero, "features")


def _seeded_rows(fingerprints: list[str], setting: str = "seeded-0123456789ab") -> list[dict]:
    return [dict(scenario="split-digits", scenario_fingerprint=fp, setting_id=setting, scenario_overrides="{}",
                 protocol="class-incremental", learner="nmc", learner_config="{}", seed=seed, status="ok",
                 created_at="2024-01-01T00:00:00+00:00", final_accuracy=60.0 + seed) for seed, fp in enumerate(fingerprints)]


def test_seeded_rows_of_one_setting_are_one_group():
    summary = leaderboard.aggregate(pd.DataFrame(_seeded_rows(["fp0", "fp1", "fp2"])))
    assert len(summary) == 1 and summary["seeds"].iloc[0] == 3 and summary["final_accuracy_mean"].iloc[0] == 61.0
    assert summary["stream"].iloc[0] == leaderboard.SEEDED_STREAM


def test_two_fixed_streams_of_one_setting_stay_apart():
    summary = leaderboard.aggregate(pd.DataFrame(_seeded_rows(["fp0", "fp1", "fp1"], setting="0123456789ab")))
    assert sorted(summary["seeds"]) == [1, 2] and sorted(summary["stream"]) == ["fp0", "fp1"]


def test_run_sweep_and_reproduce_cut_each_seed_s_own_stream(tmp_path):
    board = tmp_path / "board.csv"
    common = ["--leaderboard", str(board), "--data-root", str(tmp_path / "data")]
    assert main(["run", "--no-progress", *common, "--learner", "nmc", "--seed", "0,1", "--set",
                 "class_order=seeded", "--set", "n_experiences=2"]) == 0
    recipes = tmp_path / "recipes" / "split-digits"
    recipes.mkdir(parents=True)
    (recipes / "nmc.toml").write_text('scenario = "split-digits"\nlearner = "nmc"\nseeds = [2]\n'
                                      '[settings]\nclass_order = "seeded"\nn_experiences = 2\n')
    assert main(["sweep", str(tmp_path / "recipes"), "--no-progress", *common]) == 0
    rows = leaderboard.read(board)
    expected = {seed: build_scenario(SEEDED.with_overrides({"n_experiences": 2}), seed=seed).fingerprint
                for seed in (0, 1, 2)}
    assert dict(zip(rows["seed"], rows["scenario_fingerprint"])) == expected and len(set(expected.values())) == 3
    assert rows["setting_id"].nunique() == 1 and rows["setting_id"].iloc[0].startswith("seeded-")
    summary = leaderboard.aggregate(rows)
    assert len(summary) == 1 and summary["seeds"].iloc[0] == 3
    assert main(["reproduce", str(rows["run_id"].iloc[1]), *common]) == 0  # 0: fingerprint, setting, matrix the same
