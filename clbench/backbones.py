"""The model factory: the literature's small networks and any timm model, all as feature
extractors with an `out_dim` attribute."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Callable

import torch
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


def make_backbone(name: str, input_shape: tuple[int, ...], weights: str = "", **kwargs: Any) -> nn.Module:
    """A feature extractor by name: one of `SMALL_NETS`, or a timm model name (created without
    its classifier head, `out_dim` = its number of features).

    `weights`: "" random initialisation; "hub" timm's pretrained weights (needs the network);
    otherwise the path of a local checkpoint (a state dict in a `torch.save` or `.safetensors`
    file; classifier-head keys are ignored, every other key must match).
    """
    if name in SMALL_NETS:
        model = SMALL_NETS[name](tuple(input_shape), dict(kwargs))
        if weights == "hub":
            raise ClbenchError(f"backbone '{name}' has no hub weights; give weights=PATH to a checkpoint")
    else:
        model = _timm_model(name, input_shape, weights == "hub", kwargs)
    if weights and weights != "hub":
        load_checkpoint(model, weights)
    return model


def _timm_model(name: str, input_shape: tuple[int, ...], pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(name.split(".")[0]):
        raise ClbenchError(f"unknown backbone '{name}' (small nets: {', '.join(SMALL_NETS)}; or any timm model name)")
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, in_chans=input_shape[0], **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        if not pretrained:
            raise
        raise ClbenchError(f"cannot fetch the pretrained weights of '{name}' from the hub ({type(exc).__name__}); "
                           f"download them elsewhere and give weights=PATH") from None
    model.out_dim = model.num_features
    return model


HEAD_PREFIXES = ("head.", "fc.", "classifier.", "head_dist.", "last_linear.")


def load_checkpoint(model: nn.Module, path: str) -> None:
    """Load a local checkpoint into `model` (safely: `weights_only=True`), ignoring classifier heads."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ClbenchError(f"weights file {file} not found")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the user's data problem, said in one line
        raise ClbenchError(f"cannot read weights file {file}: {type(exc).__name__}: {exc}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ClbenchError(f"weights file {file} does not fit this backbone: {len(missing)} missing keys "
                           f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")


def weights_id(name: str, weights: str) -> str:
    """A stable identifier of a backbone's weights, for rows and cache keys."""
    if not weights:
        return "none" if name == "flatten" else "random-init"
    if weights == "hub":
        return f"hub:{name}"
    digest = hashlib.sha256()
    with open(Path(weights).expanduser(), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


def input_config(model: nn.Module) -> dict[str, Any] | None:
    """timm's pretrained input size and normalisation of a timm model (None for small nets)."""
    cfg = getattr(model, "pretrained_cfg", None)
    if not cfg:
        return None
    import timm

    return timm.data.resolve_model_data_config(model)


def backbone_factory(default: str, input_shape: tuple[int, ...], weights: str = "") -> Callable[..., nn.Module]:
    """What `Context.backbone` is: `factory(name=None, **kwargs)` builds `name` (else `default`,
    with the run's `weights`) for inputs of `input_shape`."""

    def factory(name: str | None = None, **kwargs: Any) -> nn.Module:
        if name is None or name == default:
            kwargs.setdefault("weights", weights)
        return make_backbone(name or default, input_shape, **kwargs)

    return factory
