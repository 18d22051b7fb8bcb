"""Recipes and `clbench sweep`: runs expanded from recipe files, skipped when the leaderboard has
them, retried once when they fail, resumed after an interruption, on local processes and on Ray."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from clbench import leaderboard
from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.recipes import load_jobs

TINY = '[settings]\nn_experiences = 2\nepochs = 1\n'


def _recipe(folder: Path, name: str, learner: str, seeds: str = "[0, 1]", extra: str = TINY) -> Path:
    path = folder / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'scenario = "split-digits"\nlearner = "{learner}"\nseeds = {seeds}\n{extra}')
    return path


def _sweep(recipes: Path, board: Path, *args: str) -> int:
    return main(["sweep", str(recipes), "--leaderboard", str(board), "--no-progress", *args])


def test_recipes_expand_to_runs_with_the_identity_a_row_records(tmp_path):
    _recipe(tmp_path / "r" / "digits", "nmc", "nmc")
    _recipe(tmp_path / "r" / "digits", "finetune", "finetune", "[3]", TINY + "[hyperparameters]\nlr = 0.01\n")
    jobs = load_jobs(tmp_path / "r")
    assert [(j.recipe, j.seed) for j in jobs] == [("digits/finetune", 3), ("digits/nmc", 0), ("digits/nmc", 1)]
    assert jobs[0].config["lr"] == 0.01 and jobs[0].key[0] == "split-digits" and jobs[0].key[2] == "finetune"
    assert [j.recipe for j in load_jobs(tmp_path / "r", "*/nmc")] == ["digits/nmc", "digits/nmc"]
    _recipe(tmp_path / "r" / "copy", "nmc", "nmc", "[1]")
    with pytest.raises(ClbenchError, match="recipes copy/nmc and digits/nmc define the same run"):
        load_jobs(tmp_path / "r")


def test_a_sweep_skips_what_the_leaderboard_has_unless_forced(tmp_path, leaderboard_path, capsys):
    _recipe(tmp_path / "r", "nmc", "nmc", "[0]")
    assert _sweep(tmp_path / "r", leaderboard_path) == 0
    _recipe(tmp_path / "r", "nmc", "nmc", "[0, 1]")
    capsys.readouterr()
    assert _sweep(tmp_path / "r", leaderboard_path) == 0
    out = capsys.readouterr().out
    assert "1 done, 1 skipped" in out and "nmc seed 1" in out and "nmc seed 0" not in out
    assert _sweep(tmp_path / "r", leaderboard_path, "--force") == 0
    assert sorted(leaderboard.read(leaderboard_path)["seed"]) == [0, 0, 1, 1]


FLAKY = textwrap.dedent("""
    from pathlib import Path
    from clbench.learners.nmc import NMC

    class Flaky(NMC):
        name = "flaky"
        def learn(self, x, y, task):
            marker = Path(__file__).with_name("failed-once")
            if not marker.exists():
                marker.touch()
                raise RuntimeError("a passing hiccup")
            super().learn(x, y, task)

    class Broken(NMC):
        name = "broken"
        def learn(self, x, y, task):
            raise RuntimeError("always broken")
""")


def test_a_failed_run_is_retried_once_and_the_sweep_goes_on(tmp_path, leaderboard_path, monkeypatch, capsys):
    (tmp_path / "sweep_plugins.py").write_text(FLAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    _recipe(tmp_path / "r", "flaky", "sweep_plugins:Flaky", "[0]")
    _recipe(tmp_path / "r", "broken", "sweep_plugins:Broken", "[0]")
    _recipe(tmp_path / "r", "nmc", "nmc", "[0]")
    assert _sweep(tmp_path / "r", leaderboard_path) == 1
    out = capsys.readouterr().out
    assert "FAILED flaky seed 0" in out and "a passing hiccup" in out and "ok     flaky seed 0" in out
    assert "2 done, 0 skipped" in out and "1 failed" in out
    assert "failed twice: broken seed 0: " in out and "always broken" in out
    assert sorted(leaderboard.read(leaderboard_path)["learner"]) == ["flaky", "nmc"]


STOPPABLE = textwrap.dedent("""
    from pathlib import Path
    from clbench.learners.finetune import Finetune
    class Stoppable(Finetune):
        def begin_experience(self, info):
            if info.index == 1 and self.context.seed == 1 and Path("interrupt").exists():
                raise KeyboardInterrupt
