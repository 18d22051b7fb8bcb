"""The `adab2n` learner: replay over AdaB²N layers: defaults, task assignment, the regulariser's start,
the single forward pass, bad input, the conformance suite, and an online run from the command line."""

from __future__ import annotations

import pytest
import torch

import clbench.testing
from clbench import runner
from clbench.backbones import BackboneFactory, backbone_factory
from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.learner import Context, get_learner
from clbench.learners.adab2n import AdaB2N
from clbench.metrics import summary
from clbench.nets.norm import AdaB2N as AdaB2NLayer
from clbench.scenario import build_scenario, load_spec
from clbench.testing import check_learner

SHAPE = (1, 8, 8)
pytestmark = pytest.mark.usefixtures("single_thread")


def _context(num_classes: int = 6, n_experiences: int = 3, seed: int = 0) -> Context:
    return Context(torch.device("cpu"), num_classes=num_classes, input_shape=SHAPE, seed=seed,
                   backbone=backbone_factory("small_cnn", SHAPE), n_experiences=n_experiences)


def _batch(labels: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.tensor(labels)
    return torch.randn(len(y), *SHAPE, generator=torch.Generator().manual_seed(seed)) + y.view(-1, 1, 1, 1), y


def test_registered_with_the_papers_optimiser_and_knobs_from_its_grids():
    assert get_learner("adab2n") is AdaB2N
    declared = AdaB2N.hyperparameters()
    knobs = ("loss", "norm", "lr", "momentum", "kappa", "reg_weight", "reg_from_task")
    assert {k: declared[k].default for k in knobs} == {"loss": "er-ace", "norm": "adab2n", "lr": 0.03, "momentum": 0.0,
                                                       "kappa": 1.0, "reg_weight": 0.1, "reg_from_task": 1}
    summary = AdaB2N.summary()  # what `clbench list` shows: where each default comes from
    assert all(part in summary for part in ("lr 0.03", "no momentum", "lvyilin/AdaB2N", "kappa 1", "lambda 0.1"))
    assert AdaB2N.online and not AdaB2N.needs_task_ids


def test_every_batchnorm_is_swapped_and_the_task_logits_train():
    learner = AdaB2N(_context(), kappa=0.7)
    layers = [m for m in learner.net.modules() if isinstance(m, AdaB2NLayer)]
    assert len(layers) == 2 and learner.norm_layers == layers and all(l.kappa == 0.7 for l in layers)
    trained = {id(p) for group in learner.optimizer.param_groups for p in group["params"]}
    assert all(id(layer.eta) in trained and layer.eta.shape == (3,) for layer in layers)


def test_tasks_follow_the_order_classes_first_appear_in():
    learner = AdaB2N(_context(num_classes=6, n_experiences=3), buffer_size=50)  # 2 classes per task
    seen = []
    learner.net.register_forward_pre_hook(lambda module, args: seen.append(learner.norm_layers[0].tasks.clone()))
    learner.learn(*_batch([4, 4, 1]), None)  # 4 then 1: ranks 0, 1 -> task 0
    learner.learn(*_batch([5, 1, 0], seed=1), None)  # 5, 0: ranks 2, 3 -> task 1
    assert learner.arrival.table.tolist() == [1, 0, -1, -1, 0, 1]
    assert seen[0].tolist() == [0, 0, 0]
    assert len(seen[1]) == 6 and seen[1].tolist() == [1, 0, 1, 0, 0, 0]  # then the replayed samples' (4, 4, 1)
    layer = learner.norm_layers[0]
    assert layer.counts.tolist() == [4, 2, 0] and layer.active.tolist() == [True, True, False]


def test_the_regulariser_is_zero_before_reg_from_task():
    def trained(reg_weight: float, batches: list) -> dict:
        torch.manual_seed(0)
        learner = AdaB2N(_context(num_classes=4, n_experiences=2), reg_weight=reg_weight, reg_from_task=1)
        for x, y in batches:
            learner.learn(x, y, None)
        return learner.net.state_dict()

    task0 = [_batch([0, 1, 0, 1], seed=s) for s in range(3)]
    off, huge = trained(0.0, task0), trained(1e6, task0)
    assert all(torch.equal(off[k], huge[k]) for k in off)  # task 0: no regulariser at any weight
    task1 = task0 + [_batch([2, 3, 2], seed=9)]
    off, huge = trained(0.0, task1), trained(1e6, task1)
    assert not all(torch.equal(off[k], huge[k]) for k in off)


def test_with_boundaries_or_task_free_the_run_is_the_same():
    spec = load_spec("split-digits-online").with_overrides({"backbone": "small_cnn"})
    config = {"buffer_size": 100}
    bounded = runner.run(build_scenario(spec), AdaB2N, config, seed=0, progress=False, device="cpu")
    free = runner.run(build_scenario(spec.with_overrides({"task_boundaries": False})), AdaB2N, config, seed=0,
                      progress=False, device="cpu")
    assert bounded.accuracy_matrix == free.accuracy_matrix
    assert summary(bounded.accuracy_matrix)["final_accuracy"] > 35  # seen: 54.2 (chance 10; ER with BN: 21.5)


def test_the_largest_stable_regulariser_weight_of_the_papers_grid_trains_with_the_defaults():
    # lr 0.05 with momentum 0.9 (the former defaults) let the pre-BN variances grow ~300x in the first task;
    # the regulariser (their squared mismatch) then blew up: NaN at experience 1 already at reg_weight 0.01
    result = runner.run(build_scenario(load_spec("split-digits-online")), AdaB2N, {"reg_weight": 1.0}, seed=0,
                        progress=False, device="cpu")
    assert summary(result.accuracy_matrix)["final_accuracy"] > 50  # seen: 70.0 (chance 10; the former defaults: NaN)


@pytest.mark.parametrize("given,message", [
    ({"kappa": -0.5}, "hyper-parameter 'kappa' got -0.5; accepted: float in [0, 1]"),
    ({"norm": "bn"}, "hyper-parameter 'norm' got 'bn'; accepted: adab2n"),
    ({"buffer_size": 5, "replay_batch_size": 10}, "replay_batch_size=10 exceeds buffer_size=5"),
])
def test_bad_input_is_one_line(given, message):
    with pytest.raises(ClbenchError, match=message.replace("[", r"\[").replace("]", r"\]")) as error:
        AdaB2N(_context(), **given)
    assert "\n" not in str(error.value)


def test_a_backbone_without_batchnorm_is_one_line():
    context = Context(torch.device("cpu"), num_classes=4, input_shape=SHAPE, seed=0,
                      backbone=backbone_factory("mlp", SHAPE))
    with pytest.raises(ClbenchError, match="norm=adab2n: the network has no BatchNorm2d layer to replace"):
        AdaB2N(context)


@pytest.mark.parametrize("learner", ["nmc", "finetune"])
def test_norm_for_a_learner_without_it_is_one_line(learner, capsys):
    code = main(["run", "--scenario", "split-digits-online", "--learner", learner, "--set", "norm=adab2n",
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "none of the chosen learners" in err and "takes 'norm'" in err and len(err.splitlines()) == 1


def test_conforms_with_der_on_a_batchnorm_backbone(monkeypatch):
    # ER-ACE (the default) is checked with the registry (tests/test_conformance.py); the suite's harness
    # builds an MLP, which has no BatchNorm to swap: give it the small CNN
    monkeypatch.setattr(clbench.testing, "backbone_factory",
                        lambda name, shape, *args: BackboneFactory("small_cnn", shape, *args))
    check_learner(AdaB2N, loss="der", buffer_size=8)
