"""The plugin contract: the `Learner` base class, what it is given (`Context`, `ExperienceInfo`),
and how its hyper-parameters are declared and validated."""

from __future__ import annotations

import functools
import inspect
import os
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Literal, TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from clbench.errors import ClbenchError

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """What the runner tells a learner about the run.

    `input_shape` is (C, H, W) for `wants = "images"` and (D,) for `wants = "features"`;
    `backbone(name=None)` builds a fresh network (the run's backbone by default) for the
    scenario's images, whatever the learner wants; its output size is its `out_dim` attribute.
    """

    device: torch.device
    num_classes: int
    input_shape: tuple[int, ...]
    seed: int
    backbone: Callable[..., nn.Module]
    n_experiences: int = 1
    progress: bool = True
    """Whether long work inside the learner may show a progress bar (`clbench run --no-progress`: no)."""

    @property
    def feature_dim(self) -> int:
        """The feature dimension, for `wants = "features"` learners."""
        return self.input_shape[0]

    def progress_bar(self, iterable: Iterable[T], desc: str, unit: str = "it", total: int | None = None,
                     initial: int = 0) -> tqdm:
        """A tqdm bar over `iterable` for long work (a learner's meta-training, the runner's experiences),
        shown on a terminal unless the run asked for no progress; it disappears when done."""
        return tqdm(iterable, desc=desc, unit=unit, total=total, initial=initial, leave=False,
                    disable=None if self.progress else True)


@dataclass(frozen=True)
class ExperienceInfo:
    """What a learner is told at an experience boundary."""

    index: int
    classes: tuple[int, ...]
    task: int | None
    n_samples: int
    n_experiences: int