""")


def test_an_interrupted_sweep_finishes_only_what_is_missing(tmp_path, leaderboard_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "sweep_stoppable.py").write_text(STOPPABLE)
    _recipe(tmp_path / "r", "stoppable", "sweep_stoppable:Stoppable")
    (tmp_path / "interrupt").touch()
    assert _sweep(tmp_path / "r", leaderboard_path, "--cache-dir", str(tmp_path / "cache")) == 130
    assert leaderboard.read(leaderboard_path)["seed"].tolist() == [0]
    assert len(list((tmp_path / "cache" / "checkpoints").glob("*.pt"))) == 1  # seed 1 stopped after experience 0
    (tmp_path / "interrupt").unlink()
    capsys.readouterr()
    assert _sweep(tmp_path / "r", leaderboard_path, "--cache-dir", str(tmp_path / "cache")) == 0
    captured = capsys.readouterr()
    assert "1 done, 1 skipped" in captured.out and "resum" in captured.err.lower()
    assert sorted(leaderboard.read(leaderboard_path)["seed"]) == [0, 1]
    assert not list((tmp_path / "cache" / "checkpoints").glob("*.pt"))


def test_local_worker_processes_give_the_rows_of_an_in_process_sweep(tmp_path):
    _recipe(tmp_path / "r", "finetune", "finetune")
    assert _sweep(tmp_path / "r", tmp_path / "one.csv") == 0
    assert _sweep(tmp_path / "r", tmp_path / "two.csv", "--workers", "2") == 0
    one, two = (leaderboard.read(tmp_path / f).sort_values("seed") for f in ("one.csv", "two.csv"))
    assert one["accuracy_matrix"].tolist() == two["accuracy_matrix"].tolist()


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'clbench[ray]')")
def test_the_ray_backend_runs_each_run_as_a_task_and_only_the_driver_appends(tmp_path, leaderboard_path, capsys):
    _recipe(tmp_path / "r", "nmc", "nmc")
    assert _sweep(tmp_path / "r", leaderboard_path, "--backend", "ray", "--workers", "2") == 0
    out = capsys.readouterr().out
    assert "2 done, 0 skipped" in out and "0 failed" in out
    frame = leaderboard.read(leaderboard_path)
    assert sorted(frame["seed"]) == [0, 1] and set(frame["learner"]) == {"nmc"}


def test_the_ray_backend_without_ray_is_one_line_naming_the_extra(tmp_path, leaderboard_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    _recipe(tmp_path / "r", "nmc", "nmc", "[0]")
    assert _sweep(tmp_path / "r", leaderboard_path, "--backend", "ray") == 2
    assert capsys.readouterr().err.strip() == "clbench: error: the ray backend needs Ray: pip install 'clbench[ray]'"
    assert not leaderboard_path.exists()


REFERENCE = ('[reference]\nfigure = "88.53 %"\nmetric = "average_incremental_accuracy"\nsetting = "10 x 10"\n'
             'source = "a paper, Table 1"\n')


def test_a_reference_is_a_string_or_a_table_with_a_note(tmp_path):
    _recipe(tmp_path / "old", "nmc", "nmc", extra='reference = "88.53 % somewhere"\n' + TINY)
    _recipe(tmp_path / "new", "nmc", "nmc", extra=TINY + REFERENCE + 'note = "v2 of the paper"\n')
    assert len(load_jobs(tmp_path / "old")) == len(load_jobs(tmp_path / "new")) == 2


@pytest.mark.parametrize("reference, message", [
    ("reference = 3\n", "'reference' must be a string or a table"),
    (REFERENCE.replace('source = "a paper, Table 1"\n', "").replace('setting = "10 x 10"\n', ""),
     "the reference lacks setting, source (a reference names the figure, the metric, the setting and the source)"),
    (REFERENCE + 'url = "https://x"\n', "unknown reference key 'url' (keys: figure, metric, setting, source, note)"),
    (REFERENCE.replace('"88.53 %"', "88.53"), "reference 'figure' must be a non-empty string"),
    (REFERENCE.replace('"10 x 10"', '" "'), "reference 'setting' must be a non-empty string"),
    (REFERENCE.replace("average_incremental_accuracy", "fewshot_accuracy"),
     "reference metric 'fewshot_accuracy' is not a figure of the class-incremental protocol (one of: final_accuracy, "
     "average_incremental_accuracy, forgetting, backward_transfer, forward_transfer)"),
])
def test_a_bad_reference_is_one_line_naming_the_recipe(tmp_path, leaderboard_path, capsys, reference, message):
    extra = TINY + reference if reference.startswith("[") else reference + TINY
    path = _recipe(tmp_path / "r", "nmc", "nmc", extra=extra)
    assert _sweep(tmp_path / "r", leaderboard_path, "--dry-run") == 2
    assert capsys.readouterr().err == f"clbench: error: recipe {path}: {message}\n"


def _row(job, train: float, evaluate: float, n: int, seed: int | None = None, setting: str | None = None,
         config: str | None = None) -> dict:
    """A hand-built finished row for `job`'s run (or one differing in seed, setting or config)."""
    scenario, setting_id, learner, config_json, job_seed = job.key
    return {"run_id": f"run{n}", "created_at": "2024-01-01T00:00:00+00:00", "scenario": scenario,
            "scenario_fingerprint": "fp", "setting_id": setting or setting_id, "learner": learner,
            "learner_config": config or config_json, "seed": job_seed if seed is None else seed,
            "train_seconds": train, "eval_seconds": evaluate, "status": "ok"}


