"""An Avalanche strategy as a clbench learner: `--learner avalanche:Naive` (Replay, EWC, LwF, ...)."""

from __future__ import annotations

import functools
import inspect
import types
import typing
import warnings
from typing import Annotated, Any, ClassVar, Literal

import torch
from torch import nn

from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
from avalanche.benchmarks.scenarios.generic_scenario import EagerCLStream
from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset
from avalanche.training import supervised
from avalanche.training.templates import SupervisedTemplate

from clbench.checkpoint import random_states, set_random_states
from clbench.errors import ClbenchError
from clbench.learner import Context, ExperienceInfo, Learner, Range

GIVEN = frozenset({"model", "optimizer", "criterion", "train_mb_size", "train_epochs", "eval_mb_size", "device",
                   "plugins", "evaluator", "eval_every", "peval_mode"})
"""Strategy arguments the bridge gives itself: the network and its optimizer and loss, the data loop (the
scenario's batch size and epochs), the device, and no evaluation or logging (clbench evaluates)."""

_SCALARS = (bool, int, float, str)


def _quiet() -> warnings.catch_warnings:
    """Avalanche's notes to its own users (deprecations, "no loggers"), which its helpers force to "always"
    show, recorded and dropped: a clbench run prints its own progress."""
    return warnings.catch_warnings(record=True)


class _Collected:
    """The batches of one experience as the runner feeds them: its samples once (the first epoch's), how
    many were fed in all (epochs = fed / samples) and the batch size."""

    def __init__(self, n_samples: int) -> None:
        self.n_samples, self.fed, self.batch = n_samples, 0, 0
        self.x: list[torch.Tensor] = []
        self.y: list[torch.Tensor] = []

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.batch = self.batch or len(y)
        keep = max(0, min(len(y), self.n_samples - self.fed))
        if keep:
            self.x.append(x[:keep].detach())
            self.y.append(y[:keep].detach())
        self.fed += len(y)

    def training(self) -> dict[str, Any] | None:
        """What to train on (see `AvalancheLearner._train`); None if nothing was fed."""
        if not self.x:
            return None
        return {"x": torch.cat(self.x), "y": torch.cat(self.y), "epochs": max(1, round(self.fed / self.n_samples)),
                "batch": self.batch}


