"""The plugin contract: the `Learner` base class, what it is given (`Context`, `ExperienceInfo`),
and how its hyper-parameters are declared and validated."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
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
from clbench.guard import one_line

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
    til_training: Literal["masked", "single-head"] | None = None
    """How a task-incremental run trains a classifier (the scenario's `til_training`): "masked", each
    sample within its task's classes (one head per task; `clbench.learners.task_heads.TaskMask`), or
    "single-head", over all classes. None where no task is given at training (every other protocol,
    or no task boundaries): one head over all classes."""
    task_classes: tuple[tuple[int, ...], ...] = ()
    """On a task-incremental stream (`til_training` set), the classes of each task id; else empty."""

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
class Step:
    """What `learn` may return about its step, for the run's per-epoch training log: `loss`, the 0-dim
    loss the step optimised (its value before the update), and optionally `scores`, the batch's N x
    num_classes training scores from the same forward pass (training accuracy is their argmax)."""

    loss: torch.Tensor
    scores: torch.Tensor | None = None


INT64 = (-(2**63), 2**63 - 1)
"""The integers a setting may hold: what a torch or NumPy int64 (a seed, a size) can represent."""


@dataclass(frozen=True)
class Range:
    """The numeric domain of a hyper-parameter or scenario setting, declared in its annotation:
    `lr: Annotated[float, Range(gt=0)] = 0.1`, `momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9`.

    Bounds are optional: `ge`/`gt` below, `le`/`lt` above. Every float must be finite unless its
    Range says `finite=False`; every int must fit in 64 bits. For a `tuple[float, ...]` the domain
    applies to each item. Any other `Annotated` metadata with `admits(value) -> bool` and a `str()`
    naming the accepted values is a domain too (the scenario's class order is one).
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True

    def admits(self, value: float) -> bool:
        """Whether `value` (of the declared type) is within the bounds."""
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def __str__(self) -> str:
        """The bounds in words: "> 0", "<= 5", "in [0, 1)"; "" when unbounded."""
        low = ("[", ">=", self.ge) if self.ge is not None else ("(", ">", self.gt) if self.gt is not None else None
        high = ("]", "<=", self.le) if self.le is not None else (")", "<", self.lt) if self.lt is not None else None
        if low and high:
            return f"in {low[0]}{low[2]}, {high[2]}{high[0]}"
        bound = low or high
        return f"{bound[1]} {bound[2]}" if bound else ""


@dataclass(frozen=True)
class Hyperparameter:
    """One keyword argument of a learner's `__init__` (or one scenario setting): its default, type,
    accepted values (`choices` of a `Literal`, or a `domain` such as a `Range`) and, for a
    `tuple[X, ...]`, the type `item` of its items."""

    name: str
    default: Any
    type: type
    choices: tuple[Any, ...] | None = None
    domain: Any = None
    item: type | None = None

    @classmethod
    def declared(cls, name: str, default: Any, annotation: Any) -> Hyperparameter:
        """The hyper-parameter an annotation declares: `Annotated[X, Range(...)]` gives the domain,
        `Literal[...]` the choices, `X | None` is X (None allowed when it is the default), another
        union accepts anything, `tuple[X, ...]` checks each item, other generics the container only."""
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is typing.Annotated:
            domain = next((m for m in annotation.__metadata__ if hasattr(m, "admits")), None)
            return dataclasses.replace(cls.declared(name, default, args[0]), domain=domain)
        if origin is Literal:
            return cls(name, default, type(args[0]), args)
        if origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            return cls.declared(name, default, members[0]) if len(members) == 1 else cls(name, default, object)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str, bool):
            return cls(name, default, tuple, item=args[0])
        if origin is not None:
            return cls(name, default, origin)
        return cls(name, default, annotation if isinstance(annotation, type) and annotation is not Any else object)

    def accepts(self) -> str:
        """The accepted values in words: "float > 0", "int in [0, 4096]", "sgd | adam", ..."""
        if self.choices:
            return " | ".join(map(str, self.choices))
        if self.domain is not None and not isinstance(self.domain, Range):
            return str(self.domain)
        kind = (self.item or self.type).__name__
        bounds = str(self.domain or "")
        if not bounds and (self.item or self.type) is float and (self.domain is None or self.domain.finite):
            kind = f"finite {kind}"
        kind = f"tuple of {kind}" if self.item else kind
        return f"{kind} {bounds}" if bounds else kind

    def describe(self) -> str:
        return f"{self.name}={self.default!r} ({self.accepts()})"

    def admits(self, value: Any) -> bool:
        """Whether a value of the declared type lies in the domain (finite floats, 64-bit ints,
        the choices, the declared domain; each item of a tuple, which must not be empty)."""
        if value is None:
            return self.default is None
        if self.choices is not None and value not in self.choices:
            return False
        kind, values = (self.item, value) if self.item else (self.type, (value,))
        if not values:
            return False
        for v in values:
            if kind is float and not math.isfinite(v) and getattr(self.domain, "finite", True):
                return False
            if kind is int and not INT64[0] <= v <= INT64[1]:
                return False
            if self.domain is not None and not self.domain.admits(v):
                return False
        return True


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_INVALID = object()


def _convert(kind: type, value: Any) -> Any:
    """`value` as a `kind` (command-line strings parsed, ints widened to float), or `_INVALID`."""
    try:
        if isinstance(value, str) and kind is not str:
            if kind is bool:
                return _BOOL_WORDS.get(value.strip().lower(), _INVALID)
            if kind in (int, float):
                value = kind(value)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
    except (ValueError, OverflowError):
        return _INVALID
    if kind is object or (isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))):
        return value
    return _INVALID


