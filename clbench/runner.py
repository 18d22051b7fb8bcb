"""The standardized loop: drives one learner through one scenario, evaluates, times.

The runner never knows which learner it drives: it only uses the `Learner` contract.
"""

from __future__ import annotations

import contextlib
import copy
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch

from clbench.backbones import backbone_factory
from clbench.checkpoint import Checkpoint, random_states, set_random_states
from clbench.device import peak_memory_mb, reset_peak_memory, resolve_device, synchronize
from clbench.episode_eval import evaluate_episodes
from clbench.errors import ClbenchError
from clbench.evaluation import Evaluator
from clbench.feature_cache import FeatureCache
from clbench.guard import LearnerFailed, guard, one_line
from clbench.inputs import Inputs
from clbench.learner import Context, ExperienceInfo, Learner
from clbench.observer import Evaluation, RunObserver
from clbench.precision import autocast, with_precision
from clbench.protocols import Experience, Stream
from clbench.scenario import Scenario, ScenarioSpec
from clbench.training_log import EpochMeter, EpochRecord, checked_step


@dataclass(frozen=True)
class RunResult:
    """Everything a run measured; `leaderboard.make_row` turns it into a row."""

    learner: str
    config: dict[str, Any]
    seed: int
    accuracy_matrix: list[list[float]]
    accuracy_curve: list[float]
    untrained_accuracy: list[float] | None
    episode_accuracies: list[float] | None
    client_accuracies: list[list[float]] | None
    train_seconds: float
    eval_seconds: float
    feature_seconds: float
    feature_cache: str
    weights: str
    samples_seen: int
    peak_memory_mb: float
    state_mb: float
    n_parameters: int
    device: str
    init_set: str = ""
    """What the learner's `initialise` was given (the spec's `init_set`); "" for a learner without one."""
    precision: str = "fp32"
    """The resolved precision `learn`, `predict` and the frozen encoder ran in ("bf16" or "fp32")."""
    training_log: tuple[EpochRecord, ...] = ()
    """Per training phase and epoch, what `learn` reported (`clbench.training_log`)."""
    class_il_matrix: list[list[float | None]] | None = None
    """Class-IL accuracy matrix where the protocol has both scorings (`evaluation.SCORINGS`), else None."""
    task_il_matrix: list[list[float | None]] | None = None
    """Task-IL accuracy matrix likewise (None in a cell not scored)."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def state_megabytes(state: Any) -> float:
    """Size of every tensor in a (nested) state dict, in MiB."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size() / 2**20
    if isinstance(state, dict):
        return sum(state_megabytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_megabytes(v) for v in state)
    return 0.0


