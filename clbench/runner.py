"""The standardized loop: drives one learner through one scenario, evaluates, times.

The runner never knows which learner it drives: it only uses the `Learner` contract.
"""

from __future__ import annotations

import random
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from clbench.augment import ImageTransform, random_crop_flip
from clbench.backbones import backbone_factory, weights_id
from clbench.episode_eval import evaluate_episodes
from clbench.feature_cache import FeatureCache, FeatureReport, FrozenEncoder
from clbench.device import peak_memory_mb, reset_peak_memory, resolve_device, synchronize
from clbench.errors import ClbenchError
from clbench.learner import Context, ExperienceInfo, Learner
from clbench.scenario import Scenario


class LearnerFailed(ClbenchError):
    """A learner raised inside one of its contract methods."""


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


def _on_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """The array as a tensor on the device; a read-only memory map is shared, never written, on the CPU."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(np.asarray(array)).to(device)


class _Inputs:
    """The scenario's data, placed once: uint8 images on the device (normalised and augmented per
    batch there), or the frozen encoder's features (from the feature cache)."""

    def __init__(self, scenario: Scenario, wants: str, device: torch.device, seed: int,
                 cache: FeatureCache | None) -> None:
        spec = self.spec = scenario.spec
        self.augment_generator = torch.Generator().manual_seed(seed + 1)
        parts = {"train": scenario.dataset.partition("train"), "test": scenario.dataset.partition("test")}
        self.y_train, self.y_test = (_on_device(parts[k].labels, device) for k in ("train", "test"))
        channels = parts["train"].images.shape[1]
        if len(spec.mean) not in (1, channels) or len(spec.std) not in (1, channels):
            raise ClbenchError(f"scenario '{spec.name}': mean/std need 1 or {channels} values")
        self.normalise = ImageTransform(spec.image_size, spec.mean, spec.std)
        native = tuple(parts["train"].images.shape[1:])
        self.image_shape = (channels, spec.image_size, spec.image_size) if spec.image_size else native
        self.features = wants == "features"
        if self.features:
            encoder = FrozenEncoder(spec.encoder, spec.weights, native, spec.image_size, spec.mean, spec.std,
                                    spec.encoder_normalize, device)
            images = {k: _on_device(p.images, torch.device("cpu")) for k, p in parts.items()}
            self.x, self.report = (cache or FeatureCache(None)).features(
                encoder, scenario.dataset.name, parts, images, spec.eval_batch_size)
            self.input_shape: tuple[int, ...] = (encoder.out_dim,)
            self.weights_id = encoder.weights_id
        else:
            self.x = {k: _on_device(p.images, device) for k, p in parts.items()}
            self.input_shape = self.image_shape
            self.report = FeatureReport()
            self.weights_id = weights_id(spec.backbone, spec.weights)

    def batch(self, part: str, index: torch.Tensor) -> torch.Tensor:
        """The learner's input for these samples; train images get the spec's augmentation."""
        x = self.x[part][index]
        if self.features:
            return x
        if part == "train" and self.spec.augment == "crop-flip":
            x = random_crop_flip(x, self.spec.crop_padding, self.augment_generator)
        return self.normalise(x)


