"""Every learner of the committed leaderboard reproduces exactly on the CPU: per learner, the cheapest
row (by train_seconds) on data that ships with a dependency (no download: any machine has it) that
records its arithmetic and was computed by this very clbench source, with this torch on this
processor, is rerun through `clbench reproduce` with the row's settings (threads, deterministic
algorithms, precision) and must come out with 0 difference in every cell."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from clbench import leaderboard, revision
from clbench.cli import main
from clbench.device import cpu_name
from clbench.reproduce import describe, reproduce
from clbench.scenario import load_spec
from clbench.sweep_plan import EMBEDDED

COMMITTED = Path(__file__).resolve().parents[1] / "leaderboard" / "leaderboard.csv"
RECORDED = ("torch_threads", "deterministic", "cpu", "source_hash")
"""The columns a row needs for an exact comparison (`clbench.reproduce.ARITHMETIC` beyond the old ones)."""


def cheapest_rows(frame: pd.DataFrame) -> dict[str, pd.Series | str]:
    """Per learner: its cheapest finished CPU row on embedded data that records its arithmetic and was
    computed by this clbench source, torch and processor (those a rerun here must reproduce exactly),
    or why it has none."""
    here = {"source_hash": revision.source_hash(), "torch_version": torch.__version__, "cpu": cpu_name()}
    chosen: dict[str, pd.Series | str] = {}
    for learner, rows in frame[frame["status"] == "ok"].groupby("learner"):
        rows = rows[(rows["device"] == "cpu") & rows["scenario"].map(lambda name: load_spec(name).dataset in EMBEDDED)]
        if rows.empty:
            chosen[learner] = "no CPU row on data that ships with a dependency (the others may be absent here)"
            continue
        rows = rows.dropna(subset=[c for c in RECORDED if c in rows])
        if rows.empty or any(c not in rows for c in RECORDED):
            chosen[learner] = ("no CPU row records its arithmetic (torch_threads, deterministic, cpu, source_hash): "
                               "written before clbench recorded them; regenerate the leaderboard")
            continue
        for column, value in here.items():
            if not (rows[column] == value).any():
                chosen[learner] = (f"its rows have {column} {', '.join(sorted(set(rows[column].astype(str))))}, here "
                                   f"it is {value}: they cannot be compared exactly")
                break
            rows = rows[rows[column] == value]
        else:
            chosen[learner] = rows.sort_values("train_seconds", kind="stable").iloc[0]
    return chosen


def assert_reproduces_exactly(row: pd.Series, cache_root: Path) -> None:
    check = reproduce(row, None, cache_root)
    assert check.exact and check.ok and not check.cells, "\n".join(describe(check))


COMMITTED_LEARNERS = sorted(set(leaderboard.read(COMMITTED)["learner"])) if COMMITTED.exists() else []


@pytest.mark.parametrize("learner", COMMITTED_LEARNERS)
def test_the_cheapest_committed_row_of_each_learner_reproduces_exactly(learner, tmp_path, single_thread):
    chosen = cheapest_rows(leaderboard.read(COMMITTED))[learner]
    if isinstance(chosen, str):
        pytest.skip(f"{learner}: {chosen}")
    assert_reproduces_exactly(chosen, tmp_path)


def test_the_check_on_rows_made_now(tmp_path, single_thread):
    """The same selection and check on a leaderboard written now (cheap settings), with a row of a
    learner that does not record its arithmetic and one computed by another source."""
    board = tmp_path / "lb.csv"
    for learner, threads, *settings in (("nmc", "1"), ("finetune", "2"), ("protonet", "1", "--set", "episodes=20")):
        assert main(["run", "--no-progress", "--device", "cpu", "--leaderboard", str(board), "--learner", learner,
                     "--threads", threads, "--set", "n_experiences=2", "--set", "epochs=1", *settings]) == 0
    frame = leaderboard.read(board)
    finetune = frame[frame["learner"] == "finetune"].iloc[0]
    copy = finetune.dropna().to_dict()
    leaderboard.append_rows(board, [{**copy, "learner": "old", "torch_threads": ""},
                                    {**copy, "learner": "elsewhere", "source_hash": "0" * 16},
                                    {**copy, "learner": "far", "scenario": "split-miniimagenet"}])
    chosen = cheapest_rows(leaderboard.read(board))
    assert chosen["old"].startswith("no CPU row records its arithmetic")
    assert chosen["far"].startswith("no CPU row on data that ships with a dependency")
    assert chosen["elsewhere"] == (f"its rows have source_hash {'0' * 16}, here it is {revision.source_hash()}: "
                                   "they cannot be compared exactly")
    assert chosen["finetune"]["torch_threads"] == 2
    for learner in ("nmc", "finetune", "protonet"):
        assert_reproduces_exactly(chosen[learner], tmp_path)
