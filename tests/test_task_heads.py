"""Task-incremental training conventions (`til_training`): "masked" trains each sample within its task's
classes (one head per task), "single-head" over all classes. The mask against hand-computed losses, in
finetune (and so joint, linear-probe, fast-slow), replay (a replayed sample within ITS task's classes)
and kv-bottleneck; the setting; what it does to forgetting on split-digits-til; exact resume."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F

from clbench import runner
from clbench.backbones import backbone_factory
from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.learner import Context, Learner, get_learner
from clbench.learners.finetune import Finetune
from clbench.learners.hnet import HNet
from clbench.learners.kv_bottleneck import KVBottleneck
from clbench.learners.replay import Replay
from clbench.learners.task_heads import TaskMask
from clbench.metrics import summary
from clbench.scenario import ScenarioSpec, build_scenario, load_spec
from clbench.setting import setting_identity
from synthetic import make_scenario
from test_resume import whole_and_resumed

pytestmark = pytest.mark.usefixtures("single_thread")

SHAPE = (1, 2, 2)
TASKS = ((0, 1), (2, 3))


def _context(til_training: str | None = "masked", shape: tuple[int, ...] = SHAPE) -> Context:
    return Context(torch.device("cpu"), num_classes=4, input_shape=shape, seed=0, backbone=backbone_factory("mlp", shape),
                   til_training=til_training, task_classes=TASKS if til_training else ())


def _task_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """By hand: sample i's cross-entropy over the columns of its label's task in TASKS only."""
    losses = []
    for row, label in zip(logits, y.tolist()):
        columns = next(list(task) for task in TASKS if label in task)
        losses.append(torch.logsumexp(row[columns], 0) - row[label])
    return torch.stack(losses).mean()


def test_the_masked_cross_entropy_is_each_samples_cross_entropy_over_its_tasks_classes():
    logits = torch.tensor([[1.0, 2.0, 30.0, -4.0], [0.5, -1.0, 2.0, 3.0], [-2.0, 0.0, 50.0, 1.0]])
    y = torch.tensor([0, 3, 1])
    by_hand = [math.log(math.exp(1) + math.exp(2)) - 1, math.log(math.exp(2) + math.exp(3)) - 3,
               math.log(math.exp(-2) + math.exp(0)) - 0]
    mask = TaskMask(_context())
    assert mask.cross_entropy(logits, y).item() == pytest.approx(sum(by_hand) / 3, rel=1e-6)
    # label smoothing spreads eps over the task's two classes: (1 - eps) nll + eps * mean of both -log p
    eps, other = 0.2, [math.log(math.exp(1) + math.exp(2)) - 2, math.log(math.exp(2) + math.exp(3)) - 2,
                       math.log(math.exp(-2) + math.exp(0)) + 2]
    smoothed = [(1 - eps) * n + eps * (n + o) / 2 for n, o in zip(by_hand, other)]
    assert mask.cross_entropy(logits, y, eps).item() == pytest.approx(sum(smoothed) / 3, rel=1e-6)
    # single-head, or a stream without tasks: the plain cross-entropy over all classes
    for context in (_context("single-head"), _context(None)):
        assert torch.equal(TaskMask(context).cross_entropy(logits, y, eps), F.cross_entropy(logits, y, label_smoothing=eps))


def test_masked_logits_get_no_gradient_and_no_nan_in_any_precision():
    for dtype in (torch.float32, torch.bfloat16):
        logits = torch.tensor([[3e4, -3e4, 1.0, 2.0]], dtype=dtype, requires_grad=True)
        loss = TaskMask(_context()).cross_entropy(logits, torch.tensor([2]), 0.1)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
        assert logits.grad[0, :2].abs().sum() == 0 and logits.grad[0, 2:].abs().sum() > 0


def _sgd_step(net: torch.nn.Module, loss: torch.Tensor, lr: float) -> dict[str, torch.Tensor]:
    grads = torch.autograd.grad(loss, list(net.parameters()))
    return {name: p.detach() - lr * g for (name, p), g in zip(net.named_parameters(), grads)}


def _assert_parameters(net: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_finetune_steps_on_the_cross_entropy_over_the_batchs_task_classes():
    torch.manual_seed(0)
    learner = Finetune(_context(), lr=0.5, momentum=0.0)
    x, y = torch.randn(6, *SHAPE), torch.tensor([2, 3, 3, 2, 2, 3])
    before = copy.deepcopy(learner.net)
    expected = _sgd_step(before, _task_cross_entropy(before(x), y), lr=0.5)
    learner.learn(x, y, 1)
    _assert_parameters(learner.net, expected)
    single = Finetune(_context("single-head"), lr=0.5, momentum=0.0)
    single.net.load_state_dict(before.state_dict())
    single.learn(x, y, 1)  # the other convention steps on the cross-entropy over all four classes
    _assert_parameters(single.net, _sgd_step(before, F.cross_entropy(before(x), y), lr=0.5))


def test_a_replayed_sample_of_an_earlier_task_is_masked_to_its_own_tasks_classes():
    torch.manual_seed(0)
    learner = Replay(_context(), buffer_size=4, replay_batch_size=4, lr=0.5, momentum=0.0)
    x0, y0 = torch.randn(4, *SHAPE), torch.tensor([0, 1, 1, 0])
    learner.learn(x0, y0, 0)  # fills the buffer with task 0's four samples
    x1, y1 = torch.randn(4, *SHAPE), torch.tensor([3, 2, 2, 3])
    before = copy.deepcopy(learner.net)
    x, y = torch.cat([x1, x0]), torch.cat([y1, y0])  # the draw is the whole buffer: the mean is order-free
    expected = _sgd_step(before, _task_cross_entropy(before(x), y), lr=0.5)
    learner.learn(x1, y1, 1)
    _assert_parameters(learner.net, expected)


def test_kv_bottleneck_values_learn_only_their_tasks_classes():
    context = _context(shape=(6,))
    learner = KVBottleneck(context, codebooks=4, keys=8, key_dim=2)
    learner.learn(torch.randn(5, 6), torch.tensor([2, 3, 3, 2, 2]), 1)
    values = learner.bottleneck.values
    assert values[..., 2:].abs().sum() > 0 and values[..., :2].abs().sum() == 0  # smoothing stays in task 1
    plain = KVBottleneck(_context("single-head", shape=(6,)), codebooks=4, keys=8, key_dim=2)
    plain.learn(torch.randn(5, 6), torch.tensor([2, 3, 3, 2, 2]), 1)
    assert plain.bottleneck.values[..., :2].abs().sum() > 0


class _Recorder(Learner):
    """Records the Context it is given."""

    name = "recorder"
    seen: list[Context] = []

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        _Recorder.seen.append(context)

    def learn(self, x, y, task):
        pass

    def predict(self, x, task):
        return torch.zeros(len(x), self.context.num_classes)


def test_the_runner_gives_the_setting_and_each_tasks_classes_only_where_a_task_is_given_at_training():
    _Recorder.seen.clear()
    runner.run(make_scenario(task_incremental=True), _Recorder, seed=0, device="cpu", progress=False)
    runner.run(make_scenario(task_incremental=True, til_training="single-head"), _Recorder, seed=0, device="cpu",
               progress=False)
    runner.run(make_scenario(), _Recorder, seed=0, device="cpu", progress=False)
    runner.run(make_scenario(task_incremental=True, task_boundaries=False), _Recorder, seed=0, device="cpu",
               progress=False)
    assert [(c.til_training, c.task_classes) for c in _Recorder.seen] == [
        ("masked", TASKS), ("single-head", TASKS), (None, ()), (None, ())]


def test_til_training_enters_the_setting_id_and_is_refused_where_it_cannot_act():
    til = load_spec("split-digits-til")
    assert til.til_training == "masked"
    single = til.with_overrides({"til_training": "single-head"})
    assert setting_identity(single) != setting_identity(til)
    with pytest.raises(ClbenchError, match="til_training=single-head acts only where a task is given"):
        load_spec("split-digits").with_overrides({"til_training": "single-head"})
    with pytest.raises(ClbenchError, match="acts only where"):
        til.with_overrides({"til_training": "single-head", "task_boundaries": False})
    with pytest.raises(ClbenchError, match=re.escape("accepted: masked | single-head")):
        til.with_overrides({"til_training": "multi"})
    assert ScenarioSpec(name="s", protocol="episodes").til_training == "masked"  # inert default everywhere


def test_clbench_list_shows_how_a_task_incremental_scenario_trains(capsys):
    assert main(["list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("split-digits-til "))
    assert "task-incremental (masked)" in line


def test_hnet_refuses_single_head_training_in_one_line():
    with pytest.raises(ClbenchError, match="til_training=single-head does not apply"):
        HNet(_context("single-head"))


def test_an_avalanche_strategy_refuses_masked_training_it_cannot_do():
    pytest.importorskip("avalanche")
    naive = get_learner("avalanche:Naive")
    with pytest.raises(ClbenchError, match="give --set til_training=single-head"):
        naive(_context())
    naive(_context("single-head"))  # one head over all classes: what its strategies train


@pytest.mark.parametrize("til", ["masked", "single-head"])
def test_finetune_on_split_digits_til_forgets_far_less_with_masked_training(til):
    scenario = build_scenario(load_spec("split-digits-til").with_overrides({"til_training": til}))
    for seed in (0, 1):
        result = summary(runner.run(scenario, Finetune, {}, seed=seed, device="cpu", progress=False).accuracy_matrix)
        if til == "masked":  # seeds 0, 1: final 92.8, 92.6; forgetting 8.7, 8.4
            assert result["final_accuracy"] > 85 and result["forgetting"] < 15
        else:  # seeds 0, 1: final 53.6, 53.4; forgetting 57.5, 58.0
            assert result["final_accuracy"] < 70 and result["forgetting"] > 40


@pytest.mark.parametrize("name", ["finetune", "replay"])
def test_a_resumed_masked_task_incremental_run_gives_the_uninterrupted_result(tmp_path, name):
    sc = make_scenario(n_classes=8, n_experiences=4, per_class=6, epochs=2, task_incremental=True)
    cls, config = get_learner(name), {"lr": 0.1, **({"buffer_size": 8} if name == "replay" else {})}
    whole, resumed = whole_and_resumed(tmp_path, sc, cls, config)
    assert resumed.accuracy_matrix == whole.accuracy_matrix
