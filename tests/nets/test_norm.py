"""The swappable norm layer (clbench.nets.norm): AdaB²N's statistics, momentum schedule, task weights,
evaluation, and swapping it into the factory's networks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clbench.backbones import backbone_factory
from clbench.errors import ClbenchError
from clbench.nets import reduced_resnet18
from clbench.nets.norm import AdaB2N, adab2n_layers, assign_tasks, regulariser, swap_norm


def _batches(n: int, seed: int = 0, size: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, 4, 3, 3, generator=g) * (k + 1) + k for k in range(n)]


def test_with_one_task_batch_statistics_and_output_are_batchnorms():
    bn, ada = nn.BatchNorm2d(4), AdaB2N(4, n_tasks=3, kappa=1.0)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
        ada.weight.copy_(bn.weight), ada.bias.copy_(bn.bias)
    for x in _batches(3):
        assign_tasks([ada], torch.zeros(len(x), dtype=torch.int64), current=0)  # only task 0: plain statistics
        out = ada(x)
        assert torch.allclose(out, bn(x), atol=1e-5)
        assert torch.allclose(ada.running_mean, bn.running_mean, atol=1e-6)
        out.square().sum().backward()
        assert ada.eta.grad is None or not ada.eta.grad.any()  # the task logits do not learn in task 0


def test_kappa_one_is_batchnorms_constant_momentum():
    ada, running_var = AdaB2N(4, n_tasks=1, kappa=1.0), torch.ones(4)
    for x in _batches(4):
        ada(x)
        assert float(ada.step_momentum) == pytest.approx(0.1)
        running_var = 0.9 * running_var + 0.1 * x.var(dim=(0, 2, 3), correction=0)  # the biased batch variance
    assert torch.allclose(ada.running_var, running_var, atol=1e-5)


def test_kappa_zero_is_the_cumulative_mean_of_the_batch_means():
    ada = AdaB2N(4, n_tasks=1, kappa=0.0)
    batches = _batches(5)
    for x in batches:
        ada(x)
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in batches])
    assert torch.allclose(ada.running_mean, means.mean(0), atol=1e-5)
    assert float(ada.step_momentum) == pytest.approx(1 / 5)


def test_momentum_schedule_follows_the_recursion():
    ada, m, kappa = AdaB2N(2, n_tasks=1, kappa=0.4), 0.1, 0.4
    expected = [m ** kappa]
    for _ in range(3):
        expected.append(expected[-1] / (expected[-1] + (1 - m) ** kappa))
    seen = []
    for x in _batches(4, size=2):
        ada(x[:, :2])
        seen.append(float(ada.step_momentum))
    assert seen == pytest.approx(expected)


def test_task_weights_follow_the_formula_on_a_hand_built_batch_of_two_tasks():
    ada = AdaB2N(1, n_tasks=3, kappa=1.0, eps=0.0)
    with torch.no_grad():
        ada.eta.copy_(torch.tensor([0.0, math.log(2), 5.0]))  # task 2 is not current: it must not count
    x = torch.tensor([1.0, 2.0, 3.0, 10.0]).view(4, 1, 1, 1)
    assign_tasks([ada], torch.tensor([0, 0, 0, 1]), current=1)
    out = ada(x)
    # pi = (exp(eta) + n) / sum = (1 + 3, 2 + 1) / 7; w = pi_t / n_t = 4/21 (task 0), 3/7 (task 1)
    mean = 4 / 21 * 6 + 3 / 7 * 10  # 38/7
    var = 4 / 21 * ((1 - mean) ** 2 + (2 - mean) ** 2 + (3 - mean) ** 2) + 3 / 7 * (10 - mean) ** 2  # 16520/1029
    assert mean == pytest.approx(38 / 7) and var == pytest.approx(16520 / 1029)
    assert torch.allclose(out.flatten(), (x.flatten() - mean) / math.sqrt(var), atol=1e-5)
    assert float(ada.running_mean) == pytest.approx(0.1 * mean, rel=1e-5)
    out.square().sum().backward()
    assert ada.eta.grad[:2].abs().min() > 0 and ada.eta.grad[2] == 0  # the current tasks' logits learn


def test_the_assignment_has_a_fixed_size_and_takes_the_current_task_as_a_device_tensor():
    # sizes that depend on the data (bincount up to the largest task) would make the host wait for the device
    ada = AdaB2N(1, n_tasks=4, kappa=1.0, eps=0.0)
    x = torch.tensor([1.0, 2.0, 3.0, 10.0]).view(4, 1, 1, 1)
    assign_tasks([ada], torch.tensor([0, 0, 0, 1]), current=torch.tensor(1))
    assert ada.counts.tolist() == [3, 1, 0, 0] and ada.active.tolist() == [True, True, False, False]
    # pi = (1 + 3, 1 + 1) / 6 (eta = 0): weights 2/9 (task 0), 1/3 (task 1)
    mean = 2 / 9 * 6 + 1 / 3 * 10  # 14/3
    var = 2 / 9 * ((1 - mean) ** 2 + (2 - mean) ** 2 + (3 - mean) ** 2) + 1 / 3 * (10 - mean) ** 2
    assert torch.allclose(ada(x).flatten(), (x.flatten() - mean) / math.sqrt(var), atol=1e-5)


def test_eval_never_uses_batch_statistics():
    ada = AdaB2N(4, n_tasks=2, kappa=0.4)
    for x in _batches(3):
        ada(x)
    ada.eval()
    state = {k: v.clone() for k, v in ada.state_dict().items()}
    x = _batches(1, seed=5)[0] * 100 + 50  # far from the running statistics
    whole, alone = ada(x), torch.cat([ada(x[i: i + 1]) for i in range(len(x))])
    assert torch.equal(whole, alone)
    expected = (x - ada.running_mean.view(1, -1, 1, 1)) / torch.sqrt(ada.running_var.view(1, -1, 1, 1) + ada.eps)
    assert torch.allclose(whole, expected * ada.weight.view(1, -1, 1, 1) + ada.bias.view(1, -1, 1, 1), atol=1e-4)
    assert all(torch.equal(v, state[k]) for k, v in ada.state_dict().items())


def test_regulariser_is_the_layers_statistics_mismatch():
    ada = AdaB2N(4, n_tasks=1, kappa=1.0)
    x = _batches(1)[0]
    ada(x)
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    expected = ((mean - ada.running_mean) ** 2).mean() + ((var - ada.running_var) ** 2).mean()
    assert torch.allclose(regulariser([ada]), expected)


def test_swap_replaces_every_batchnorm_and_keeps_its_state():
    net = reduced_resnet18(nf=4)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        bns[0].running_mean.fill_(0.25), bns[0].weight.fill_(1.5)
    swap_norm(net, "adab2n", n_tasks=5, kappa=0.7)
    layers = adab2n_layers(net)
    assert len(layers) == len(bns) and not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert layers[0].running_mean.eq(0.25).all() and layers[0].weight.eq(1.5).all()
    assert all(layer.kappa == 0.7 and layer.eta.shape == (5,) for layer in layers)
    assert swap_norm(reduced_resnet18(nf=4), "bn") is not None


def test_factory_builds_any_batchnorm_backbone_with_adab2n():
    factory = backbone_factory("small_cnn", (1, 8, 8))
    assert len(adab2n_layers(factory(norm="adab2n", norm_options={"n_tasks": 2, "kappa": 1.0}))) == 2
    assert adab2n_layers(factory()) == []
    assert factory.input_shape == (1, 8, 8) and factory.input_norm is None


@pytest.mark.parametrize("backbone,message", [("mlp", "has no BatchNorm2d layer"), ("flatten", "has no BatchNorm2d")])
def test_a_backbone_without_batchnorm_is_one_line(backbone, message):
    with pytest.raises(ClbenchError, match=message) as error:
        backbone_factory(backbone, (1, 8, 8))(norm="adab2n")
    assert "\n" not in str(error.value)


def test_a_batchnorm_subclass_is_not_silently_replaced():
    class BatchNormAct(nn.BatchNorm2d):  # like timm's BatchNormAct2d: replacing it would drop its activation
        pass

    with pytest.raises(ClbenchError, match="has BatchNormAct layers, which it cannot replace"):
        swap_norm(nn.Sequential(nn.Conv2d(1, 2, 3), BatchNormAct(2)), "adab2n")


def test_unknown_norm_and_bad_kappa_are_one_line():
    with pytest.raises(ClbenchError, match="unknown norm 'gn'"):
        swap_norm(nn.BatchNorm2d(2), "gn")
    with pytest.raises(ClbenchError, match="kappa must be in"):
        AdaB2N(2, n_tasks=1, kappa=-0.1)