def coerce(owner: str, hp: Hyperparameter, value: Any, role: str = "hyper-parameter") -> Any:
    """`value` converted to the declared type (command-line strings too; a comma-separated string or
    a list for a tuple) and checked against its domain; else a one-line error naming `owner` (e.g.
    "learner 'nmc'"), the `role` and the accepted values."""
    converted = value
    if value is not None or hp.default is not None:
        if hp.item is not None:
            items = value.split(",") if isinstance(value, str) else value
            converted = tuple(_convert(hp.item, v) for v in items) if isinstance(items, (list, tuple)) else (_INVALID,)
            if _INVALID in converted:
                converted = _INVALID
        else:
            converted = _convert(hp.type, value)
    if converted is _INVALID or not hp.admits(converted):
        wide = " (64-bit at most)" if isinstance(converted, int) and not INT64[0] <= converted <= INT64[1] else ""
        raise ClbenchError(f"{owner}: {role} '{hp.name}' got {value!r}; accepted: {hp.accepts()}{wide}")
    return converted


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

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> torch.Tensor | Step | None:
        """Update on one mini-batch: images N x C x H x W (float, normalised) or features N x D.

        May return the step's loss (a 0-dim tensor, on the device: the runner averages it per epoch
        without a host sync per step; a Python number is taken too), or `Step(loss, scores)` to report
        training accuracy too; None (a learner without a loss, e.g. a nearest-mean classifier) reports
        nothing. Anything else stops the run with one line (`training_log.checked_step`)."""
        raise NotImplementedError

    def end_experience(self, info: ExperienceInfo) -> None:
        """Called after the last batch of an experience."""

    def initialise(self, x: torch.Tensor) -> None:
        """Optional: called once before the first experience (never again on resume: the state
        restored holds its effect) with the unlabelled inputs of the scenario's `init_set`, all at
        once, in the form `learn` gets (features N x D, or normalised unaugmented images). Only a
        learner that overrides it is given an initialisation set (see `initialises`)."""

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
    def initialises(cls) -> bool:
        """Whether the class implements `initialise` (the runner then builds its initialisation set)."""
        return cls.initialise is not Learner.initialise

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring."""
        return (inspect.getdoc(cls) or "").strip().splitlines()[0] if cls.__doc__ else ""


@functools.lru_cache(maxsize=None)
def _declared(cls: type) -> tuple[tuple[str, Hyperparameter], ...]:
    """The keyword arguments of the class's `__init__`; a `**kwargs` there inherits the
    hyper-parameters of the parent class it passes them on to. A declaration the registry cannot
    use (no default, a default outside its domain, an odd signature) is a one-line error."""
    owner = next(k for k in cls.__mro__ if "__init__" in vars(k))
    init = getattr(owner.__init__, "__wrapped__", owner.__init__)
    where = f"learner class '{cls.__module__}:{cls.__qualname__}'"
    try:
        params = list(inspect.signature(init).parameters.values())
        hints = typing.get_type_hints(init, include_extras=True)
    except Exception as exc:  # not a function, or annotations that do not evaluate
        raise ClbenchError(f"{where}: cannot read the signature of __init__: {one_line(exc)}") from None
    if len(params) < 2 or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params[:2]):
        raise ClbenchError(f"{where}: __init__ must take (self, context, *, hyper-parameters with defaults), "
                           f"not ({', '.join(map(str, params))})")
    out: list[tuple[str, Hyperparameter]] = []
    for param in params[2:]:
        if param.kind == param.VAR_KEYWORD and owner is not Learner:
            parent = next(k for k in owner.__mro__[1:] if issubclass(k, Learner))
            out.extend((n, hp) for n, hp in _declared(parent) if n not in dict(out))
        if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if param.kind == param.POSITIONAL_ONLY:
            raise ClbenchError(f"{where}: hyper-parameter '{param.name}' is positional-only; declare it as a keyword")
        if param.default is inspect.Parameter.empty:
            raise ClbenchError(f"{where}: hyper-parameter '{param.name}' has no default; every hyper-parameter needs one")
        hp = Hyperparameter.declared(param.name, param.default, hints.get(param.name, type(param.default)))
        try:
            coerce(where, hp, param.default)
        except ClbenchError:
            raise ClbenchError(f"{where}: the default {param.default!r} of hyper-parameter '{param.name}' is not "
                               f"accepted by its declaration ({hp.accepts()})") from None
        out.append((param.name, hp))
    return tuple(out)


def validate(cls: type[Learner], given: dict[str, Any]) -> dict[str, Any]:
    """The full configuration (defaults filled in) for `given`, or a one-line error."""
    declared = cls.hyperparameters()
    unknown = sorted(set(given) - set(declared))
    if unknown:
        accepted = ", ".join(hp.describe() for hp in declared.values()) or "none"
        raise ClbenchError(f"learner '{cls.name}' has no hyper-parameter {', '.join(map(repr, unknown))}; accepted: {accepted}")
    return {k: coerce(f"learner '{cls.name}'", hp, given.get(k, hp.default)) for k, hp in declared.items()}


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


PREFIXES: dict[str, str] = {"avalanche": "clbench.interop.avalanche:strategy_learner"}
"""Learner-name prefixes -> the "module:function" that turns the rest of the name into a learner class:
`avalanche:Naive` is Avalanche's `Naive` strategy as a learner. The module is imported only when its
prefix is used (optional dependencies stay optional)."""


def get_learner(spec: str) -> type[Learner]:
    """A learner class by registered name, by a prefixed name (`PREFIXES`: `avalanche:Naive`), or by
    `package.module:ClassName`."""
    known = available_learners()
    prefix, _, rest = spec.partition(":")
    if spec not in known and prefix in PREFIXES:
        obj = _load(spec, PREFIXES[prefix])(rest)
        target = spec
    else:
        target = known.get(spec, spec if ":" in spec else None)
        if target is None:
            raise ClbenchError(f"unknown learner '{spec}' (known: {', '.join(known)}; "
                               f"{', '.join(f'{p}:NAME' for p in PREFIXES)}; or give package.module:ClassName)")
        if spec not in known and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # like `python -m`: a module in the working directory is found
        obj = _load(spec, target)
    if not (isinstance(obj, type) and issubclass(obj, Learner)):
        raise ClbenchError(f"'{target}' is not a subclass of clbench.Learner")
    if not obj.name:
        raise ClbenchError(f"learner class '{target}' does not set its `name` attribute")
    if obj.wants not in ("images", "features"):
        raise ClbenchError(f"learner '{obj.name}': wants must be 'images' or 'features', not {obj.wants!r}")
    obj.hyperparameters()  # a declaration the registry cannot use fails here, in one line
    return obj


def _load(spec: str, target: str) -> Any:
    """The object `target` ("module:attribute") names, or a one-line error about learner `spec`."""
    import importlib

    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ClbenchError:
        raise
    except (Exception, SystemExit) as exc:  # a plugin's import may fail in any way: a syntax error, its own raise
        raise ClbenchError(f"cannot load learner '{spec}': importing module '{module_name}' failed with "
                           f"{one_line(exc)}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ClbenchError(f"cannot load learner '{spec}': module '{module_name}' has no attribute '{attr}'")
    return obj
