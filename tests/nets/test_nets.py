"""Shape, parameter-count, norm-injection, gradient and determinism checks for clbench.nets."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from clbench.errors import ClbenchError
from clbench.nets import (
    MLP,
    Conv4,
    ReducedResNet18,
    ResNet12,
    ResNet32,
    SmallCNN,
    conv4,
    mlp,
    reduced_resnet18,
    resnet12,
    resnet32,
    small_cnn,
)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# (id, constructor, input shape C x H x W) at the sizes the literature uses.
SHAPE_CASES: list[tuple[str, Callable[[], nn.Module], tuple[int, int, int]]] = [
    ("rr18-cifar32", lambda: reduced_resnet18(), (3, 32, 32)),
    ("rr18-mini84", lambda: reduced_resnet18(), (3, 84, 84)),
    ("rr18-mnist28", lambda: reduced_resnet18(in_channels=1), (1, 28, 28)),
    ("resnet32-cifar32", lambda: resnet32(), (3, 32, 32)),
    ("conv4-mini84", lambda: conv4(), (3, 84, 84)),
    ("conv4-omniglot28", lambda: conv4(in_channels=1, input_size=28), (1, 28, 28)),
    ("resnet12-mini84", lambda: resnet12(), (3, 84, 84)),
    ("resnet12-cifarfs32", lambda: resnet12(), (3, 32, 32)),
    ("mlp-mnist28", lambda: mlp(784), (1, 28, 28)),
    ("mlp-digits8", lambda: mlp(64, hidden=100, depth=3), (1, 8, 8)),
    ("smallcnn-digits8", lambda: small_cnn(in_channels=1), (1, 8, 8)),
    ("smallcnn-mnist28", lambda: small_cnn(in_channels=1), (1, 28, 28)),
    ("smallcnn-cifar32", lambda: small_cnn(), (3, 32, 32)),
    ("smallcnn-224", lambda: small_cnn(width=8), (3, 224, 224)),
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("make,shape", [c[1:] for c in SHAPE_CASES], ids=[c[0] for c in SHAPE_CASES])
def test_output_shape(make: Callable[[], nn.Module], shape: tuple[int, int, int]) -> None:
    net = make()
    assert isinstance(net.out_dim, int)
    with torch.no_grad():
        net.eval()  # batch of 1: BN needs eval mode
        assert net(torch.randn(1, *shape)).shape == (1, net.out_dim)
        net.train()
        out = net(torch.randn(3, *shape))
    assert out.shape == (3, net.out_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "make,out_dim",
    [
        (lambda: reduced_resnet18(), 160),
        (lambda: reduced_resnet18(nf=64), 512),
        (lambda: resnet32(), 64),
        (lambda: conv4(), 1600),  # 84 -> 42 -> 21 -> 10 -> 5: 64 * 5 * 5
        (lambda: conv4(input_size=28), 64),  # 28 -> 14 -> 7 -> 3 -> 1
        (lambda: conv4(input_size=32), 256),  # 32 -> 2x2 map
        (lambda: resnet12(), 640),
        (lambda: resnet12(widths=(8, 16, 32, 48)), 48),
        (lambda: mlp(784), 256),
        (lambda: small_cnn(), 64),
        (lambda: small_cnn(width=16), 32),
    ],
)
def test_out_dim(make: Callable[[], nn.Module], out_dim: int) -> None:
    assert make().out_dim == out_dim


# Parameter counts without a classifier head (no forward pass needed). All match the published
# figures; where papers quote a count *with* a head the difference is exactly that head:
# - reduced ResNet-18, nf=20: 1,093,140 (GEM's "1.09M"; + a 100-way head 160*100+100 = 1,109,240).
# - reduced ResNet-18, nf=64: 11,168,832 = the well-known CIFAR-10 ResNet-18 figure 11,173,962
#   minus its 512*10+10 = 5,130-parameter head.
# - ResNet-32 (option-A shortcuts, no shortcut parameters): 463,504 = He et al.'s "0.46M";
#   the CIFAR-10 model with its 64*10+10 head has 464,154.
# - Conv-4 (conv biases kept, as in ProtoNets): 4 convs + 4 BNs = 1,792 + 3 * 36,928 + 4 * 128
#   = 113,088 at any input size ("113k").
# - ResNet-12 (64, 160, 320, 640), no DropBlock (which has no parameters anyway): 12,424,320
#   ("12.4M" in MetaOptNet).
PARAM_CASES = [
    ("rr18-nf20", lambda: reduced_resnet18(), 1_093_140),
    ("rr18-nf64", lambda: reduced_resnet18(nf=64), 11_168_832),
    ("resnet32", lambda: resnet32(), 463_504),
    ("conv4-84", lambda: conv4(), 113_088),
    ("conv4-28-gray", lambda: conv4(in_channels=1, input_size=28), 113_088 - 2 * 9 * 64),
    ("resnet12", lambda: resnet12(), 12_424_320),
    # 784*256+256 + 256*256+256
    ("mlp-784", lambda: mlp(784), 266_752),
    # conv 3*32*9 + BN 64 + conv 32*64*9 + BN 128
    ("smallcnn", lambda: small_cnn(), 19_488),
]


@pytest.mark.parametrize("make,expected", [c[1:] for c in PARAM_CASES], ids=[c[0] for c in PARAM_CASES])
def test_param_count(make: Callable[[], nn.Module], expected: int) -> None:
    assert n_params(make()) == expected


def test_resnet32_uses_option_a_shortcuts() -> None:
    convs = [m for m in resnet32().modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 31  # stem + 15 blocks * 2; no 1x1 projection convs
    assert all(c.kernel_size == (3, 3) for c in convs)


class _CountingNorm(nn.GroupNorm):
    """A non-BatchNorm norm layer that records its instances and forward calls."""

    instances: list["_CountingNorm"] = []

    def __init__(self, num_channels: int) -> None:
        super().__init__(1, num_channels)
        self.calls = 0
        _CountingNorm.instances.append(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)


def test_reduced_resnet18_norm_layer_injected() -> None:
    _CountingNorm.instances = []
    net = reduced_resnet18(nf=8, norm_layer=_CountingNorm)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    # stem 1 + 8 blocks * 2 + 3 projection shortcuts = 20, each with the right width
    assert len(_CountingNorm.instances) == 20
    widths = sorted(m.num_channels for m in _CountingNorm.instances)
    assert widths == sorted([8] * 5 + [16] * 5 + [32] * 5 + [64] * 5)
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 64)
    assert all(m.calls == 1 for m in _CountingNorm.instances)


def test_reduced_resnet18_default_norm_is_batchnorm() -> None:
    bns = [m for m in reduced_resnet18().modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 20


GRAD_CASES = [
    ("rr18", lambda: reduced_resnet18(nf=8), (3, 32, 32), lambda m: m.conv1.weight),
    ("resnet32", lambda: resnet32(), (3, 32, 32), lambda m: m.conv1.weight),
    ("conv4", lambda: conv4(in_channels=1, input_size=28), (1, 28, 28), lambda m: m.encoder[0].weight),
    ("resnet12", lambda: resnet12(widths=(8, 16, 32, 64)), (3, 32, 32), lambda m: m.blocks[0].body[0][0].weight),
    ("mlp", lambda: mlp(64), (1, 8, 8), lambda m: m.net[1].weight),
    ("smallcnn", lambda: small_cnn(in_channels=1), (1, 8, 8), lambda m: m.features[0].weight),
]


@pytest.mark.parametrize("make,shape,first", [c[1:] for c in GRAD_CASES], ids=[c[0] for c in GRAD_CASES])
def test_gradient_reaches_first_layer(
    make: Callable[[], nn.Module], shape: tuple[int, int, int], first: Callable[[nn.Module], torch.Tensor]
) -> None:
    net = make().train()
    out = net(torch.randn(4, *shape))
    # random projection: a plain sum of train-mode BN outputs can have zero gradient
    (out * torch.randn_like(out)).sum().backward()
    grad = first(net).grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("make,shape,_first", [c[1:] for c in GRAD_CASES], ids=[c[0] for c in GRAD_CASES])
def test_eval_mode_deterministic(
    make: Callable[[], nn.Module], shape: tuple[int, int, int], _first: object
) -> None:
    net = make()
    x = torch.randn(4, *shape)
    net.train()
    with torch.no_grad():
        net(x)  # move BN running stats away from their init
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
        single = net(x[:1])
    assert torch.equal(a, b)
    # in eval mode a sample's features do not depend on the rest of the batch
    torch.testing.assert_close(single, a[:1], rtol=1e-5, atol=1e-6)


def test_classes_and_factories_agree() -> None:
    assert isinstance(reduced_resnet18(), ReducedResNet18)
    assert isinstance(resnet32(), ResNet32)
    assert isinstance(conv4(), Conv4)
    assert isinstance(resnet12(), ResNet12)
    assert isinstance(mlp(10), MLP)
    assert isinstance(small_cnn(), SmallCNN)


def test_bad_configs_raise_clbench_error() -> None:
    with pytest.raises(ClbenchError, match="input_size"):
        conv4(input_size=8)
    with pytest.raises(ClbenchError, match="84x84"):
        conv4()(torch.randn(1, 3, 32, 32))
    with pytest.raises(ClbenchError, match="784"):
        mlp(784)(torch.randn(2, 3, 8, 8))
    with pytest.raises(ClbenchError, match="16x16"):
        resnet12().eval()(torch.randn(1, 3, 8, 8))
    with pytest.raises(ClbenchError):
        resnet12(widths=(64, 160, 320))
    with pytest.raises(ClbenchError):
        reduced_resnet18(nf=0)
