"""The hypernetwork learners (`hnet`, `hnet-features`): regulariser, task inference, MIP, BN per task."""

from __future__ import annotations

import math

import pytest
import torch

from clbench.backbones import backbone_factory
from clbench.errors import ClbenchError
from clbench.learner import Context
from clbench.learners.hnet import HNet, HNetFeatures, lowest_entropy, task_log_probs
from clbench.learners.hypernet.generator import Hypernetwork, mip_encode
from clbench.learners.hypernet.lookahead import adam_delta, shifted
from clbench.learners.hypernet.target import TargetNet
from clbench import runner
from clbench.runner import seed_everything
from clbench.testing import learner_checks

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"lr": 0.01, "target_hidden": (8,), "hnet_hidden": (32,), "chunk_size": 64, "task_emb_dim": 4,
         "chunk_emb_dim": 4}  # tiny nets, a larger step: the checks' few batches suffice
SHAPE, CLASSES = (1, 6, 6), 4


def _cases() -> list:
    variants = [(HNet, {"generator": "rnn", "parametrization": "mip", "target": "cnn"}),
                (HNet, {"generator": "rnn"}), (HNetFeatures, {"parametrization": "mip"})]
    return [pytest.param(check, id=f"{cls.name}-{'-'.join(map(str, hp.values()))}-{name}")
            for cls, hp in variants for name, check in learner_checks(cls, **SMALL, **hp)]


@pytest.mark.parametrize("check", _cases())
def test_variants_pass_the_conformance_checks(check) -> None:
    check()


def _learner(n_tasks: int = 2, **hp) -> HNet:
    seed_everything(0)
    context = Context(device=torch.device("cpu"), num_classes=CLASSES, input_shape=SHAPE, seed=0,
                      backbone=backbone_factory("mlp", SHAPE), n_experiences=n_tasks)
    return HNet(context, **{**SMALL, **hp})


_PROTOTYPES = torch.randn(CLASSES, *SHAPE, generator=torch.Generator().manual_seed(1)) * 2


def _data(classes: list[int], n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes)[torch.randint(len(classes), (n,), generator=g)]
    return _PROTOTYPES[y] + 0.3 * torch.randn(n, *SHAPE, generator=g), y


def _train(learner: HNet, task: int, classes: list[int], steps: int = 60) -> None:
    x, y = _data(classes, seed=task)
    for _ in range(steps):
        learner.learn(x, y, task)


def _drift(beta: float) -> float:
    """How far the weights generated for task 0 move while task 1 is learned."""
    learner = _learner(beta=beta)
    _train(learner, 0, [0, 1])
    with torch.no_grad():
        before = learner.hnet(learner.hnet.embeddings[:1])
    _train(learner, 1, [2, 3], steps=100)
    with torch.no_grad():
        return float((learner.hnet(learner.hnet.embeddings[:1]) - before).norm() / before.norm())


def test_regulariser_keeps_old_task_weights_and_beta_zero_lets_them_drift() -> None:
    free, weak, strong = _drift(0.0), _drift(0.01), _drift(1.0)
    assert free > 0.05  # unprotected: the generated weights of task 0 move by more than 5%
    assert strong < 0.01 and strong < weak < free  # protection grows with beta


def test_old_task_predictions_survive_a_new_task() -> None:
    learner = _learner(beta=0.05)
    _train(learner, 0, [0, 1])
    x, _ = _data([0, 1], seed=9)
    before = learner.predict(x, 0)
    _train(learner, 1, [2, 3], steps=100)
    assert torch.equal(learner.predict(x, 0).argmax(1), before.argmax(1))


def test_lowest_entropy_picks_the_confident_task() -> None:
    masks = torch.tensor([[True, True, False, False], [False, False, True, True]])
    logits = torch.tensor([[[5.0, -5.0, 9.0, 9.0], [0.0, 0.0, 9.0, 9.0]],     # task 0: sure of sample 0 only
                           [[0.0, 0.0, 0.1, 0.0], [0.0, 0.0, -4.0, 4.0]]])   # task 1: sure of sample 1 only
    log_probs = task_log_probs(logits, masks)
    assert torch.isinf(log_probs[0, :, 2:]).all() and torch.isinf(log_probs[1, :, :2]).all()
    assert lowest_entropy(log_probs).tolist() == [0, 1]


def test_class_incremental_prediction_infers_the_task_from_entropy() -> None:
    learner = _learner(beta=0.05)
    _train(learner, 0, [0, 1])
    _train(learner, 1, [2, 3])
    x, y = _data([0, 1, 2, 3], n=64, seed=7)
    scores = learner.predict(x, None)
    assert torch.isfinite(scores).all()
    assert (scores.argmax(1) == y).float().mean() > 0.7  # chance: 0.25
    # each sample scores only the classes of the one task it was assigned to
    assert ((scores > torch.finfo(scores.dtype).min).sum(1) == 2).all()


def test_mip_encoding_has_constant_norm() -> None:
    for scale in (1e-3, 1.0, 1e3):
        embeddings = scale * torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
        encoded = mip_encode(embeddings)
        assert encoded.shape == (5, 14)
        torch.testing.assert_close(encoded.norm(dim=1), torch.full((5,), math.sqrt(7)))


def test_mip_starts_from_theta_0_initialised_like_the_target() -> None:
    learner = _learner(parametrization="mip")
    sizes = learner.target.sizes  # mlp target: weight 8x36, bias 8, weight 4x8, bias 4
    assert sizes == [8 * 36, 8, 4 * 8, 4]
    first = learner.hnet.theta_0[: sizes[0]]
    assert first.abs().max() <= 1 / math.sqrt(36) and first.std() > 0.5 / math.sqrt(3 * 36)


