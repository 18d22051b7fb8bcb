"""The leaderboard file on disk: whole-row appends under a lock that leaves nothing behind, torn
and malformed lines repaired, set aside or skipped with their line number, foreign files refused."""

from __future__ import annotations

import csv
import fcntl
import json
import multiprocessing
import os
import re
import time
import warnings

import pytest

from clbench import leaderboard_file as lf
from clbench.cli import main
from clbench.errors import ClbenchError


def _row(**changes) -> dict:
    row = dict.fromkeys(lf.COLUMNS, "")
    row.update(scenario="s", scenario_fingerprint="fp", setting_id="set", scenario_overrides="{}", learner="nmc",
               learner_config=json.dumps({"lr": 0.1}), seed=0, final_accuracy=50.0, accuracy_matrix="[[50.0]]",
               accuracy_curve="[50.0]", untrained_accuracy="null", client_accuracy="null", status="ok")
    return {**row, **changes}


def _quiet_read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return lf.read(path)


def _skipped(path) -> tuple:
    before = path.read_bytes()
    with pytest.warns(UserWarning, match="skipped") as caught:
        frame = lf.read(path)
    assert path.read_bytes() == before  # reading changes nothing
    return frame, str(caught[0].message)


def test_appends_leave_nothing_beside_the_file(leaderboard_path):
    lf.append_rows(leaderboard_path, [_row(seed=0)])
    lf.append_rows(leaderboard_path, [_row(seed=1), _row(seed=2)])
    assert _quiet_read(leaderboard_path)["seed"].tolist() == [0, 1, 2]
    assert [p.name for p in leaderboard_path.parent.iterdir()] == ["leaderboard.csv"]  # no .lock, no temporaries


def _append_many(args):
    path, n, worker = args
    for i in range(n):
        lf.append_rows(path, [_row(seed=i, learner=f"w{worker}", accuracy_matrix=json.dumps([[float(i)] * 10] * 10))])


def test_eight_processes_appending_200_rows_each_give_1600_intact_rows(leaderboard_path):
    """Starting from an older file: the first append replaces it by a rewritten one (a new inode)
    while the others wait for the lock on the old one."""
    leaderboard_path.parent.mkdir(parents=True)
    leaderboard_path.write_text("seed,learner,scenario,scenario_fingerprint\n-1,old,s,fp\n")
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        pool.map(_append_many, [(leaderboard_path, 200, w) for w in range(8)])
    frame = _quiet_read(leaderboard_path)
    assert len(frame) == 1601 and sorted(frame["seed"]) == [-1, *sorted(list(range(200)) * 8)]
    assert all(sorted(group["seed"]) == list(range(200)) for _, group in frame[frame["seed"] >= 0].groupby("learner"))
    assert all(json.loads(m) == [[float(s)] * 10] * 10 for s, m in zip(frame["seed"], frame["accuracy_matrix"]) if s >= 0)
    assert [p.name for p in leaderboard_path.parent.iterdir()] == ["leaderboard.csv"]


def _append_when_ready(path, ready, n):
    ready.set()
    _append_many((path, n, 0))


def test_appends_waiting_while_the_file_is_replaced_land_in_the_new_file(leaderboard_path):
    """An append that waited for the lock on a file that another process replaced meanwhile (a
    rewrite renames a new file onto the path) must append to the new file, not the old inode."""
    leaderboard_path.parent.mkdir(parents=True)
    lf.append_rows(leaderboard_path, [_row(seed=-1)])
    context = multiprocessing.get_context("spawn")
    with open(leaderboard_path, "rb") as old:
        fcntl.flock(old, fcntl.LOCK_EX)  # as a rewriting append holds it
        events = [context.Event() for _ in range(4)]
        workers = [context.Process(target=_append_when_ready, args=(leaderboard_path, e, 5)) for e in events]
        for worker in workers:
            worker.start()
        assert all(e.wait(120) for e in events)
        time.sleep(0.5)  # let them reach the lock (if one is later, it simply opens the new file)
        replacement = leaderboard_path.with_name("replacement.csv")
        replacement.write_bytes(leaderboard_path.read_bytes())
        os.replace(replacement, leaderboard_path)
    for worker in workers:
        worker.join(120)
    assert sorted(_quiet_read(leaderboard_path)["seed"]) == [-1, *sorted(list(range(5)) * 4)]


def test_a_torn_last_line_is_set_aside_on_the_next_append(leaderboard_path):
    lf.append_rows(leaderboard_path, [_row(seed=0), _row(seed=1)])
    whole = leaderboard_path.read_bytes()
    torn = whole[: len(whole) - 25]  # a write cut short inside the last row (kill -9, full disk)
    leaderboard_path.write_bytes(torn)
    frame, message = _skipped(leaderboard_path)
    assert frame["seed"].tolist() == [0] and "line 3" in message
    with pytest.warns(UserWarning, match="incomplete last line"):
        lf.append_rows(leaderboard_path, [_row(seed=2)])
    assert _quiet_read(leaderboard_path)["seed"].tolist() == [0, 2]
    assert lf.set_aside_path(leaderboard_path).read_bytes() == torn[torn.rfind(b"\n") + 1:] + b"\n"


