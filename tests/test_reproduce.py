"""`clbench reproduce RUN_ID`: a row records what decides its arithmetic (torch threads, deterministic
algorithms, processor, clbench source and revision); a rerun with the row's own settings
gives the same stream, setting and accuracy matrix, exactly; a cell that differs is reported with
its points and test samples; where the arithmetic differs or is unknown, a tolerance in test samples
per cell applies."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import clbench
from clbench import leaderboard, revision
from clbench.cli import main
from clbench.device import cpu_name
from clbench.reproduce import TOLERANCE_SAMPLES, Cell, Check, compare_matrices, samples_per_column
from clbench.scenario import build_scenario, load_spec

SETTINGS = ["--set", "n_experiences=2", "--set", "epochs=1"]
ARITHMETIC_COLUMNS = ("cpu", "torch_threads", "deterministic", "code_revision", "source_hash")


def _row_of_a_run(board, *args) -> dict:
    assert main(["run", "--no-progress", "--device", "cpu", "--leaderboard", str(board), *SETTINGS, *args]) == 0
    return leaderboard.read(board).iloc[-1].to_dict()


def _reproduce(board, run_id, capsys, *args) -> tuple[int, list[str]]:
    capsys.readouterr()
    status = main(["reproduce", run_id, "--leaderboard", str(board), *args])
    return status, capsys.readouterr().out.rstrip().splitlines()


def _append_copy(board, row: dict, **changes) -> str:
    """Append a copy of `row` with `changes` under a new run_id; returns the run_id."""
    copy = {**{c: row[c] for c in leaderboard.COLUMNS}, "run_id": "f0f0f0f0f0f0", **changes}
    leaderboard.append_rows(board, [{k: ("" if v != v else v) for k, v in copy.items()}])  # NaN: empty cell
    return copy["run_id"]


def _one_sample_off(row: dict, samples: int, cell=(1, 0)) -> str:
    """The row's matrix with cell (i, j) lowered by `samples` test samples of experience j."""
    sizes = samples_per_column(build_scenario(load_spec("split-digits").with_overrides({"n_experiences": 2})))
    matrix = json.loads(row["accuracy_matrix"])
    i, j = cell
    matrix[i][j] = round(matrix[i][j] - samples * 100.0 / sizes[j], 4)
    return json.dumps(matrix)


def test_a_row_records_the_threads_the_deterministic_flag_the_cpu_and_the_source(leaderboard_path):
    row = _row_of_a_run(leaderboard_path, "--learner", "nmc", "--threads", "2", "--deterministic")
    assert row["torch_threads"] == 2 and row["deterministic"] == "true"
    assert row["cpu"] == cpu_name() and cpu_name().endswith(f" ({torch.backends.cpu.get_cpu_capability()})")
    assert row["source_hash"] == revision.source_hash() and re.fullmatch(r"[0-9a-f]{16}", row["source_hash"])
    in_git = (Path(clbench.__file__).resolve().parents[1] / ".git").exists()  # a checkout: the commit is known
    assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?" if in_git else r"([0-9a-f]{12}(-dirty)?)?",
                        str(row["code_revision"]) if row["code_revision"] == row["code_revision"] else "")
    row = _row_of_a_run(leaderboard_path, "--learner", "nmc", "--threads", "1")  # the same process: both set again
    assert row["torch_threads"] == 1 and row["deterministic"] == "false"


def test_a_row_reproduces_exactly_with_its_own_thread_count(leaderboard_path, capsys):
    row = _row_of_a_run(leaderboard_path, "--learner", "finetune", "--seed", "3", "--threads", "2")
    before = leaderboard_path.read_bytes()
    torch.set_num_threads(1)  # what the rerun uses is the row's, not the process's
    status, out = _reproduce(leaderboard_path, row["run_id"][:6], capsys)
    assert status == 0, out
    assert out[0] == f"run {row['run_id']}: finetune on split-digits, seed 3"
    assert out[1].startswith(f"  rerun with cpu ({cpu_name()}), torch {torch.__version__}, "
                             f"2 torch thread(s), deterministic algorithms off, precision fp32, clbench source "
                             f"{revision.source_hash()}")
    assert out[4:] == ["  same      arithmetic          every recorded setting that decides it is the row's",
                       "  same      accuracy matrix     every cell equal, compared exactly",
                       "reproduced exactly"]
    assert leaderboard_path.read_bytes() == before  # nothing appended

    status, out = _reproduce(leaderboard_path, row["run_id"], capsys, "--threads", "1")
    assert out[4] == "  DIFFERENT arithmetic          torch threads 2 -> 1"
    assert f"compared within {TOLERANCE_SAMPLES} test samples per cell" in out[5]


def test_a_cell_one_sample_off_is_named_and_is_not_reproduced_where_the_arithmetic_is_the_rows(leaderboard_path,
                                                                                               capsys):
    row = _row_of_a_run(leaderboard_path, "--learner", "nmc", "--threads", "1")
    forged = _append_copy(leaderboard_path, row, accuracy_matrix=_one_sample_off(row, 1))
    status, out = _reproduce(leaderboard_path, forged, capsys)
    old, new = json.loads(_one_sample_off(row, 1))[1][0], json.loads(row["accuracy_matrix"])[1][0]
    assert status == 1
    assert out[2].startswith("  same      stream fingerprint") and out[3].startswith("  same      setting")
    assert out[5].startswith("  DIFFERENT accuracy matrix     1 cell(s) differ, the largest by ")
    assert out[5].endswith(" (1 of 223 test samples), compared exactly")
    assert out[6] == f"    A[1][0]  {old:.4f} -> {new:.4f}  ({new - old:+.4f} points, 1 of 223 test samples)"
    assert out[7:] == ["NOT reproduced"]


