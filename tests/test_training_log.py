"""The per-epoch training log (issue 23): what `learn` returns (its loss, `Step(loss, scores)`, or None)
becomes per-epoch means over the epoch's samples, read in one host sync per epoch, kept across a resume."""

from __future__ import annotations

import json

import pytest
import torch

from clbench import Learner, Step, leaderboard, runner
from clbench.errors import ClbenchError
from synthetic import make_scenario
from test_resume import checkpoint_for, interrupting

pytestmark = pytest.mark.usefixtures("single_thread")


class KnownLosses(Learner):
    """Step k of the run (0-based) reports loss k and scores that always answer class 0."""

    name = "known-losses"

    def __init__(self, context) -> None:
        super().__init__(context)
        self.steps = torch.zeros((), device=context.device)

    def learn(self, x, y, task):
        loss = self.steps.clone()
        self.steps += 1
        scores = torch.zeros(len(y), self.context.num_classes, device=y.device)
        scores[:, 0] = 1.0
        return Step(loss, scores)

    def predict(self, x, task):
        return torch.zeros(len(x), self.context.num_classes)

    def state_dict(self):
        return {"steps": self.steps.clone()}

    def load_state_dict(self, state):
        self.steps = state["steps"].clone()


class LossOnly(KnownLosses):
    name = "loss-only"

    def learn(self, x, y, task):
        return super().learn(x, y, task).loss


class NoLoss(KnownLosses):
    name = "no-loss"

    def learn(self, x, y, task):
        super().learn(x, y, task)


def _scenario(batch_size: int = 5):
    """2 experiences of 12 training samples (classes 0, 1 then 2, 3), 2 epochs, batches of 5, 5, 2."""
    return make_scenario(n_classes=4, n_experiences=2, per_class=6, epochs=2, batch_size=batch_size)


def _figures(result):
    return [(r.experience, r.epoch, r.loss, r.accuracy, r.samples) for r in result.training_log]


def test_the_log_holds_the_sample_weighted_mean_loss_and_training_accuracy_per_epoch():
    result = runner.run(_scenario(), KnownLosses, device="cpu", progress=False)
    # losses 0, 1, 2 on batches of 5, 5, 2: (0*5 + 1*5 + 2*2) / 12 = 0.75; then (3*5 + 4*5 + 5*2) / 12 = 3.75, ...
    # class 0 is right for half of experience 0 (classes 0, 1) and for none of experience 1
    assert _figures(result) == [(0, 0, 0.75, 50.0, 12), (0, 1, 3.75, 50.0, 12),
                                (1, 0, 6.75, 0.0, 12), (1, 1, 9.75, 0.0, 12)]
    assert all(r.seconds > 0 for r in result.training_log)
    row = leaderboard.make_row(result, _scenario(), "images")
    log = json.loads(row["training_log"])
    assert log["experience"] == [0, 1] and log["loss"] == [[0.75, 3.75], [6.75, 9.75]]
    assert log["accuracy"] == [[50.0, 50.0], [0.0, 0.0]] and log["samples"] == [[12, 12], [12, 12]]


def test_a_loss_alone_gives_no_accuracy_and_no_return_value_gives_neither():
    loss_only = runner.run(_scenario(), LossOnly, device="cpu", progress=False)
    assert [(r.loss, r.accuracy) for r in loss_only.training_log] == [(0.75, None), (3.75, None), (6.75, None),
                                                                       (9.75, None)]
    silent = runner.run(_scenario(), NoLoss, device="cpu", progress=False)
    assert [(r.loss, r.accuracy, r.samples) for r in silent.training_log] == [(None, None, 12)] * 4
    log = json.loads(leaderboard.make_row(silent, _scenario(), "images")["training_log"])
    assert log["loss"] == [[None, None], [None, None]] and log["accuracy"] == [[None, None], [None, None]]


SYNCS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu")


def _host_syncs(monkeypatch, batch_size: int) -> int:
    """Tensor-to-host reads during a whole run of KnownLosses (whose learn makes none)."""
    count = [0]
    for method in SYNCS:
        original = getattr(torch.Tensor, method)

        def counting(self, *args, _original=original, **kwargs):
            count[0] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, method, counting)
    runner.run(_scenario(batch_size=batch_size), KnownLosses, device="cpu", progress=False)
    monkeypatch.undo()
    return count[0]


def test_the_log_costs_one_host_sync_per_epoch_not_per_step(monkeypatch):
    # 3 steps per epoch, then 6: the same number of host reads (one per epoch, the evaluation's own)
    three, six = _host_syncs(monkeypatch, 5), _host_syncs(monkeypatch, 2)
    assert three == six
    # with batches of 2 (6 steps of 2 per epoch) the means are (0+1+...+5) * 2 / 12 = 2.5, then 8.5, ...
    result = runner.run(_scenario(batch_size=2), KnownLosses, device="cpu", progress=False)
    assert [r.loss for r in result.training_log] == [2.5, 8.5, 14.5, 20.5]


@pytest.mark.parametrize("returned,match", [
    ((1.0, 2.0), r"learn\(\) returned tuple as its loss; expected None, a 0-dim floating-point loss tensor"),
    (torch.ones(3), r"learn\(\) returned a tensor of shape \(3,\) \(torch.float32\) as its loss"),
    (Step(torch.tensor(1.0), torch.ones(2, 2)), r"learn\(\) returned Step scores \(2, 2\) on cpu; expected \(5, 4\)"),
])
def test_an_unusable_return_value_is_one_line(returned, match):
    class Returns(KnownLosses):
        name = "returns"

        def learn(self, x, y, task):
            return returned

    with pytest.raises(ClbenchError, match=match):
        runner.run(_scenario(), Returns, device="cpu", progress=False)


def test_a_python_number_is_a_loss_too():
    class ReadsItsLoss(KnownLosses):
        name = "reads-its-loss"

        def learn(self, x, y, task):
            return super().learn(x, y, task).loss.item()

    assert [r.loss for r in runner.run(_scenario(), ReadsItsLoss, device="cpu", progress=False).training_log] \
        == [0.75, 3.75, 6.75, 9.75]


def test_a_resumed_run_keeps_the_log_exact(tmp_path):
    sc = make_scenario(n_classes=8, n_experiences=4, per_class=6, epochs=2, batch_size=5)
    whole = runner.run(sc, KnownLosses, device="cpu", progress=False)
    checkpoint = checkpoint_for(tmp_path, sc, KnownLosses, {})
    with pytest.raises(KeyboardInterrupt):
        runner.run(sc, interrupting(KnownLosses, 2), device="cpu", progress=False, checkpoint=checkpoint)
    saved = checkpoint.load()["trainer"]["log"]
    resumed = runner.run(sc, KnownLosses, device="cpu", progress=False, checkpoint=checkpoint)
    assert _figures(resumed) == _figures(whole) and len(_figures(whole)) == 8
    assert [r.seconds for r in resumed.training_log[:4]] == [record["seconds"] for record in saved]  # as saved
