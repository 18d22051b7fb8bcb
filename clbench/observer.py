"""Hooks into a run as it goes: `runner.run(observer=...)` tells a `RunObserver` every epoch's training
figures and every evaluation; `orchestration.run_and_store` tells it the finished row, then closes it.
The TensorBoard logger (`clbench.run_log`) is one; a CSV or W&B logger would be another."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clbench.training_log import EpochRecord


@dataclass(frozen=True)
class Evaluation:
    """The evaluation after training through experience `index`."""

    index: int
    accuracies: list[float]
    """A[index][j] for every experience j: the protocol's accuracy matrix row (%)."""
    seen_accuracy: float
    """Accuracy on every test sample of the experiences seen so far, pooled (`accuracy_curve[index]`)."""
    class_il: list[float | None] | None = None
    """The Class-IL row where the protocol has both scorings (`Evaluator.matrices`), else None."""
    task_il: list[float | None] | None = None
    """The Task-IL row likewise (None in a cell that was not scored)."""


class RunObserver:
    """Does nothing; a logger overrides what it records. A resumed run first replays the epochs and
    evaluations its checkpoint holds, so an observer sees the whole run either way."""

    def on_epoch(self, record: EpochRecord) -> None:
        """After each training epoch (of an experience, or of a federated client)."""

    def on_experience(self, evaluation: Evaluation) -> None:
        """After each experience's evaluation."""

    def on_end(self, row: Mapping[str, Any]) -> None:
        """With the run's finished leaderboard row."""

    def close(self) -> None:
        """Release what the observer holds (files); called once, however the run ended."""
