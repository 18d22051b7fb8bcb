"""The linear probe: finetune's head and optimizer on frozen features, nothing else."""

from __future__ import annotations

import pytest
import torch

from clbench import runner
from clbench.learner import Context
from clbench.learners.finetune import Finetune
from clbench.learners.linear_probe import LinearProbe
from clbench.testing import check_learner
from synthetic import make_scenario

pytestmark = pytest.mark.usefixtures("single_thread")


def context(dim: int = 6, classes: int = 4) -> Context:
    def no_backbone(*args, **kwargs):
        raise AssertionError("a linear probe builds no backbone")

    return Context(device=torch.device("cpu"), num_classes=classes, input_shape=(dim,), seed=0, backbone=no_backbone)


def test_check_learner_passes():
    check_learner(LinearProbe)


def test_only_a_linear_head_is_trained_on_the_features():
    ctx = context()
    probe = LinearProbe(ctx, lr=0.1, momentum=0.0)
    assert probe.context is ctx
    assert probe.n_parameters() == 6 * 4 + 4
    assert LinearProbe.hyperparameters() == Finetune.hyperparameters()
    x, y = torch.randn(8, 6), torch.arange(8) % 4
    weight, bias = probe.net[1].weight.detach().clone(), probe.net[1].bias.detach().clone()
    probe.learn(x, y, None)
    logits = x @ weight.T + bias  # one plain SGD step on the mean cross-entropy, by hand
    grad = (torch.softmax(logits, 1) - torch.nn.functional.one_hot(y, 4)) / len(y)
    assert torch.allclose(probe.net[1].weight, weight - 0.1 * grad.T @ x, atol=1e-6)
    assert torch.allclose(probe.predict(x, None), x @ probe.net[1].weight.T + probe.net[1].bias)


def test_it_forgets_what_a_class_incremental_stream_no_longer_shows():
    sc = make_scenario(n_classes=4, n_experiences=2, per_class=12, epochs=10)
    result = runner.run(sc, LinearProbe, {"lr": 0.5}, seed=0, device="cpu", progress=False)
    assert result.accuracy_matrix == [[100.0, 0.0], [0.0, 100.0]]  # each experience learned, the first forgotten
    assert result.init_set == ""  # no initialisation set