@pytest.mark.parametrize("kind", ["mlp", "rnn"])
def test_mip_initialises_the_generator_as_hyperlight_so_the_residual_starts_at_the_targets_scale(kind: str) -> None:
    """hnet's default sizes on 8x8 digits. The MLP generator as hyperlight: linear layers Kaiming-normal in fan-out
    mode with zero bias, the head's fan-out being all 17,610 generated weights, so a generated entry's mean square
    is |h|^2 / n_out; the LSTM generator (not in hyperlight) keeps PyTorch's init. Either way the residual h(E(e))
    starts at theta_0's scale (PyTorch's init of the MLP generator: 1.56 times it)."""
    torch.manual_seed(0)
    initial = TargetNet("mlp", (1, 8, 8), (100, 100), 10, 5).initial_weights()
    hnet = Hypernetwork(kind, "mip", initial, 5, 32, 1000, 32, (100, 100))
    generator, n_out = hnet.generator, len(initial)
    with torch.no_grad():
        codes = mip_encode(hnet.embeddings)
        residual = generator(codes)
    assert 0.7 < residual.std().item() / hnet.theta_0.std().item() < 1.4
    if kind == "rnn":  # PyTorch's default: uniform in +-1/sqrt(fan_in)
        assert generator.head.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 100), rel=0.05)
        return
    layers = [m for m in generator.modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers) == 3
    for layer in layers:
        std = 1 / math.sqrt(n_out) if layer is generator.head else math.sqrt(2 / layer.out_features)
        assert layer.weight.std().item() == pytest.approx(std, rel=0.05) and not layer.bias.any()
    with torch.no_grad():
        chunks = generator.chunks.expand(len(codes), -1, -1)
        last = generator.body(torch.cat([codes[:, None].expand(-1, len(generator.chunks), -1), chunks], 2))
    assert residual.pow(2).mean().item() == pytest.approx(last.pow(2).sum(-1).mean().item() / n_out, rel=0.1)


def test_lookahead_is_the_change_adam_would_make() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    optimizer = torch.optim.Adam([p], lr=0.1)
    for grad in ([0.3, -1.0, 2.0], [-0.5, 0.2, 1.0]):
        p.grad = torch.tensor(grad)
        before = p.detach().clone()
        (delta,) = adam_delta(optimizer)
        optimizer.step()
        torch.testing.assert_close(delta, p.detach() - before)
    # first step by hand: m_hat = g, v_hat = g^2, delta = -lr * g / (|g| + eps)
    q = torch.nn.Parameter(torch.zeros(2))
    q.grad = torch.tensor([4.0, -0.25])
    torch.testing.assert_close(adam_delta(torch.optim.Adam([q], lr=0.1))[0], torch.tensor([-0.1, 0.1]))


def test_shifted_restores_the_exact_values() -> None:
    p = torch.nn.Parameter(torch.tensor([0.1, 0.2, 0.3]))
    before = p.detach().clone()
    with shifted([p], [torch.tensor([1e-9, 3.0, -7.0])]):
        assert torch.allclose(p, before + torch.tensor([1e-9, 3.0, -7.0]))
    assert torch.equal(p.detach(), before)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_target_runs_k_weight_sets_in_one_pass_as_one_at_a_time(kind: str) -> None:
    torch.manual_seed(0)
    target = TargetNet(kind, SHAPE, (5, 3), CLASSES, n_tasks=3)
    if kind == "cnn":
        target.mean0.normal_()  # distinct statistics per task
    weights = torch.stack([target.initial_weights() for _ in range(3)])
    tasks = torch.tensor([2, 0, 1])
    x = torch.randn(4, *SHAPE)
    together = target(x, weights, tasks)
    assert together.shape == (3, 4, CLASSES)
    for k in range(3):
        torch.testing.assert_close(together[k], target(x, weights[k: k + 1], tasks[k: k + 1])[0])


def test_batch_norm_statistics_are_kept_per_task() -> None:
    learner = _learner(target="cnn")
    _train(learner, 0, [0, 1], steps=5)
    first = learner.target.mean0.clone()
    assert first[0].abs().sum() > 0 and first[1].abs().sum() == 0
    _train(learner, 1, [2, 3], steps=5)
    assert torch.equal(learner.target.mean0[0], first[0]) and learner.target.mean0[1].abs().sum() > 0


def test_reg_tasks_subsamples_the_earlier_tasks() -> None:
    learner = _learner(n_tasks=4, reg_tasks=1)
    for task in range(3):
        _train(learner, task, [task, task + 1], steps=2)
    draws = {tuple(learner._regularised(2).tolist()) for _ in range(20)}
    assert draws == {(0,), (1,)}
    assert _learner(n_tasks=4)._regularised(0).tolist() == []


@pytest.mark.parametrize("task", [None, 2, -1])
def test_a_missing_or_unknown_task_id_is_one_line(task) -> None:
    learner = _learner()
    x, y = _data([0, 1])
    with pytest.raises(ClbenchError, match=r"^learner 'hnet' needs a task id in 0\.\.1 .*got") as info:
        learner.learn(x, y, task)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("task_incremental", [False, True])
def test_runner_resumes_an_interrupted_run_to_the_same_result(tmp_path, task_incremental: bool) -> None:
    from synthetic import make_scenario
    from test_resume import whole_and_resumed

    sc = make_scenario(n_classes=6, n_experiences=3, epochs=2, task_incremental=task_incremental)
    config = {**SMALL, "target": "cnn", "reg_tasks": 1}
    whole, resumed = whole_and_resumed(tmp_path, sc, HNet, config)
    assert resumed.accuracy_matrix == whole.accuracy_matrix