def run(
    scenario: Scenario,
    learner_cls: type[Learner],
    config: dict[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    feature_cache: FeatureCache | None = None,
    checkpoint: Checkpoint | None = None,
    observer: RunObserver | None = None,
) -> RunResult:
    """Train `learner_cls(**config)` through the scenario's stream, evaluating after each experience.

    Feature-level learners read the frozen encoder's features from `feature_cache` (computed and
    stored on a miss; None computes them in memory). A learner with an `initialise` hook is first given
    the scenario's `init_set` (unlabelled; a resumed run restores its effect from the checkpoint
    instead). Few-shot scenarios then evaluate their test episodes; federated ones train a client
    learner per client and merge them into the server.

    With a `checkpoint` (see `clbench.checkpoint.run_key` for the key that names it), the run holds
    its lock (`Checkpoint.claim`: an identical run in progress is an error), saves its progress after
    every finished experience and, when the file already holds some, resumes after the last
    experience it records, with the same result as an uninterrupted run. The file stays when the run
    returns: the caller removes it once the result is stored, inside its own `claim()`.

    `progress`: a bar over the experiences on a terminal; elsewhere (a log file) one line per finished
    experience on stderr. A learner whose scores are not finite stops the run (`LearnerFailed`).
    `observer` is told every epoch's training figures and every evaluation (a resumed run's saved ones
    first); the caller closes it.

    The scenario's `precision` ("auto": bf16 on CUDA, fp32 elsewhere; `clbench.precision`) is what the
    learner's `learn` and `predict` calls and the frozen encoder run in: bf16 under `torch.autocast`,
    fp32 without it; the result records the resolved one.
    """
    if learner_cls.needs_task_ids and not scenario.spec.task_boundaries:
        raise ClbenchError(f"learner '{learner_cls.name}' needs task ids at training; scenario "
                           f"'{scenario.spec.name}' is task-free (task_boundaries = false)")
    if scenario.spec.online and not learner_cls.online:
        raise ClbenchError(f"learner '{learner_cls.name}' is not online-capable (online = False); "
                           f"scenario '{scenario.spec.name}' is online")
    if scenario.stream.clients and not learner_cls.mergeable:
        raise ClbenchError(f"learner '{learner_cls.name}' cannot merge (mergeable = False); "
                           f"scenario '{scenario.spec.name}' is federated")
    with checkpoint.claim() if checkpoint else contextlib.nullcontext():
        device = resolve_device(device)
        return _run(with_precision(scenario, device), learner_cls, config or {}, seed, device, progress,
                    feature_cache, checkpoint, observer or RunObserver())


def _run(scenario: Scenario, learner_cls: type[Learner], config: dict[str, Any], seed: int, device: torch.device,
         progress: bool, feature_cache: FeatureCache | None, checkpoint: Checkpoint | None,
         observer: RunObserver) -> RunResult:
    log = _ProgressLog(learner_cls.name, seed, progress)
    seed_everything(seed)
    reset_peak_memory(device)
    spec, stream = scenario.spec, scenario.stream
    inputs = Inputs(scenario, learner_cls.wants, device, seed, feature_cache)
    context = Context(
        device=device,
        num_classes=scenario.dataset.num_classes,
        input_shape=inputs.input_shape,
        seed=seed,
        backbone=backbone_factory(spec.backbone, inputs.image_shape, spec.weights, (spec.mean, spec.std)),
        n_experiences=len(stream.experiences),
        progress=progress,
        **_task_heads(spec, stream),
    )

    def new_learner() -> Learner:
        return guard(learner_cls, "__init__", 0, learner_cls, context, **config)

    learner = new_learner()
    evaluator = Evaluator(scenario, inputs, learner)
    trainer = _Trainer(inputs, spec, device, seed, scenario.dataset.num_classes, observer)
    saved = checkpoint.load(PROGRESS_FIELDS) if checkpoint else None
    if saved:
        untrained, rows, clients = _resume(saved, checkpoint, learner, evaluator, trainer, inputs)
        print(f"resuming {learner_cls.name} seed {seed} from its checkpoint {checkpoint.path} "
              f"({len(rows)} of {len(stream.experiences)} experiences done)", file=sys.stderr)
        for record in trainer.log:
            observer.on_epoch(record)
        for index in range(len(rows)):
            observer.on_experience(_evaluation(index, rows, evaluator))
    else:  # a resumed learner's state already holds its initialisation
        if learner_cls.initialises():
            trainer.initialise(learner, inputs.initialisation(scenario))
        with trainer.amp():
            untrained = evaluator.accuracies(-1) if stream.reports_forward_transfer else None
        rows, clients = [], []
    bar = context.progress_bar(stream.experiences[len(rows):], f"{learner_cls.name} seed {seed}", unit="exp",
                               total=len(stream.experiences), initial=len(rows))
    for exp in bar:
        if stream.clients and stream.clients[exp.index]:
            clients.append(_mission(learner, new_learner, stream.clients[exp.index], trainer, evaluator))
        else:
            indices = np.concatenate([e.train_indices for e in stream.experiences[: exp.index + 1]]) \
                if learner_cls.cumulative else exp.train_indices
            trainer.train(learner, exp, indices, len(stream.experiences))
        with trainer.amp():
            rows.append(evaluator.accuracies(exp.index))
        observer.on_experience(_evaluation(exp.index, rows, evaluator))
        accuracy = float(np.mean(rows[-1][: exp.index + 1]))
        bar.set_postfix(acc=f"{accuracy:.1f}")
        log.line(f"experience {exp.index + 1}/{len(stream.experiences)}", accuracy)
        if checkpoint:
            checkpoint.save(_progress(learner, exp.index, untrained, rows, clients, evaluator, trainer, inputs))

    episode_accuracies = None
    if stream.episodes:  # few-shot: the held-out episodes are what is evaluated
        start = time.perf_counter()
        with trainer.amp():
            episode_accuracies = evaluate_episodes(learner, stream.episodes, lambda r: inputs.batch("test", r),
                                                   inputs.y_test, scenario.dataset.num_classes, spec.eval_batch_size,
                                                   guard)
        evaluator.seconds += time.perf_counter() - start
        rows, evaluator.curve = [[float(np.mean(episode_accuracies))]], [float(np.mean(episode_accuracies))]
        log.line(f"{len(episode_accuracies)} test episodes", rows[0][0])

    matrices = evaluator.matrices(rows)
    return RunResult(
        learner=learner_cls.name,
        config=dict(learner.config),
        seed=seed,
        accuracy_matrix=rows,
        accuracy_curve=evaluator.curve,
        untrained_accuracy=untrained,
        episode_accuracies=episode_accuracies,
        client_accuracies=clients or None,
        train_seconds=trainer.seconds,
        eval_seconds=evaluator.seconds,
        feature_seconds=inputs.report.seconds,
        feature_cache=inputs.report.status,
        weights=inputs.weights_id,
        samples_seen=trainer.samples_seen,
        peak_memory_mb=peak_memory_mb(device),
        state_mb=state_megabytes(guard(learner, "state_dict", len(stream.experiences) - 1, learner.state_dict)),
        n_parameters=learner.n_parameters(),
        device=_device_name(device),
        init_set=spec.init_set if learner_cls.initialises() else "",
        precision=spec.precision,
        training_log=tuple(trainer.log),
        class_il_matrix=matrices.get("class_il"),
        task_il_matrix=matrices.get("task_il"),
    )


def _evaluation(index: int, rows: list[list[float]], evaluator: Evaluator) -> Evaluation:
    """What an observer is told of the evaluation after experience `index`."""
    matrices = evaluator.matrices(rows)
    return Evaluation(index, rows[index], evaluator.curve[index],
                      *(matrices[k][index] if k in matrices else None for k in ("class_il", "task_il")))


def _task_heads(spec: ScenarioSpec, stream: Stream) -> dict[str, Any]:
    """The Context's `til_training` and `task_classes` (each task id's classes) where a task is given at
    training (task-incremental, with boundaries); nothing elsewhere."""
    if spec.protocol != "task-incremental" or not spec.task_boundaries:
        return {}
    classes: dict[int, tuple[int, ...]] = {}
    for exp in stream.experiences:
        classes[exp.task] = classes.get(exp.task, ()) + exp.classes
    return {"til_training": spec.til_training,
            "task_classes": tuple(classes.get(t, ()) for t in range(max(classes) + 1))}


class _ProgressLog:
    """Where stderr is not a terminal (nohup, SLURM, tee), one flushed line per finished step, since a
    progress bar shows nothing there; on a terminal, or without progress, nothing."""

    def __init__(self, learner: str, seed: int, progress: bool) -> None:
        self.prefix, self.start = f"{learner} seed {seed}", time.perf_counter()
        isatty = getattr(sys.stderr, "isatty", None)
        self.enabled = progress and not (callable(isatty) and isatty())

    def line(self, step: str, accuracy: float) -> None:
        """`<learner> seed <seed>: <step>, accuracy <%>, <seconds since the run began> s elapsed`."""
        if self.enabled:
            shown = f"{accuracy:.2f}" if accuracy == accuracy else "-"  # NaN: nothing to test yet (few-shot)
            print(f"{self.prefix}: {step}, accuracy {shown}, {time.perf_counter() - self.start:.1f} s elapsed",
                  file=sys.stderr, flush=True)


def batches(order: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """`order` cut into mini-batches of `size`; a last batch of a single sample joins the one before it
    (batch norm cannot train on one sample), so every sample is still fed exactly once."""
    parts = order.split(size)
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts = (*parts[:-2], torch.cat(parts[-2:]))
    return parts


class _Trainer:
    """The data loop the runner owns: epochs, shuffling, batches, boundaries, timing."""

    def __init__(self, inputs: Inputs, spec: ScenarioSpec, device: torch.device, seed: int, num_classes: int,
                 observer: RunObserver) -> None:
        self.inputs, self.spec, self.device, self.observer = inputs, spec, device, observer
        self.num_classes = num_classes
        self.generator = torch.Generator().manual_seed(seed)
        self.seconds, self.samples_seen = 0.0, 0
        self.log: list[EpochRecord] = []

    def amp(self) -> contextlib.AbstractContextManager:
        """The run's precision (`clbench.precision.autocast`): what `learn` and `predict` are called under."""
        return autocast(self.spec.precision, self.device)

    def state(self) -> dict[str, Any]:
        """The shuffling generator, the totals and the training log so far (what a resumed run carries on from)."""
        return {"generator": self.generator.get_state(), "seconds": self.seconds, "samples_seen": self.samples_seen,
                "log": [asdict(record) for record in self.log]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.seconds, self.samples_seen = state["seconds"], state["samples_seen"]
        self.log = [EpochRecord(**record) for record in state["log"]]

    def initialise(self, learner: Learner, x: torch.Tensor) -> None:
        """Give `learner` its initialisation set, before the first experience (timed as training)."""
        start = time.perf_counter()
        guard(learner, "initialise", 0, learner.initialise, x)
        synchronize(self.device)
        self.seconds += time.perf_counter() - start

    def train(self, learner: Learner, exp: Experience, indices: np.ndarray, n_experiences: int) -> None:
        """Feed `learner` the training rows `indices` as experience `exp`, logging each epoch (`EpochRecord`:
        the device synchronised once at its end) and telling the observer (its time not counted)."""
        train_index = torch.as_tensor(indices, device=self.device)
        task = exp.task if exp.task is not None else (exp.index if learner.needs_task_ids else None)
        task = task if self.spec.task_boundaries else None  # task-free: no boundaries, no task at training
        info = ExperienceInfo(exp.index, exp.classes, task, len(indices), n_experiences)
        augment = self.inputs.augments(exp.index)
        start, observing = time.perf_counter(), 0.0
        if self.spec.task_boundaries:
            guard(learner, "begin_experience", exp.index, learner.begin_experience, info)
        for epoch in range(self.spec.epochs):
            meter, epoch_start = EpochMeter(self.device), time.perf_counter()
            order = train_index[torch.randperm(len(train_index), generator=self.generator).to(self.device)]
            for batch in batches(order, self.spec.batch_size):
                x, y = self.inputs.batch("train", batch, augment), self.inputs.y_train[batch]
                with self.amp():
                    step = guard(learner, "learn", exp.index, learner.learn, x, y, task)
                meter.add(*checked_step(learner, step, y, self.num_classes), y)
                self.samples_seen += len(batch)
            synchronize(self.device)
            self.log.append(meter.record(exp.index, epoch, time.perf_counter() - epoch_start))
            observed = time.perf_counter()
            self.observer.on_epoch(self.log[-1])
            observing += time.perf_counter() - observed
        if self.spec.task_boundaries:
            guard(learner, "end_experience", exp.index, learner.end_experience, info)
        synchronize(self.device)
        self.seconds += time.perf_counter() - start - observing


PROGRESS_FIELDS = ("learner", "untrained", "rows", "clients", "curve", "other_rows", "eval_seconds", "trainer",
                   "augment", "random")
"""What a run's checkpoint holds (see `_progress`); a change here bumps `clbench.checkpoint.FORMAT`."""


def _progress(learner: Learner, index: int, untrained: list[float] | None, rows: list[list[float]],
              clients: list[list[float]], evaluator: Evaluator, trainer: _Trainer, inputs: Inputs) -> dict[str, Any]:
    """What a checkpoint holds after experience `index`: everything a resumed run carries on from."""
    values = (guard(learner, "state_dict", index, learner.state_dict), untrained, rows, clients, evaluator.curve,
              evaluator.other_rows, evaluator.seconds, trainer.state(), inputs.augment_generator.get_state(),
              random_states())
    return dict(zip(PROGRESS_FIELDS, values))


def _resume(saved: dict[str, Any], checkpoint: Checkpoint, learner: Learner, evaluator: Evaluator,
            trainer: _Trainer, inputs: Inputs) -> tuple[list[float] | None, list[list[float]], list[list[float]]]:
    """Put a fresh run back where `saved` (a `_progress`) left it; returns (untrained, rows, clients).
    Content that does not fit this run is one clear error saying to delete the checkpoint."""
    try:
        guard(learner, "load_state_dict", len(saved["rows"]) - 1, learner.load_state_dict, saved["learner"])
        evaluator.curve, evaluator.seconds = list(saved["curve"]), float(saved["eval_seconds"])
        evaluator.other_rows = [list(row) for row in saved["other_rows"]]
        trainer.load_state(saved["trainer"])
        inputs.augment_generator.set_state(saved["augment"])
        set_random_states(saved["random"])
    except (LearnerFailed, LookupError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        detail = str(exc) if isinstance(exc, LearnerFailed) else one_line(exc)
        raise checkpoint.unusable(f"does not fit this run ({detail})") from exc
    return saved["untrained"], saved["rows"], saved["clients"]


def _mission(server: Learner, new_learner: Callable[[], Learner], clients: tuple[Experience, ...],
             trainer: _Trainer, evaluator: Evaluator) -> list[float]:
    """One federated mission: each client starts from the server's state, learns its own classes and
    is evaluated on every class it knows; then the server merges all clients. Returns the clients'
    accuracies."""
    known = [c for e in evaluator.stream.experiences[: clients[0].index] for c in e.classes]
    state = copy.deepcopy(guard(server, "state_dict", clients[0].index, server.state_dict))
    learners, accuracies = [], []
    for exp in clients:
        client = new_learner()
        guard(client, "load_state_dict", exp.index, client.load_state_dict, copy.deepcopy(state))
        trainer.train(client, exp, exp.train_indices, len(evaluator.stream.experiences))
        with trainer.amp():
            accuracies.append(evaluator.pooled_accuracy(client, known + list(exp.classes), exp.index))
        learners.append(client)
    guard(server, "merge", clients[0].index, server.merge, learners)
    return accuracies


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


