"""The model factory: the literature's small networks and any timm model, all as feature
extractors with an `out_dim` attribute."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from clbench.augment import resize
from clbench.errors import ClbenchError
from clbench.guard import one_line
from clbench.nets.norm import swap_norm


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
    "reduced_resnet18_nf64": lambda shape, kwargs: _small("reduced_resnet18")(shape, {"nf": 64, **kwargs}),
}
"""`reduced_resnet18` is GEM's nf = 20; `reduced_resnet18_nf64` the full width of Mammoth, ER-ACE and AdaB²N."""


def make_backbone(name: str, input_shape: tuple[int, ...], weights: str = "",
                  input_norm: tuple[Sequence[float], Sequence[float]] | None = None, role: str = "backbone",
                  norm: str = "bn", norm_options: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
    """A feature extractor by name for inputs of `input_shape` (C x H x W): one of `SMALL_NETS`, or a
    timm model name (a `TimmBackbone`: created without its classifier head, `out_dim` = its number
    of features).

    `weights`: "" random initialisation; "hub" timm's pretrained weights (see `clbench.hub`);
    otherwise the path of a local checkpoint (a state dict in a `torch.save` or `.safetensors`
    file; classifier-head keys are ignored, every other key must match). `input_norm`: the (mean,
    std) the inputs arrive normalised with; a timm model maps them to its pretrained statistics.
    `role` ("backbone" or "encoder") names the setting in error messages. `norm`: the network's
    normalisation, "bn" as built or "adab2n" (every BatchNorm2d swapped by `clbench.nets.norm.swap_norm`,
    after the weights are loaded, with `norm_options` such as n_tasks and kappa).

    The network is tried once on a zero input of that shape: any failure to build, load or run it
    is one `ClbenchError` line naming it.
    """
    shape = tuple(input_shape)
    if weights == "hub" and name in SMALL_NETS:
        raise ClbenchError(f"{role} '{name}' has no hub weights; give weights=PATH to a checkpoint")
    if name not in SMALL_NETS and not _timm_knows(name):
        raise ClbenchError(f"unknown {role} '{name}' (small nets: {', '.join(SMALL_NETS)}; or any timm model name)")
    try:
        if name in SMALL_NETS:
            model = SMALL_NETS[name](shape, dict(kwargs))
        else:
            model = TimmBackbone.create(name, shape, weights == "hub", input_norm, kwargs)
    except ClbenchError:
        raise
    except Exception as exc:  # a bad keyword, an impossible configuration, out of memory
        raise ClbenchError(f"cannot build {role} '{name}' for {shape} inputs: {one_line(exc)}; "
                           f"check the name and its arguments, or choose another {role}") from None
    if weights and weights != "hub":
        load_checkpoint(model.model if isinstance(model, TimmBackbone) else model, weights, f"{role} '{name}'")
    swap_norm(model, norm, **(norm_options or {}))
    _try_forward(model, shape, f"{role} '{name}'")
    return model


def _timm_knows(name: str) -> bool:
    import timm

    return timm.is_model(name.split(".")[0])


class TimmBackbone(nn.Module):
    """A timm model fed the run's images the way its pretrained weights expect: grayscale replicated
    to its `channels` (3), the run's normalisation (`input_norm`) mapped to its pretrained mean and std,
    and, when it cannot take the run's image size (a ViT, or 8 x 8 images), resized to its input size."""

    def __init__(self, model: nn.Module, channels: int,
                 input_norm: tuple[Sequence[float], Sequence[float]] | None) -> None:
        super().__init__()
        self.model, self.channels = model, channels
        self.out_dim = model.num_features
        self.size = 0  # 0: inputs keep their size
        scale = shift = None
        if input_norm is not None:  # x_run * std_run + mean_run = x / 255 = x_model * std + mean
            cfg = self.config()
            mean, std = (torch.tensor(v, dtype=torch.float32) for v in input_norm)
            to_mean, to_std = torch.tensor(cfg["mean"]), torch.tensor(cfg["std"])
            scale, shift = (std / to_std).view(1, -1, 1, 1), ((mean - to_mean) / to_std).view(1, -1, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    @classmethod
    def create(cls, name: str, input_shape: tuple[int, ...], pretrained: bool,
               input_norm: tuple[Sequence[float], Sequence[float]] | None, kwargs: dict[str, Any]) -> TimmBackbone:
        """`timm.create_model(name)` headless; grayscale inputs get the model's own (3) channels."""
        import timm

        from clbench.hub import pretrained_overlay

        kwargs = dict(kwargs)
        kwargs.setdefault("in_chans", 3 if input_shape[0] == 1 else input_shape[0])
        if pretrained:
            kwargs.setdefault("pretrained_cfg_overlay", pretrained_overlay(name))
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
        return cls(model, kwargs["in_chans"], input_norm)

    def config(self) -> dict[str, Any]:
        """timm's pretrained input size, mean and std of the model."""
        import timm

        return timm.data.resolve_model_data_config(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = x.expand(-1, self.channels, -1, -1)  # grayscale replicated; a no-op when the channels agree
        if self.scale is not None:
            x = x * self.scale + self.shift
        return self.model(resize(x, self.size))


def _try_forward(model: nn.Module, shape: tuple[int, ...], what: str) -> None:
    """Run `model` once on zeros of `shape`; a `TimmBackbone` that cannot take that size gets its
    inputs resized to its pretrained input size instead. Failure is one ClbenchError line."""
    error = _forward_error(model, shape)
    if error and isinstance(model, TimmBackbone):
        size = int(model.config()["input_size"][-1])
        if size > min(shape[1:]):
            model.size = size
            if not _forward_error(model, shape):
                return
            model.size = 0
    if error:
        raise ClbenchError(f"{what} cannot run on {shape} inputs: {error}; check its arguments and image_size, "
                           f"or choose another network")


@torch.no_grad()
def _forward_error(model: nn.Module, shape: tuple[int, ...]) -> str:
    training = model.training
    try:
        model.eval()(torch.zeros(1, *shape))
    except ClbenchError:  # the network's own one-line message
        raise
    except Exception as exc:  # whatever the network raises on this input is reported, not shown as a traceback
        return one_line(exc)
    finally:
        model.train(training)
    return ""


HEAD_PREFIXES = ("head.", "fc.", "classifier.", "head_dist.", "last_linear.")


def weights_file(weights: str) -> Path:
    """The checkpoint file that `weights` names, if it is a readable file; else one ClbenchError line."""
    file = Path(weights).expanduser()
    usage = "give weights=PATH to a checkpoint file, weights=hub for timm's pretrained weights, or weights= for none"
    try:
        if file.is_dir():
            raise ClbenchError(f"weights={weights} is a folder, not a checkpoint; {usage}")
        if not file.is_file():
            raise ClbenchError(f"weights file {file} not found; {usage}")
        with open(file, "rb"):
            pass
    except OSError as exc:
        raise ClbenchError(f"cannot read weights file {file}: {exc.strerror or exc}; {usage}") from None
    return file


def load_checkpoint(model: nn.Module, path: str, what: str = "this network") -> None:
    """Load a local checkpoint into `model` (safely: `weights_only=True`), ignoring classifier heads.
    A file that is not a state dict, or whose keys or shapes do not fit `model`, is one ClbenchError line."""
    file = weights_file(path)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the user's data problem, said in one line
        raise ClbenchError(f"weights file {file} is not a checkpoint ({type(exc).__name__}); give a file written by "
                           f"torch.save(model.state_dict(), PATH) or a .safetensors file") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ClbenchError(f"weights file {file} holds a {type(state).__name__}, not a state dict of tensors; "
                           f"save one with torch.save(model.state_dict(), PATH)")
    state = {str(k).removeprefix("module."): v for k, v in state.items() if not str(k).startswith(HEAD_PREFIXES)}
    own = model.state_dict()
    misfits = {"missing": [k for k in own if k not in state], "unexpected": [k for k in state if k not in own],
               "of another shape": [k for k in state if k in own and state[k].shape != own[k].shape]}
    if any(misfits.values()):
        found = ", ".join(f"{len(keys)} {kind} (e.g. {', '.join(keys[:2])})" for kind, keys in misfits.items() if keys)
        raise ClbenchError(f"weights file {file} does not fit {what}: keys {found}; give a checkpoint of this network")
    model.load_state_dict(state, strict=False)


def weights_id(name: str, weights: str) -> str:
    """A stable identifier of a backbone's weights, for rows and cache keys."""
    if not weights:
        return "none" if name == "flatten" else "random-init"
    if weights == "hub":
        return f"hub:{name}"
    digest = hashlib.sha256()
    with open(weights_file(weights), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


def input_config(model: nn.Module) -> dict[str, Any] | None:
    """timm's pretrained input size and normalisation of a `TimmBackbone` (None for small nets)."""
    return model.config() if isinstance(model, TimmBackbone) else None


class BackboneFactory:
    """What `Context.backbone` is: `factory(name=None, **kwargs)` builds `name` (else `default`, with
    the run's `weights`) for inputs of `input_shape` that arrive normalised with `input_norm` (mean,
    std; None when unknown), with any `make_backbone` keyword (e.g. `norm="adab2n"`)."""

    def __init__(self, default: str, input_shape: tuple[int, ...], weights: str = "",
                 input_norm: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
        self.default, self.input_shape, self.weights, self.input_norm = default, tuple(input_shape), weights, input_norm

    def __call__(self, name: str | None = None, **kwargs: Any) -> nn.Module:
        if name is None or name == self.default:
            kwargs.setdefault("weights", self.weights)
        kwargs.setdefault("input_norm", self.input_norm)
        return make_backbone(name or self.default, self.input_shape, **kwargs)


def backbone_factory(default: str, input_shape: tuple[int, ...], weights: str = "",
                     input_norm: tuple[Sequence[float], Sequence[float]] | None = None) -> BackboneFactory:
    """The run's `BackboneFactory` (see there)."""
    return BackboneFactory(default, input_shape, weights, input_norm)