def test_a_whole_last_row_without_its_newline_is_kept(leaderboard_path):
    lf.append_rows(leaderboard_path, [_row(seed=0)])
    leaderboard_path.write_bytes(leaderboard_path.read_bytes().rstrip(b"\n"))
    lf.append_rows(leaderboard_path, [_row(seed=1)])
    assert _quiet_read(leaderboard_path)["seed"].tolist() == [0, 1]
    assert not lf.set_aside_path(leaderboard_path).exists()


@pytest.mark.parametrize("change, problem", [
    ({"final_accuracy": "high"}, "final_accuracy holds 'high', not a number"),
    ({"seed": "zero"}, "seed holds"),
    ({"learner_config": "{lr: 0.1"}, "learner_config is not a JSON dict"),
    ({"accuracy_curve": "[50.0"}, "accuracy_curve is not a JSON list"),
    ({"accuracy_matrix": "oops"}, "accuracy_matrix is not a JSON list"),
    ({"scenario_overrides": "[1]"}, "scenario_overrides is not a JSON dict"),
])
def test_a_malformed_cell_skips_its_line_with_its_number(leaderboard_path, change, problem):
    lf.append_rows(leaderboard_path, [_row(seed=0)])
    with open(leaderboard_path, "a", newline="") as f:  # written by hand: append_rows refuses such a row
        csv.DictWriter(f, lf.COLUMNS, lineterminator="\n").writerow(_row(**{"seed": 1, **change}))
    lf.append_rows(leaderboard_path, [_row(seed=2)])
    frame, message = _skipped(leaderboard_path)
    assert frame["seed"].tolist() == [0, 2]
    assert f"line 3: {problem}" in message and "\n" not in message


@pytest.mark.parametrize("change, problem", [
    ({"final_accuracy": "high"}, "final_accuracy holds 'high', not a number"),
    ({"accuracy_matrix": "oops"}, "accuracy_matrix is not a JSON list"),
    ({"learner": ""}, "learner is empty"),
    ({"colour": "red"}, "unknown column(s) 'colour'"),
])
def test_a_malformed_row_is_refused_on_append_and_nothing_is_written(leaderboard_path, change, problem):
    lf.append_rows(leaderboard_path, [_row(seed=0)])
    before = leaderboard_path.read_bytes()
    with pytest.raises(ClbenchError, match=re.escape(problem)):
        lf.append_rows(leaderboard_path, [_row(seed=1), _row(**{"seed": 2, **change})])
    assert leaderboard_path.read_bytes() == before


@pytest.mark.parametrize("value", ["=1+2", "+cmd", "-2+3", "@SUM(A1)", "\tx", "'quoted", "''=x", "plain"])
def test_formula_cells_read_back_as_written(leaderboard_path, value):
    lf.append_rows(leaderboard_path, [_row(learner=value, device=value)])
    raw = leaderboard_path.read_bytes().decode().splitlines()[1]
    assert ("'" + value in raw) == (value != "plain")  # neutralised on disk ...
    back = _quiet_read(leaderboard_path).iloc[0]
    assert back["learner"] == value and back["device"] == value  # ... and the original value in clbench


@pytest.mark.parametrize("line", [b"just some words", b"a,b,\"unclosed", b"\xff\xfe,not utf-8"])
def test_a_broken_line_is_skipped(leaderboard_path, line):
    lf.append_rows(leaderboard_path, [_row(seed=0)])
    with open(leaderboard_path, "ab") as f:
        f.write(line + b"\n")
    lf.append_rows(leaderboard_path, [_row(seed=1)])
    frame, message = _skipped(leaderboard_path)
    assert frame["seed"].tolist() == [0, 1] and "line 3" in message


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\n\n", "is empty"),
    (b"name,score\nalice,3\n", "not a clbench leaderboard \\(its header lacks scenario"),
    (b"\xff\xfe\x00garbage\x81\n", "not a clbench leaderboard \\(it is not UTF-8 CSV text\\)"),
])
def test_an_unreadable_file_is_one_line(leaderboard_path, content, message):
    leaderboard_path.parent.mkdir(parents=True)
    leaderboard_path.write_bytes(content)
    with pytest.raises(ClbenchError, match=message):
        lf.read(leaderboard_path)
    assert leaderboard_path.read_bytes() == content


