"""`--log tensorboard DIR` (issue 23): a run's epochs, evaluations and final figures reach its own
TensorBoard run directory through the runner's observer hooks, beside the leaderboard row."""

from __future__ import annotations

import sys

import pytest
import torch

from clbench import leaderboard, runner
from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.observer import RunObserver
from clbench.orchestration import RunOptions, run_and_store
from clbench.run_log import log_target
from synthetic import make_scenario
from test_resume import checkpoint_for, interrupting
from test_training_log import KnownLosses, NoLoss, _scenario

pytestmark = pytest.mark.usefixtures("single_thread")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _logged(tmp_path, cls):
    """The row of one logged run, and its run directory's scalars: tag -> [(step, value)]."""
    options = RunOptions(torch.device("cpu"), tmp_path / "checkpoints", tmp_path / "lb.csv", progress=False,
                         log=log_target("tensorboard", str(tmp_path / "tb")))
    row = run_and_store(_scenario(), cls, {}, 0, options)
    [directory] = (tmp_path / "tb" / "synthetic").iterdir()
    events = event_accumulator.EventAccumulator(str(directory))
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return row, directory, scalars


def test_the_event_files_hold_the_epochs_the_evaluations_and_the_row(tmp_path):
    row, directory, scalars = _logged(tmp_path, KnownLosses)
    assert directory.name.startswith("known-losses-") and directory.name.endswith(f"-seed0-{row['run_id']}")
    assert (tmp_path / "lb.csv").exists()  # the leaderboard row is written as always
    assert scalars["train/loss"] == [(1, 0.75), (2, 3.75), (3, 6.75), (4, 9.75)]  # epochs trained so far
    assert scalars["train/accuracy"] == [(1, 50.0), (2, 50.0), (3, 0.0), (4, 0.0)]
    assert [step for step, _ in scalars["train/seconds"]] == [1, 2, 3, 4]
    # predict answers class 0 always: half of experience 0 right, none of experience 1
    assert scalars["eval/experience_0"] == [(1, 50.0), (2, 50.0)] and scalars["eval/experience_1"] == [(2, 0.0)]
    assert scalars["eval/average"] == [(1, 50.0), (2, 25.0)] and scalars["eval/seen_pooled"] == [(1, 50.0), (2, 25.0)]
    assert scalars["eval/task_il_average"] == [(1, 50.0), (2, 50.0)]  # class 0 / class 2 within each experience
    assert scalars["final/final_accuracy"] == [(2, row["final_accuracy"])] == [(2, 25.0)]
    assert scalars["final/final_task_il_accuracy"] == [(2, 50.0)]


def test_a_learner_without_a_loss_logs_no_training_loss(tmp_path):
    _, _, scalars = _logged(tmp_path, NoLoss)
    assert "train/loss" not in scalars and "train/accuracy" not in scalars and len(scalars["train/seconds"]) == 4


class Recorder(RunObserver):
    def __init__(self):
        self.epochs, self.experiences = [], []

    def on_epoch(self, record):
        self.epochs.append((record.experience, record.epoch, record.loss))

    def on_experience(self, evaluation):
        self.experiences.append((evaluation.index, evaluation.accuracies))


def test_a_resumed_run_shows_its_observer_the_whole_run(tmp_path):
    sc = make_scenario(n_classes=8, n_experiences=4, per_class=6, epochs=2, batch_size=5)
    whole = Recorder()
    runner.run(sc, KnownLosses, device="cpu", progress=False, observer=whole)
    checkpoint = checkpoint_for(tmp_path, sc, KnownLosses, {})
    with pytest.raises(KeyboardInterrupt):
        runner.run(sc, interrupting(KnownLosses, 2), device="cpu", progress=False, checkpoint=checkpoint)
    resumed = Recorder()
    runner.run(sc, KnownLosses, device="cpu", progress=False, checkpoint=checkpoint, observer=resumed)
    assert resumed.epochs == whole.epochs and len(whole.epochs) == 8
    assert resumed.experiences == whole.experiences and len(whole.experiences) == 4


def test_an_unknown_log_kind_is_one_line(capsys, tmp_path):
    board = tmp_path / "lb.csv"
    assert main(["run", "--learner", "nmc", "--leaderboard", str(board), "--log", "wandb", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "clbench: error: unknown --log kind 'wandb'; known: tensorboard (e.g. --log tensorboard runs/)\n"
    assert not board.exists()


def test_a_missing_tensorboard_package_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ClbenchError, match=r"^--log tensorboard needs the tensorboard package: "
                                           r"pip install 'clbench\[tensorboard\]'$"):
        log_target("tensorboard", str(tmp_path))


def test_a_log_folder_that_cannot_be_a_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ClbenchError, match="the --log folder .* is a file, not a folder"):
        log_target("tensorboard", str(tmp_path / "file"))


def test_clbench_run_logs_each_run_and_shows_the_other_scoring(capsys, tmp_path):
    board, logs = tmp_path / "lb.csv", tmp_path / "tb"
    assert main(["run", "--no-progress", "--learner", "nmc", "--set", "n_experiences=2", "--leaderboard", str(board),
                 "--log", "tensorboard", str(logs)]) == 0
    out = capsys.readouterr().out
    assert "task-IL acc (no task id)" in out  # split-digits is class-incremental: Task-IL is the other scoring
    [row] = leaderboard.read(board).to_dict("records")
    assert f"{row['final_task_il_accuracy']:.2f}" in out.splitlines()[-3]
    [directory] = (logs / "split-digits").iterdir()
    assert directory.name.startswith("nmc-") and directory.name.endswith(f"-seed0-{row['run_id']}")
