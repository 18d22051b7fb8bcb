"""Feature-extractor backbones of the continual / few-shot literature (no classifier heads).

Every network maps N x C x H x W (the MLP: any N x ...) to N x ``out_dim`` features.
"""

from clbench.nets.conv4 import Conv4, conv4
from clbench.nets.mlp import MLP, mlp
from clbench.nets.reduced_resnet18 import ReducedResNet18, reduced_resnet18
from clbench.nets.resnet12 import ResNet12, resnet12
from clbench.nets.resnet32 import ResNet32, resnet32
from clbench.nets.small_cnn import SmallCNN, small_cnn

__all__ = [
    "Conv4",
    "MLP",
    "ReducedResNet18",
    "ResNet12",
    "ResNet32",
    "SmallCNN",
    "conv4",
    "mlp",
    "reduced_resnet18",
    "resnet12",
    "resnet32",
    "small_cnn",
]