class AvalancheLearner(Learner):
    """Base of the learners `strategy_learner` makes: an Avalanche strategy (`strategy_class`) training the
    run's backbone plus a linear head over all classes, with cross-entropy and the optimizer of
    `finetune` (lr, optimizer, momentum, weight_decay), on clbench's scenarios.

    Between `begin_experience` and `end_experience` the runner's batches are collected; at
    `end_experience` the strategy trains on them as one Avalanche experience, in its own loop (its
    plugins, replay data loaders, regularisers, ...) with the scenario's batch size and epochs (the
    batches it draws are its own shuffles of the experience's samples; the scenario's augmentation, if
    any, is the first epoch's). A batch outside any experience (task-free scenarios) is an experience
    of its own, as in Avalanche's online streams. Task labels are 0: the strategy never sees task ids, and
    trains one head over all classes, so a task-incremental scenario needs `til_training = "single-head"`
    (masked training is refused rather than mislabelled).

    An Avalanche strategy keeps its state in plugin objects that are no plain tensors, so `state_dict`
    holds the network's initial weights and every training so far (samples, epochs, batch size, random
    states); `load_state_dict` replays them on a fresh strategy: the same state exactly, at the cost of
    retraining and of keeping the training inputs seen so far.
    """

    wants = "images"
    online = True
    strategy_class: ClassVar[type[SupervisedTemplate]]
    strategy_arguments: ClassVar[tuple[str, ...]] = ()
    required: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: Context, *, lr: Annotated[float, Range(gt=0)] = 0.05,
                 optimizer: Literal["sgd", "adam"] = "sgd", momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9,
                 weight_decay: Annotated[float, Range(ge=0)] = 0.0, **arguments: Any) -> None:
        super().__init__(context)
        if context.til_training == "masked":
            raise ClbenchError(f"learner '{self.name}': Avalanche's strategies train one head over all classes, so they "
                               f"cannot train task-incremental masked to each task's classes; give --set "
                               f"til_training=single-head")
        missing = [name for name in self.required if arguments.get(name) is None]
        if missing:
            raise ClbenchError(f"learner '{self.name}': Avalanche's {self.strategy_class.__name__} needs "
                               f"{', '.join(missing)} (no default); give it with --set {missing[0]}=VALUE")
        self.optimizer_settings = {"lr": lr, "optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay}
        self.arguments = arguments
        backbone = context.backbone()
        self.net = nn.Sequential(backbone, nn.Linear(backbone.out_dim, context.num_classes)).to(context.device)
        self.initial = {k: v.clone() for k, v in self.net.state_dict().items()}
        self.strategy = self._new_strategy()
        self.trainings: list[dict[str, Any]] = []
        self.open: _Collected | None = None

    def _new_strategy(self) -> SupervisedTemplate:
        s = self.optimizer_settings
        if s["optimizer"] == "sgd":
            optimizer = torch.optim.SGD(self.net.parameters(), lr=s["lr"], momentum=s["momentum"],
                                        weight_decay=s["weight_decay"])
        else:
            optimizer = torch.optim.Adam(self.net.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
        try:
            with _quiet():
                return self.strategy_class(model=self.net, optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
                                           device=self.device, evaluator=None, eval_every=-1, **self.arguments)
        except (ValueError, AssertionError, TypeError) as exc:
            settings = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
            raise ClbenchError(f"learner '{self.name}': Avalanche's {self.strategy_class.__name__} refused its "
                               f"arguments ({settings}): {' '.join(str(exc).split()) or type(exc).__name__}") from None

    # ---- the contract -------------------------------------------------------------------------
    def begin_experience(self, info: ExperienceInfo) -> None:
        self.open = _Collected(info.n_samples)

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> None:
        if self.open is None:  # task-free: no boundaries, every batch is an experience
            self._train({"x": x.detach(), "y": y.detach(), "epochs": 1, "batch": len(y)})
        else:
            self.open.add(x, y)

    def end_experience(self, info: ExperienceInfo) -> None:
        training, self.open = self.open.training() if self.open else None, None
        if training is not None:
            self._train(training)

    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        model = self.strategy.model
        model.eval()
        return model(x)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.strategy.model}

    def state_dict(self) -> dict[str, Any]:
        return {"initial": self.initial, "trainings": self.trainings}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["initial"])
        self.initial = {k: v.clone() for k, v in state["initial"].items()}
        self.strategy, self.trainings, self.open = self._new_strategy(), [], None
        for training in state["trainings"]:
            set_random_states(training["random"])
            self._train({k: v for k, v in training.items() if k != "random"})

    # ---- training -----------------------------------------------------------------------------
    def _train(self, training: dict[str, Any]) -> None:
        """One Avalanche experience made of `training["x"]`, `["y"]`, trained for `["epochs"]` epochs in
        batches of `["batch"]`; recorded with the random states it started from."""
        self.trainings.append({**training, "random": random_states()})
        x, y = training["x"], training["y"]
        data = _make_taskaware_tensor_classification_dataset(x, y, targets=y.cpu(), task_labels=0)
        experience = DatasetExperience(dataset=data, current_experience=len(self.trainings) - 1)
        experience.origin_stream = EagerCLStream("train", [experience], set_stream_info=False)
        self.strategy.train_mb_size, self.strategy.train_epochs = training["batch"], training["epochs"]
        with _quiet():
            self.strategy.train(experience, eval_streams=[], shuffle=True, pin_memory=False, num_workers=0)