@pytest.mark.parametrize("content", [b"name,score\nalice,3\n", b"\xff\xfe\x00garbage\x81\n", b"scenario,learner\n"])
def test_a_file_that_is_not_a_leaderboard_is_never_appended_to(leaderboard_path, content):
    leaderboard_path.parent.mkdir(parents=True)
    leaderboard_path.write_bytes(content)
    with pytest.raises(ClbenchError, match="not a clbench leaderboard"):
        lf.append_rows(leaderboard_path, [_row()])
    assert leaderboard_path.read_bytes() == content
    assert [p.name for p in leaderboard_path.parent.iterdir()] == ["leaderboard.csv"]


def test_an_empty_file_becomes_a_leaderboard(leaderboard_path):
    leaderboard_path.parent.mkdir(parents=True)
    leaderboard_path.write_bytes(b"\n")
    lf.append_rows(leaderboard_path, [_row()])
    assert len(_quiet_read(leaderboard_path)) == 1


def test_an_older_file_is_rewritten_once_to_the_current_columns(leaderboard_path):
    leaderboard_path.parent.mkdir(parents=True)
    leaderboard_path.write_bytes(b"seed,learner,scenario,scenario_fingerprint,final_accuracy,legacy_note\r\n"
                                 b"0,old,s,f,12.5,kept\r\n"
                                 b"1,old,s,f,-3.5,negative\r\n"
                                 b"2,old,s,f,not a number,bad\r\n"
                                 b"3,old,s,f,1")  # torn
    with pytest.warns(UserWarning, match="2 unreadable line"):
        lf.append_rows(leaderboard_path, [_row(learner="new")])
    inode = leaderboard_path.stat().st_ino
    lf.append_rows(leaderboard_path, [_row(learner="newer")])
    assert leaderboard_path.stat().st_ino == inode  # the second append did not rewrite again
    frame = _quiet_read(leaderboard_path)
    assert list(frame.columns) == [*lf.COLUMNS, "legacy_note"]
    assert frame["learner"].tolist() == ["old", "old", "new", "newer"]
    assert frame["final_accuracy"].tolist()[:2] == [12.5, -3.5]  # old cells kept verbatim (no formula quote)
    assert frame["legacy_note"].tolist()[:2] == ["kept", "negative"]
    assert lf.set_aside_path(leaderboard_path).read_bytes() == b"2,old,s,f,not a number,bad\r\n3,old,s,f,1\n"


def test_line_breaks_in_a_cell_cannot_split_a_row(leaderboard_path):
    lf.append_rows(leaderboard_path, [_row(learner="two\nlines", device="a\r\nb")])
    frame = _quiet_read(leaderboard_path)
    assert frame["learner"].tolist() == ["two lines"] and frame["device"].tolist() == ["a  b"]


def test_a_failed_write_leaves_no_partial_row(leaderboard_path, monkeypatch):
    lf.append_rows(leaderboard_path, [_row(seed=0)])
    before = leaderboard_path.read_bytes()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:10]))  # a disk that fills up
    with pytest.raises(ClbenchError, match="could not append"):
        lf.append_rows(leaderboard_path, [_row(seed=1)])
    monkeypatch.undo()
    assert leaderboard_path.read_bytes() == before


def test_the_cli_reports_a_bad_file_in_one_line(leaderboard_path, capsys):
    leaderboard_path.parent.mkdir(parents=True)
    leaderboard_path.write_bytes(b"name,score\nalice,3\n")
    assert main(["leaderboard", "--leaderboard", str(leaderboard_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a clbench leaderboard" in err and "Traceback" not in err


def test_a_foreign_file_is_refused_before_any_run(leaderboard_path):
    leaderboard_path.parent.mkdir(parents=True)
    leaderboard_path.write_bytes(b"name,score\nalice,3\n")
    with pytest.raises(ClbenchError, match="not a clbench leaderboard"):
        lf.check_writable(leaderboard_path)
    lf.check_writable(leaderboard_path.with_name("new.csv"))  # a file to come is fine


def test_the_recorded_arithmetic_is_checked_a_thread_count_a_number_the_deterministic_flag_a_json_bool(
        leaderboard_path):
    lf.append_rows(leaderboard_path, [_row(torch_threads=2, deterministic="false", cpu="AMD EPYC (AVX512)",
                                           code_revision="a29010ee2449-dirty", source_hash="78b5df128c3d0541")])
    row = _quiet_read(leaderboard_path).iloc[0]
    assert row["torch_threads"] == 2 and row["deterministic"] == "false" and row["source_hash"] == "78b5df128c3d0541"
    with pytest.raises(ClbenchError, match="deterministic is not a JSON bool"):
        lf.append_rows(leaderboard_path, [_row(deterministic="True")])
    with pytest.raises(ClbenchError, match="torch_threads holds 'two', not a number"):
        lf.append_rows(leaderboard_path, [_row(torch_threads="two")])
