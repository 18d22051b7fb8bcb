"""`clbench reproduce RUN_ID`: a row re-run from what it records gives the same stream, setting and
accuracy matrix (exactly, on the CPU with the same versions); a changed row is reported as such."""

from __future__ import annotations

import json

from clbench import leaderboard
from clbench.cli import main


def _row_of_a_run(board, *args) -> dict:
    assert main(["run", "--no-progress", "--device", "cpu", "--leaderboard", str(board), "--set", "n_experiences=2",
                 "--set", "epochs=1", *args]) == 0
    return leaderboard.read(board).iloc[-1].to_dict()


def test_a_row_reproduces_exactly_on_the_cpu(leaderboard_path, capsys):
    row = _row_of_a_run(leaderboard_path, "--learner", "finetune", "--seed", "3")
    before = leaderboard_path.read_bytes()
    capsys.readouterr()
    assert main(["reproduce", row["run_id"][:6], "--leaderboard", str(leaderboard_path)]) == 0
    out = capsys.readouterr().out
    assert f"run {row['run_id']}: finetune on split-digits, seed 3" in out
    assert "largest difference 0.0000 points, compared exactly" in out and out.rstrip().endswith("reproduced")
    assert leaderboard_path.read_bytes() == before  # nothing appended


def test_a_row_whose_matrix_differs_is_not_reproduced(leaderboard_path, capsys):
    row = _row_of_a_run(leaderboard_path, "--learner", "nmc")
    matrix = json.loads(row["accuracy_matrix"])
    matrix[1][0] -= 2.5
    forged = {**{c: row[c] for c in leaderboard.COLUMNS}, "run_id": "f0f0f0f0f0f0", "accuracy_matrix": json.dumps(matrix)}
    leaderboard.append_rows(leaderboard_path, [forged])
    capsys.readouterr()
    assert main(["reproduce", "f0f0f0f0f0f0", "--leaderboard", str(leaderboard_path)]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT accuracy matrix     largest difference 2.5000 points" in out
    assert "same      stream fingerprint" in out and "same      setting" in out
    assert out.rstrip().endswith("NOT reproduced")