@dataclass(frozen=True)
class Hyperparameter:
    """One keyword argument of a learner's `__init__`: its default, type and accepted values."""

    name: str
    default: Any
    type: type
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        kind = "|".join(map(str, self.choices)) if self.choices else self.type.__name__
        return f"{self.name}={self.default!r} ({kind})"


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class Learner:
    """Base class of every learner, built-in or plugin.

    Subclass it, set the class attributes, declare hyper-parameters as keyword arguments with
    defaults (type-annotated; `Literal[...]` for a fixed set of choices), call
    `super().__init__(context)`, and implement `learn` and `predict`. Register the class under the
    entry-point group `clbench.learners`, or name it as `package.module:ClassName`.
    """

    name: ClassVar[str] = ""
    wants: ClassVar[Literal["images", "features"]] = "images"
    needs_task_ids: ClassVar[bool] = False
    online: ClassVar[bool] = False
    mergeable: ClassVar[bool] = False
    cumulative: ClassVar[bool] = False
    """Runner capability: if True, each experience is trained on the union of all data seen so far."""

    def __init__(self, context: Context, **hyperparameters: Any) -> None:
        if "config" not in vars(self):  # a subclass without its own __init__: validate here
            self.config: dict[str, Any] = validate(type(self), hyperparameters)
        self.context = context

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _validating(cls, cls.__dict__["__init__"])

    @property
    def device(self) -> torch.device:
        return self.context.device

    # ---- the contract -------------------------------------------------------------------------
    def begin_experience(self, info: ExperienceInfo) -> None:
        """Called before the first batch of an experience (task-free learners may ignore it)."""

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> None:
        """Update on one mini-batch: images N x C x H x W (float, normalised) or features N x D."""
        raise NotImplementedError

    def end_experience(self, info: ExperienceInfo) -> None:
        """Called after the last batch of an experience."""

    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        """Scores over all classes of the scenario, N x num_classes (higher is better)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the learner: tensors and plain Python values only.

        Like `nn.Module.state_dict`, the tensors may share memory with the live learner: whoever
        keeps a snapshot copies it (the runner does).
        """
        return {name: module.state_dict() for name, module in self.modules().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        for name, module in self.modules().items():
            module.load_state_dict(state[name])

    def merge(self, others: list[Learner]) -> None:
        """Fold other learners of the same kind into this one (federated reconnaissance)."""
        raise ClbenchError(f"learner '{self.name}' cannot merge (mergeable = False)")

    # ---- introspection used by the runner -----------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """The learner's torch modules, by attribute name (used for state and parameter counts)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, nn.Module)}

    def n_parameters(self) -> int:
        """Number of distinct parameters of the learner's modules."""
        seen = {id(p): p.numel() for m in self.modules().values() for p in m.parameters()}
        return sum(seen.values())

    @classmethod
    def hyperparameters(cls) -> dict[str, Hyperparameter]:
        """The declared hyper-parameters, in declaration order."""
        return dict(_declared(cls))

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring."""
        return (inspect.getdoc(cls) or "").strip().splitlines()[0] if cls.__doc__ else ""


@functools.lru_cache(maxsize=None)
def _declared(cls: type) -> tuple[tuple[str, Hyperparameter], ...]:
    """The keyword arguments of the class's `__init__`; a `**kwargs` there inherits the
    hyper-parameters of the parent class it passes them on to."""
    owner = next(k for k in cls.__mro__ if "__init__" in vars(k))
    init = getattr(owner.__init__, "__wrapped__", owner.__init__)
    hints = typing.get_type_hints(init)
    out = []
    for param in list(inspect.signature(init).parameters.values())[2:]:
        if param.kind == param.VAR_KEYWORD and owner is not Learner:
            parent = next(k for k in owner.__mro__[1:] if issubclass(k, Learner))
            out.extend((n, hp) for n, hp in _declared(parent) if n not in dict(out))
        if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if param.default is inspect.Parameter.empty:
            raise TypeError(f"{cls.__name__}: hyper-parameter '{param.name}' needs a default")
        kind, choices = annotation_kind(hints.get(param.name, type(param.default)))
        out.append((param.name, Hyperparameter(param.name, param.default, kind, choices)))
    return tuple(out)


def annotation_kind(annotation: Any) -> tuple[type, tuple[Any, ...] | None]:
    """The base type and the `Literal` choices (if any) of a type annotation."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), choices
    if origin in (typing.Union, types.UnionType):  # Optional[X] / X | None: the first non-None member
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return annotation_kind(args[0]) if len(args) == 1 else (object, None)
    if origin is not None:  # tuple[int, ...], list[str], ...: check the container type only
        return origin, None
    return (annotation if isinstance(annotation, type) and annotation is not Any else object), None


def coerce(learner: str, hp: Hyperparameter, value: Any) -> Any:
    """Check (and convert a command-line string to) the declared type; one-line error otherwise."""
    try:
        if isinstance(value, str) and hp.type is not str:
            if hp.type is bool:
                value = _BOOL_WORDS[value.lower()]
            elif hp.type in (int, float):
                value = hp.type(value)
        if hp.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = hp.type is object or (isinstance(value, hp.type) and not (hp.type is int and isinstance(value, bool)))
        if value is None and hp.default is None:
            ok = True
    except (KeyError, ValueError, TypeError):
        ok = False
    if ok and hp.choices is not None and value not in hp.choices:
        ok = False
    if not ok:
        accepted = " | ".join(map(str, hp.choices)) if hp.choices else hp.type.__name__
        raise ClbenchError(f"learner '{learner}': hyper-parameter '{hp.name}' got {value!r}; accepted: {accepted}")
    return value


def validate(cls: type[Learner], given: dict[str, Any]) -> dict[str, Any]:
    """The full configuration (defaults filled in) for `given`, or a one-line error."""
    declared = cls.hyperparameters()
    unknown = sorted(set(given) - set(declared))
    if unknown:
        accepted = ", ".join(hp.describe() for hp in declared.values()) or "none"
        raise ClbenchError(f"learner '{cls.name}' has no hyper-parameter {', '.join(map(repr, unknown))}; accepted: {accepted}")
    return {k: coerce(cls.name, hp, given.get(k, hp.default)) for k, hp in declared.items()}


def _validating(cls: type[Learner], init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a subclass `__init__` so the outermost call validates against the instance's own class."""

    @functools.wraps(init)
    def __init__(self: Learner, context: Context, **hyperparameters: Any) -> None:
        if "config" not in vars(self):
            self.config = validate(type(self), hyperparameters)
            hyperparameters = {k: v for k, v in self.config.items() if k in cls.hyperparameters()}
        init(self, context, **hyperparameters)

    return __init__


# ---- the registry: built-in and plugin learners are found the same way ---------------------------
ENTRY_POINT_GROUP = "clbench.learners"


def available_learners() -> dict[str, str]:
    """Registered learner names -> "module:Class" (from the `clbench.learners` entry points)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)}


def get_learner(spec: str) -> type[Learner]:
    """A learner class by registered name or by `package.module:ClassName`."""
    import importlib

    known = available_learners()
    target = known.get(spec, spec if ":" in spec else None)
    if target is None:
        raise ClbenchError(f"unknown learner '{spec}' (known: {', '.join(known)}; or give package.module:ClassName)")
    module_name, _, attr = target.partition(":")
    if spec not in known and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: a module in the working directory is found
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ClbenchError(f"cannot load learner '{spec}' from '{target}': {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, Learner)):
        raise ClbenchError(f"'{target}' is not a subclass of clbench.Learner")
    if not obj.name:
        raise ClbenchError(f"learner class '{target}' does not set its `name` attribute")
    if obj.wants not in ("images", "features"):
        raise ClbenchError(f"learner '{obj.name}': wants must be 'images' or 'features', not {obj.wants!r}")
    return obj
