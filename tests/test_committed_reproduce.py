"""Every learner of the committed leaderboard reproduces exactly on the CPU: per learner, the cheapest
row (by train_seconds) on data that ships with a dependency (no download: any machine has it) that
records its arithmetic and was computed with this torch on this processor (by this clbench source
where it has such a row), is rerun through `clbench reproduce` with the row's settings (threads,
deterministic algorithms, precision) and must come out with 0 difference in every cell: after an
edit of clbench that keeps the arithmetic too, and a failure says to regenerate the leaderboard."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from clbench import leaderboard, revision
from clbench.cli import main
from clbench.device import cpu_name
from clbench.reproduce import ARITHMETIC, describe, reproduce
from clbench.scenario import load_spec
from clbench.sweep_plan import EMBEDDED

COMMITTED = Path(__file__).resolve().parents[1] / "leaderboard" / "leaderboard.csv"
RECORDED = tuple(c for c in ARITHMETIC if c not in ("device", "torch_version"))
"""The columns a row needs for an exact comparison (`clbench.reproduce.ARITHMETIC` beyond the old ones)."""


def cheapest_rows(frame: pd.DataFrame) -> dict[str, pd.Series | str]:
    """Per learner: its cheapest finished CPU row on embedded data that records its arithmetic and was
    computed with this torch on this processor (those a rerun here must reproduce), by this clbench
    source where it has one, or why it has none."""
    here = {"torch_version": torch.__version__, "cpu": cpu_name()}
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
            same_source = rows[rows["source_hash"] == revision.source_hash()]
            rows = same_source if len(same_source) else rows
            chosen[learner] = rows.sort_values("train_seconds", kind="stable").iloc[0]
    return chosen


def assert_reproduces_exactly(row: pd.Series, cache_root: Path) -> None:
    """Every cell of the rerun equals the row's. Under another clbench source (the only other difference
    allowed) that still holds unless the source changed the learner's arithmetic: then the committed
    leaderboard must be regenerated (leaderboard/README.md)."""
    check = reproduce(row, None, cache_root)
    other_source = [d for d in check.differing if d.startswith(ARITHMETIC["source_hash"])]
    assert check.ok and not check.cells and len(other_source) == len(check.differing) and not check.unknown, \
        "\n".join([*describe(check), *(["the source changed the arithmetic: regenerate the committed leaderboard"]
                                         if other_source else [])])
    assert check.exact == (not other_source)


COMMITTED_LEARNERS = sorted(set(leaderboard.read(COMMITTED)["learner"])) if COMMITTED.exists() else []


@pytest.mark.parametrize("learner", COMMITTED_LEARNERS)
def test_the_cheapest_committed_row_of_each_learner_reproduces_exactly(learner, tmp_path, single_thread):
    chosen = cheapest_rows(leaderboard.read(COMMITTED))[learner]
    if isinstance(chosen, str):
        pytest.skip(f"{learner}: {chosen}")
    assert_reproduces_exactly(chosen, tmp_path)


def test_the_check_on_rows_made_now(tmp_path, single_thread):
    """The same selection and check on a leaderboard written now (cheap settings), with a row of a
    learner that does not record its arithmetic, one on data that may be absent, and rows computed by
    another source: chosen only where no row of this source exists, and checked cell by cell."""
    board = tmp_path / "lb.csv"
    for learner, threads, *settings in (("nmc", "1"), ("finetune", "2"), ("protonet", "1", "--set", "episodes=20")):
        assert main(["run", "--no-progress", "--device", "cpu", "--leaderboard", str(board), "--learner", learner,
                     "--threads", threads, "--set", "n_experiences=2", "--set", "epochs=1", *settings]) == 0
    frame = leaderboard.read(board)
    finetune = frame[frame["learner"] == "finetune"].iloc[0]
    copy = finetune.dropna().to_dict()
    other = {**copy, "source_hash": "0" * 16}
    leaderboard.append_rows(board, [{**copy, "learner": "old", "torch_threads": ""},
                                    {**other, "learner": "elsewhere"}, {**other, "train_seconds": 0.0},
                                    {**copy, "learner": "far", "scenario": "split-miniimagenet"}])
    chosen = cheapest_rows(leaderboard.read(board))
    assert chosen["old"].startswith("no CPU row records its arithmetic")
    assert chosen["far"].startswith("no CPU row on data that ships with a dependency")
    assert chosen["elsewhere"]["source_hash"] == "0" * 16
    assert chosen["finetune"]["source_hash"] == revision.source_hash() and chosen["finetune"]["torch_threads"] == 2
    for learner in ("nmc", "finetune", "protonet"):
        assert_reproduces_exactly(chosen[learner], tmp_path)
    assert_reproduces_exactly(pd.Series(other), tmp_path)  # another source, the same arithmetic: every cell equal
    matrix = json.loads(other["accuracy_matrix"])
    matrix[-1][0] += 1.0  # one cell off
    with pytest.raises(AssertionError, match="regenerate the committed leaderboard"):
        assert_reproduces_exactly(pd.Series({**other, "accuracy_matrix": json.dumps(matrix)}), tmp_path)
