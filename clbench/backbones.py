"""The model factory: the literature's small networks and any timm model, all as feature
extractors with an `out_dim` attribute."""

from __future__ import annotations

import math
from typing import Any, Callable

from torch import nn

from clbench.errors import ClbenchError


class Flatten(nn.Module):
    """The identity encoder: the (normalised) input itself, flattened."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.out_dim = math.prod(input_shape)

    def forward(self, x):  # noqa: D102
        return x.flatten(1)


def _small(name: str) -> Callable[[tuple[int, ...], dict[str, Any]], nn.Module]:
    def build(shape: tuple[int, ...], kwargs: dict[str, Any]) -> nn.Module:
        from clbench import nets

        if name == "mlp":
            return nets.mlp(in_features=math.prod(shape), **kwargs)
        if name == "conv4":
            kwargs.setdefault("input_size", shape[-1])
        return getattr(nets, name)(in_channels=shape[0], **kwargs)

    return build


SMALL_NETS: dict[str, Callable[[tuple[int, ...], dict[str, Any]], nn.Module]] = {
    "flatten": lambda shape, kwargs: Flatten(shape),
    **{name: _small(name) for name in ("mlp", "small_cnn", "reduced_resnet18", "resnet32", "conv4", "resnet12")},
}


def make_backbone(name: str, input_shape: tuple[int, ...], **kwargs: Any) -> nn.Module:
    """A fresh feature extractor by name: one of `SMALL_NETS`, or a timm model name
    (created without its classifier head, `out_dim` = its number of features)."""
    if name in SMALL_NETS:
        return SMALL_NETS[name](tuple(input_shape), dict(kwargs))
    import timm

    if not timm.is_model(name.split(".")[0]):
        raise ClbenchError(f"unknown backbone '{name}' (small nets: {', '.join(SMALL_NETS)}; or any timm model name)")
    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=input_shape[0], **kwargs)
    model.out_dim = model.num_features
    return model


def backbone_factory(default: str, input_shape: tuple[int, ...]) -> Callable[..., nn.Module]:
    """What `Context.backbone` is: `factory(name=None, **kwargs)` builds `name` (else `default`)
    for inputs of `input_shape`."""

    def factory(name: str | None = None, **kwargs: Any) -> nn.Module:
        return make_backbone(name or default, input_shape, **kwargs)

    return factory
