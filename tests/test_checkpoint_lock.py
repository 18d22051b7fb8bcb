"""The run lock (issue 10 §2): while a run is in progress it holds an exclusive lock beside its
checkpoint; an identical run started meanwhile stops at once with one line naming the holder's pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from clbench import runner
from clbench.checkpoint import Checkpoint, run_key
from clbench.errors import ClbenchError
from clbench.learner import get_learner
from synthetic import make_scenario

pytestmark = pytest.mark.usefixtures("single_thread")

HOLD = """
import sys, time
from clbench.checkpoint import Checkpoint
with Checkpoint(sys.argv[1], sys.argv[2]).claim():
    print("held", flush=True)
    time.sleep(120)
"""


def _checkpoint(folder, sc, cls):
    return Checkpoint(folder, run_key(sc, cls, {}, 0, torch.device("cpu")))


def test_a_second_identical_run_stops_while_the_first_holds_the_lock(tmp_path):
    sc, nmc = make_scenario(), get_learner("nmc")
    first = _checkpoint(tmp_path, sc, nmc)
    with first.claim():
        assert first.lock_path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(ClbenchError, match=rf"^the same run is in progress \(pid {os.getpid()}\): wait"):
            runner.run(sc, nmc, {}, device="cpu", progress=False, checkpoint=_checkpoint(tmp_path, sc, nmc))
        assert not first.path.exists()  # the second run neither resumed nor saved anything
        result = runner.run(sc, nmc, {}, device="cpu", progress=False, checkpoint=first)  # re-entrant for its holder
        assert first.lock_path.exists()  # still held: the holder's block has not ended
    assert not first.lock_path.exists() and first.path.exists()  # a run that ended leaves no lock file behind
    again = runner.run(sc, nmc, {}, device="cpu", progress=False, checkpoint=_checkpoint(tmp_path, sc, nmc))
    assert again.accuracy_matrix == result.accuracy_matrix and not first.lock_path.exists()


def test_the_lock_file_goes_when_the_run_fails(tmp_path):
    sc = make_scenario()

    class Broken(get_learner("nmc")):
        def learn(self, x, y, task):
            raise ValueError("boom")

    checkpoint = _checkpoint(tmp_path, sc, Broken)
    with pytest.raises(runner.LearnerFailed):
        runner.run(sc, Broken, {}, device="cpu", progress=False, checkpoint=checkpoint)
    assert list(tmp_path.iterdir()) == []


def test_kill_9_releases_the_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "k"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ClbenchError, match=rf"the same run is in progress \(pid {holder.pid}\)"):
            with Checkpoint(tmp_path, "k").claim():
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / "k.lock").exists()  # left by the killed holder, but no longer locked
    with Checkpoint(tmp_path, "k").claim():
        assert (tmp_path / "k.lock").read_text() == f"{os.getpid()}\n"
    assert not (tmp_path / "k.lock").exists()


def test_the_cli_refuses_a_run_in_progress_with_one_line(tmp_path, capsys):
    from clbench.cli import main
    from clbench.datasets import resolve_data_root
    from clbench.learner import validate
    from clbench.scenario import build_scenario, load_spec

    nmc, board = get_learner("nmc"), tmp_path / "board.csv"
    sc = build_scenario(load_spec("split-digits"))
    key = run_key(sc, nmc, validate(nmc, {}), 0, torch.device("cpu"))
    held = Checkpoint(resolve_data_root(None) / "checkpoints", key)
    with held.claim():
        status = main(["run", "--learner", "nmc", "--device", "cpu", "--no-progress", "--leaderboard", str(board)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status != 0 and not board.exists()
    assert err == [f"clbench: error: the same run is in progress (pid {os.getpid()}): wait for it to finish, or stop "
                   f"it (its lock: {held.lock_path})"]


def _hold(folder, key) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), key], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def _kill(holder: subprocess.Popen) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait()


def test_the_next_run_in_the_folder_removes_lock_files_of_killed_runs_and_keeps_live_ones(tmp_path):
    live, killed = _hold(tmp_path, "live"), _hold(tmp_path, "killed")
    try:
        _kill(killed)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.lock", "live.lock"]  # kill -9 leaves the file
        with Checkpoint(tmp_path, "other").claim():
            assert sorted(p.name for p in tmp_path.iterdir()) == ["live.lock", "other.lock"]
        assert [p.name for p in tmp_path.iterdir()] == ["live.lock"]
        assert (tmp_path / "live.lock").read_text() == f"{live.pid}\n"
        with pytest.raises(ClbenchError, match=rf"the same run is in progress \(pid {live.pid}\)"):
            with Checkpoint(tmp_path, "live").claim():  # still held by the live run
                pass
    finally:
        _kill(live)


def test_a_lock_held_for_an_instant_by_a_run_removing_it_as_stale_is_claimed_afresh(tmp_path):
    """A run removing a stale lock file holds its lock while it unlinks it; an identical run starting
    at that moment waits for it and locks the path anew instead of reporting a run in progress."""
    import fcntl
    import threading

    path = tmp_path / "k.lock"
    path.write_text("12345\n")
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as remove_stale_locks does, from another open file

    def remove_and_release() -> None:
        path.unlink()
        os.close(fd)

    timer = threading.Timer(0.1, remove_and_release)
    timer.start()
    try:
        with Checkpoint(tmp_path, "k").claim():
            assert path.read_text() == f"{os.getpid()}\n"
    finally:
        timer.join()
    assert list(tmp_path.iterdir()) == []