# ---- the registry: avalanche:NAME ---------------------------------------------------------------
def supported_strategies() -> dict[str, type[SupervisedTemplate]]:
    """Avalanche's supervised strategies that take a model, an optimizer and a criterion, by name."""
    out = {}
    for name in sorted(dir(supervised)):
        obj = getattr(supervised, name)
        if isinstance(obj, type) and issubclass(obj, SupervisedTemplate) and obj is not SupervisedTemplate:
            if {"model", "optimizer", "criterion"} <= set(inspect.signature(obj.__init__).parameters):
                out[name] = obj
    return out


def _scalar(annotation: Any, default: Any) -> type | None:
    """The plain type (bool, int, float, str) a strategy argument takes from a command line, or None:
    its annotation's (the first plain member of a union), else its default's; a default of another plain
    type than the annotation says (`temperature: int = 0.1`) wins."""
    kind = annotation if annotation in _SCALARS else None
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kind = next((a for a in typing.get_args(annotation) if a in _SCALARS), None)
    if type(default) in _SCALARS and not (kind is float and type(default) is int):
        return type(default) if kind is None or not isinstance(default, kind) else kind
    return kind


def _declarations(strategy: type) -> tuple[dict[str, inspect.Parameter], tuple[str, ...]]:
    """The strategy's own arguments as keyword parameters clbench can validate, and the required ones
    (no default in Avalanche: None here, an error at construction unless given). Arguments that take no
    plain value (modules, callables, lists) keep Avalanche's default; a required one is a one-line error."""
    params, required = {}, []
    for p in inspect.signature(strategy.__init__).parameters.values():
        if p.name == "self" or p.name in GIVEN or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        default = None if p.default is p.empty else p.default
        kind = _scalar(p.annotation, default)
        if kind is None and p.default is p.empty:
            raise ClbenchError(f"learner 'avalanche:{strategy.__name__}' is not supported: its argument '{p.name}' "
                               f"({p.annotation}) takes no value a command line can give")
        if kind is None:
            continue
        if p.default is p.empty:
            required.append(p.name)
        annotation = kind | None if default is None else kind
        params[p.name] = inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                           annotation=annotation)
    return params, tuple(required)


@functools.lru_cache(maxsize=None)
def strategy_learner(name: str) -> type[AvalancheLearner]:
    """Avalanche's strategy `name` (from `avalanche.training.supervised`) as a clbench learner class named
    `avalanche:NAME`: its plain constructor arguments are hyper-parameters, beside the optimizer's (one
    of the strategy's own arguments shadows an optimizer setting of the same name)."""
    strategies = supported_strategies()
    if name not in strategies:
        raise ClbenchError(f"unknown Avalanche strategy '{name}' (known: {', '.join(strategies)})")
    strategy = strategies[name]
    own, required = _declarations(strategy)
    base = inspect.signature(AvalancheLearner.__init__.__wrapped__).parameters
    optimizer = {n: p for n, p in base.items() if p.kind == p.KEYWORD_ONLY and n not in own}
    params = [base["self"], base["context"], *optimizer.values(), *own.values()]

    def __init__(self: AvalancheLearner, context: Context, **hyperparameters: Any) -> None:
        given = {k: v for k, v in hyperparameters.items() if k in optimizer}
        AvalancheLearner.__init__(self, context, **given,
                                  **{k: v for k, v in hyperparameters.items() if k in own})

    __init__.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    __init__.__annotations__ = {p.name: p.annotation for p in params[2:]}
    summary = (inspect.getdoc(strategy) or name).strip().splitlines()[0]
    doc = f"Avalanche's {name} strategy: {summary}\n\n" + (AvalancheLearner.__doc__ or "")
    return type(f"Avalanche{name}", (AvalancheLearner,), {
        "__init__": __init__, "__doc__": doc, "__module__": __name__, "name": f"avalanche:{name}",
        "strategy_class": strategy, "strategy_arguments": tuple(own), "required": required})