def test_a_row_written_before_the_arithmetic_was_recorded_is_compared_within_the_tolerance(leaderboard_path, capsys):
    row = _row_of_a_run(leaderboard_path, "--learner", "nmc")
    legacy = dict.fromkeys(ARITHMETIC_COLUMNS, "")
    within = _append_copy(leaderboard_path, row, **legacy, accuracy_matrix=_one_sample_off(row, TOLERANCE_SAMPLES))
    status, out = _reproduce(leaderboard_path, within, capsys)
    assert status == 0, out
    assert out[4] == ("  same      arithmetic          every recorded setting that decides it is the row's; the row does "
                      "not record: CPU, clbench source, torch threads, deterministic algorithms "
                      "(written before clbench recorded them)")
    assert out[5].endswith(f"({TOLERANCE_SAMPLES} of 223 test samples), compared within {TOLERANCE_SAMPLES} test "
                           "samples per cell (the arithmetic is not known to be the row's)")
    assert out[-1] == f"reproduced within {TOLERANCE_SAMPLES} test samples per cell"

    beyond = _append_copy(leaderboard_path, row, **legacy, run_id="e0e0e0e0e0e0",
                          accuracy_matrix=_one_sample_off(row, TOLERANCE_SAMPLES + 1, cell=(0, 0)))
    status, out = _reproduce(leaderboard_path, beyond, capsys)
    assert status == 1 and out[6].startswith("    A[0][0]") and out[-1] == "NOT reproduced"


def test_cells_are_compared_one_by_one_in_points_and_test_samples():
    same_shape, cells = compare_matrices([[100.0, 0.0], [50.0, 25.0]], [[100.0, 0.0], [48.8764, 25.0]], [89, 40])
    assert same_shape and cells == (Cell(1, 0, 50.0, 48.8764, 89),)
    assert cells[0].points == pytest.approx(-1.1236) and cells[0].samples == pytest.approx(1.0, abs=1e-4)
    assert compare_matrices([[50.0]], [[50.0, 1.0]], [1, 1]) == (False, ())
    assert compare_matrices([[float("nan")]], [[float("nan")]], [0]) == (True, ())


def test_samples_per_column_are_the_experiences_test_sets_or_the_episodes_queries():
    experiences = SimpleNamespace(stream=SimpleNamespace(episodes=(), experiences=[
        SimpleNamespace(test_indices=range(89)), SimpleNamespace(test_indices=range(90))]))
    assert samples_per_column(experiences) == [89, 90]
    episodes = SimpleNamespace(stream=SimpleNamespace(episodes=[SimpleNamespace(query=range(75))] * 600))
    assert samples_per_column(episodes) == [600 * 75]


@pytest.mark.parametrize(("device", "deterministic", "differing", "unknown", "exact"), [
    ("cpu", "false", (), (), True),
    ("NVIDIA H100", "true", (), (), True),
    ("NVIDIA H100", "false", (), (), False),  # GPU kernels without deterministic algorithms
    ("cpu", "false", ("torch threads 2 -> 1",), (), False),
    ("cpu", "false", (), ("torch threads",), False),
])
def test_exactly_only_where_everything_deciding_the_arithmetic_is_the_rows(device, deterministic, differing, unknown,
                                                                          exact):
    check = Check({}, {"device": device, "deterministic": deterministic}, True, True, True,
                  (Cell(0, 0, 50.0, 51.0, 100),), differing, unknown)
    assert check.exact is exact and check.tolerance == (0 if exact else TOLERANCE_SAMPLES)
    assert check.ok is (not exact)  # one sample off: within the tolerance, not exact


def test_a_sweep_worker_records_the_threads_it_ran_with(tmp_path):
    from clbench.recipes import load_jobs
    from clbench.sweep import Worker, execute

    recipe = tmp_path / "nmc.toml"
    recipe.write_text('scenario = "split-digits"\nlearner = "nmc"\nseeds = [0]\n[settings]\nn_experiences = 2\n')
    for threads in (2, 1):
        outcome = execute(load_jobs(recipe, None)[0], Worker(device="cpu", cache_root=str(tmp_path), threads=threads))
        assert outcome.row["torch_threads"] == threads


def test_a_runs_default_thread_count_is_torchs_own_not_what_an_earlier_run_left():
    from clbench.device import DEFAULT_THREADS, cpu_threads

    torch.set_num_threads(DEFAULT_THREADS + 1)  # an earlier run in this process (a sweep's) set another count
    assert cpu_threads(None, (3, 84, 84), torch.device("cpu")) == DEFAULT_THREADS
    assert cpu_threads(None, (1, 8, 8), torch.device("cpu")) == 1 and cpu_threads(3, (1, 8, 8), torch.device("cpu")) == 3
