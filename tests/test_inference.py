"""inference_copy: batch norms folded into convolutions and channels-last, exact up to float rounding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clbench.inference import channels_last, inference_copy
from clbench.nets.conv4 import conv4

pytestmark = pytest.mark.usefixtures("single_thread")


def trained_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm running statistics and affine parameters (as after training)."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 32, 32) * 2 + 1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_folded_copy_computes_what_the_eval_model_computes() -> None:
    model = trained_statistics(conv4(hidden=8, input_size=32))
    x = torch.randn(5, 3, 32, 32)
    fast = inference_copy(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, nn.Conv2d) for m in fast.modules()) == 4
    with torch.no_grad():
        assert torch.allclose(fast(channels_last(x)), model(x), rtol=1e-4, atol=1e-5)
        assert torch.allclose(fast(x), model(x), rtol=1e-4, atol=1e-5)  # any input layout


def test_the_original_is_left_untouched_and_the_copy_is_frozen() -> None:
    model = trained_statistics(conv4(hidden=8, input_size=32)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_copy(model)
    assert model.training and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not fast.training and not any(p.requires_grad for p in fast.parameters())
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_only_a_batch_norm_right_after_a_convolution_is_folded() -> None:
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    fast = inference_copy(model)
    assert [type(m) for m in fast] == [nn.BatchNorm2d, nn.Conv2d, nn.ReLU, nn.BatchNorm2d]


def test_channels_last_leaves_non_image_tensors_alone() -> None:
    flat = torch.randn(4, 6)
    assert channels_last(flat) is flat
    assert channels_last(torch.randn(2, 3, 5, 5)).is_contiguous(memory_format=torch.channels_last)