def _tree(*roots: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for root in roots for p in root.rglob("*")}


def _plan_lines(out: str) -> dict[tuple[str, str], list[str]]:
    """(recipe, seed) -> the cells of that run's line of the dry-run table."""
    import re

    cells = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]
    return {(c[0], c[3]): c for c in cells if len(c) >= 7 and c[3].isdigit()}


def test_a_dry_run_lists_runs_and_skips_with_data_and_estimates_and_writes_nothing(tmp_path, capsys):
    import os

    recipes = tmp_path / "r"
    _recipe(recipes, "nmc", "nmc", "[0, 1, 2]")
    _recipe(recipes, "finetune", "finetune", "[0]")
    _recipe(recipes, "joint", "joint", "[4]")
    (recipes / "episodes.toml").write_text('scenario = "miniimagenet-5way-1shot"\nlearner = "nmc"\nseeds = [0]\n')
    jobs = {(j.recipe, j.seed): j for j in load_jobs(recipes)}
    nmc, finetune = jobs[("nmc", 0)], jobs[("finetune", 0)]
    board = tmp_path / "board" / "leaderboard.csv"
    leaderboard.append_rows(board, [
        _row(nmc, 1.0, 2.0, 0),  # nmc seed 0 has its row: skipped
        _row(nmc, 4.0, 5.0, 1, seed=7),  # same setting and config, another seed: 9 s
        _row(finetune, 10.0, 0.0, 2, config='{"lr": 0.5}'),  # same setting, another config: 10 s
        # another setting (e.g. a CPU budget of a GPU recipe) estimates nothing
        _row(finetune, 15.0, 5.0, 3, seed=1, setting="another-setting"),
        _row(finetune, 30.0, 10.0, 4, seed=2, setting="another-setting"),
    ])
    data_root = Path(os.environ["CLBENCH_DATA"])
    before = _tree(tmp_path, data_root)

    assert _sweep(recipes, board, "--dry-run") == 0
    out = capsys.readouterr().out
    lines = _plan_lines(out)
    assert lines[("nmc", "0")][4:6] == ["embedded", "skip (has a row)"]
    for seed in ("1", "2"):
        assert lines[("nmc", seed)][4:] == ["embedded", "run", "6.0", "median of 2 row(s), same setting and config"]
    assert lines[("finetune", "0")][4:] == ["embedded", "run", "10.0", "median of 1 row(s), same setting, another config"]
    assert lines[("joint", "4")][4:7] == ["embedded", "run", "unknown"]
    assert lines[("episodes", "0")][1:7] == ["miniimagenet-5way-1shot", "nmc", "0", "missing", "run", "unknown"]
    assert f"6 run(s) in the recipes: 5 to run, 1 skipped (already in {board})" in out
    assert "data missing or corrupt for 1 of the 5 to run" in out
    assert "estimated train+eval time of the 3 to run with an estimate: 22.0 s (0.01 h); no estimate for 2" in out

    assert _sweep(recipes, board, "--dry-run", "--force") == 0
    assert "6 run(s) in the recipes: 6 to run, 0 skipped" in capsys.readouterr().out
    absent = tmp_path / "no-board.csv"
    assert _sweep(recipes, absent, "--dry-run") == 0
    assert "6 to run, 0 skipped" in capsys.readouterr().out
    assert _tree(tmp_path, data_root) == before and not absent.exists()  # nothing written, not even a checkpoint