def _guard(learner: Learner | type[Learner], method: str, experience: int, fn: Callable[..., Any], *args: Any,
           **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ClbenchError:
        raise
    except Exception as exc:  # a plugin's bug is reported, not shown as our traceback
        raise LearnerFailed(
            f"learner '{learner.name}' raised in {method}() at experience {experience}: {type(exc).__name__}: {exc}"
        ) from exc


def run(
    scenario: Scenario,
    learner_cls: type[Learner],
    config: dict[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    feature_cache: FeatureCache | None = None,
) -> RunResult:
    """Train `learner_cls(**config)` through the scenario's stream, evaluating after each experience.

    Feature-level learners read the frozen encoder's features from `feature_cache` (computed and
    stored on a miss; None computes them in memory).
    """
    if scenario.spec.online and not learner_cls.online:
        raise ClbenchError(f"learner '{learner_cls.name}' is not online-capable (online = False); "
                           f"scenario '{scenario.spec.name}' is online")
    device = resolve_device(device)
    seed_everything(seed)
    reset_peak_memory(device)
    spec, stream = scenario.spec, scenario.stream
    inputs = _Inputs(scenario, learner_cls.wants, device, seed, feature_cache)
    context = Context(
        device=device,
        num_classes=scenario.dataset.num_classes,
        input_shape=inputs.input_shape,
        seed=seed,
        backbone=backbone_factory(spec.backbone, inputs.image_shape, spec.weights),
        n_experiences=len(stream.experiences),
    )
    learner = _guard(learner_cls, "__init__", 0, learner_cls, context, **(config or {}))
    evaluator = _Evaluator(scenario, inputs, learner)
    untrained = evaluator.accuracies(-1) if stream.reports_forward_transfer else None

    generator = torch.Generator().manual_seed(seed)
    train_seconds, samples_seen, rows = 0.0, 0, []
    experiences = stream.experiences
    bar = tqdm(experiences, desc=f"{learner_cls.name} seed {seed}", unit="exp", disable=None if progress else True, leave=False)
    for exp in bar:
        indices = np.concatenate([e.train_indices for e in experiences[: exp.index + 1]]) if learner_cls.cumulative \
            else exp.train_indices
        train_index = torch.as_tensor(indices, device=device)
        task = exp.task if exp.task is not None else (exp.index if learner_cls.needs_task_ids else None)
        info = ExperienceInfo(exp.index, exp.classes, task, len(indices), len(experiences))
        start = time.perf_counter()
        if spec.task_boundaries:
            _guard(learner, "begin_experience", exp.index, learner.begin_experience, info)
        for _ in range(spec.epochs):
            order = train_index[torch.randperm(len(train_index), generator=generator).to(device)]
            for batch in order.split(spec.batch_size):
                x, y = inputs.batch("train", batch), inputs.y_train[batch]
                _guard(learner, "learn", exp.index, learner.learn, x, y, task)
                samples_seen += len(batch)
        if spec.task_boundaries:
            _guard(learner, "end_experience", exp.index, learner.end_experience, info)
        synchronize(device)
        train_seconds += time.perf_counter() - start
        rows.append(evaluator.accuracies(exp.index))
        bar.set_postfix(acc=f"{np.mean(rows[-1][: exp.index + 1]):.1f}")

    episode_accuracies = None
    if stream.episodes:  # few-shot: the held-out episodes are what is evaluated
        start = time.perf_counter()
        episode_accuracies = evaluate_episodes(learner, stream.episodes, lambda r: inputs.batch("test", r), inputs.y_test,
                                               scenario.dataset.num_classes, spec.eval_batch_size, _guard)
        evaluator.seconds += time.perf_counter() - start
        rows, evaluator.curve = [[float(np.mean(episode_accuracies))]], [float(np.mean(episode_accuracies))]

    return RunResult(
        learner=learner_cls.name,
        config=dict(learner.config),
        seed=seed,
        accuracy_matrix=rows,
        accuracy_curve=evaluator.curve,
        untrained_accuracy=untrained,
        episode_accuracies=episode_accuracies,
        train_seconds=train_seconds,
        eval_seconds=evaluator.seconds,
        feature_seconds=inputs.report.seconds,
        feature_cache=inputs.report.status,
        weights=inputs.weights_id,
        samples_seen=samples_seen,
        peak_memory_mb=peak_memory_mb(device),
        state_mb=state_megabytes(_guard(learner, "state_dict", len(experiences) - 1, learner.state_dict)),
        n_parameters=learner.n_parameters(),
        device=_device_name(device),
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


class _Evaluator:
    """Scores the test data in batched passes, masks, and counts correct answers per experience.

    Where neither the task id nor the mask depends on the evaluated experience (class- and
    domain-incremental), the union of all test sets is scored once per evaluation and each
    experience's accuracy is read from it: overlapping test sets (CoRe50 NIC) cost nothing extra.
    """

    def __init__(self, scenario: Scenario, inputs: _Inputs, learner: Learner) -> None:
        self.stream, self.inputs, self.learner = scenario.stream, inputs, learner
        self.batch_size = scenario.spec.eval_batch_size
        self.num_classes = scenario.dataset.num_classes
        self.device = inputs.y_test.device
        self.test_index = [torch.as_tensor(e.test_indices, device=self.device) for e in self.stream.experiences]
        self.shared_pass = not self.stream.task_ids_at_test and self.stream.mask != "task"
        self.union = torch.unique(torch.cat(self.test_index)) if self.test_index else torch.zeros(0)
        self.positions = [torch.searchsorted(self.union, index) for index in self.test_index]
        self.curve: list[float] = []
        self.seconds = 0.0

    def _mask(self, trained_through: int, evaluated: int) -> torch.Tensor:
        exps = self.stream.experiences
        if self.stream.mask == "seen":
            classes = [c for e in exps[: trained_through + 1] for c in e.classes]
        elif self.stream.mask == "task":
            classes = list(exps[evaluated].classes)
        else:
            classes = list(range(self.num_classes))
        mask = torch.zeros(self.num_classes, dtype=torch.bool, device=self.device)
        mask[classes] = True
        return mask

    def _correct(self, index: torch.Tensor, task: int | None, mask: torch.Tensor, trained_through: int) -> torch.Tensor:
        """Per-sample correctness (bool) of the masked prediction on test samples `index`."""
        right = []
        for chunk in index.split(self.batch_size):
            scores = _guard(self.learner, "predict", trained_through, self.learner.predict,
                            self.inputs.batch("test", chunk), task)
            if not isinstance(scores, torch.Tensor) or scores.shape != (len(chunk), self.num_classes):
                shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
                raise LearnerFailed(f"learner '{self.learner.name}': predict() returned {shape}, "
                                    f"expected ({len(chunk)}, {self.num_classes})")
            right.append(scores.float().masked_fill(~mask, float("-inf")).argmax(1) == self.inputs.y_test[chunk])
        return torch.cat(right) if right else torch.zeros(0, dtype=torch.bool, device=self.device)

    @torch.no_grad()
    def accuracies(self, trained_through: int) -> list[float]:
        """Accuracy (%) on each experience's test data after training through `trained_through`."""
        start = time.perf_counter()
        if self.shared_pass:
            right = self._correct(self.union, None, self._mask(trained_through, 0), trained_through)
            per_experience = [right[pos] for pos in self.positions]
        else:
            per_experience = [
                self._correct(index, self.stream.experiences[j].task if self.stream.task_ids_at_test else None,
                              self._mask(trained_through, j), trained_through)
                for j, index in enumerate(self.test_index)
            ]
        correct = [int(r.sum()) for r in per_experience]
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        if trained_through >= 0:  # accuracy over every distinct test sample of the experiences seen so far
            seen = slice(0, trained_through + 1)
            if self.shared_pass:
                union_seen = torch.unique(torch.cat(self.positions[seen]))
                self.curve.append(100.0 * float(right[union_seen].float().mean()) if len(union_seen) else float("nan"))
            else:
                self.curve.append(100.0 * sum(correct[seen]) / max(1, sum(len(i) for i in self.test_index[seen])))
        return [100.0 * c / len(i) if len(i) else float("nan") for c, i in zip(correct, self.test_index)]
