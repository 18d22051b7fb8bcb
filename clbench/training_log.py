"""The per-epoch training log: what each `learn` step reported (`Step`: its loss, its training scores),
summed on the device during an epoch and read in one host sync at the epoch's end."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from clbench.guard import LearnerFailed
from clbench.learner import Learner, Step


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of one training phase (an experience, or a federated client's share of one)."""

    experience: int
    epoch: int
    loss: float | None
    """Mean over the epoch's samples of the loss their step optimised, as `learn` returned it (before the
    update); a step that returned none counts no samples. None: no step of the epoch returned a loss."""
    accuracy: float | None
    """% of the epoch's samples that the argmax of their step's training scores got right (before the
    update); None: no step of the epoch returned scores."""
    seconds: float
    """Wall time of the epoch's batches (input pipeline and `learn`), the device synchronised at its end."""
    samples: int
    """Stream samples fed to `learn` in the epoch."""


def checked_step(learner: Learner, value: Any, y: torch.Tensor,
                 num_classes: int) -> tuple[torch.Tensor | float | None, torch.Tensor | None]:
    """(loss, scores) of what `learn` returned on the batch labelled `y`: None; a loss (a one-element
    floating-point tensor, or a Python number a learner already read); or `Step(loss, scores)` with
    scores of shape (len(y), num_classes) on y's device. Anything else is LearnerFailed. Only types and
    shapes are looked at: no host sync."""
    loss, scores = (value.loss, value.scores) if isinstance(value, Step) else (value, None)
    if value is None:
        return None, None
    number = isinstance(loss, (int, float)) and not isinstance(loss, bool)
    if not number and not (isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.is_floating_point()):
        got = f"a tensor of shape {tuple(loss.shape)} ({loss.dtype})" if isinstance(loss, torch.Tensor) \
            else type(loss).__name__
        raise LearnerFailed(f"learner '{learner.name}': learn() returned {got} as its loss; expected None, a 0-dim "
                            f"floating-point loss tensor or clbench.Step(loss, scores)")
    if scores is not None and (not isinstance(scores, torch.Tensor) or scores.shape != (len(y), num_classes)
                               or scores.device != y.device):
        got = f"{tuple(scores.shape)} on {scores.device}" if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise LearnerFailed(f"learner '{learner.name}': learn() returned Step scores {got}; expected "
                            f"({len(y)}, {num_classes}) on {y.device}, or scores=None")
    return (float(loss) if number else loss), scores


class EpochMeter:
    """One epoch's sums, kept on the device while it runs (no host sync per step)."""

    def __init__(self, device: torch.device) -> None:
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.loss_sum = torch.zeros((), dtype=dtype, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.samples = self.loss_samples = self.scored_samples = 0

    def add(self, loss: torch.Tensor | float | None, scores: torch.Tensor | None, y: torch.Tensor) -> None:
        """Count one step on the batch labelled `y` (`checked_step`'s loss and scores)."""
        self.samples += len(y)
        if loss is not None:
            value = loss.detach().reshape(()).to(self.loss_sum.dtype) if isinstance(loss, torch.Tensor) else loss
            self.loss_sum += value * len(y)
            self.loss_samples += len(y)
        if scores is not None:
            self.correct += (scores.detach().argmax(1) == y).sum()
            self.scored_samples += len(y)

    def record(self, experience: int, epoch: int, seconds: float) -> EpochRecord:
        """The epoch's figures, read from the device in one sync."""
        loss_sum, correct = torch.stack([self.loss_sum, self.correct.to(self.loss_sum.dtype)]).tolist()
        return EpochRecord(experience, epoch, loss_sum / self.loss_samples if self.loss_samples else None,
                           100.0 * correct / self.scored_samples if self.scored_samples else None, seconds,
                           self.samples)


def log_columns(records: list[EpochRecord]) -> dict[str, list]:
    """The log as the leaderboard stores it (`training_log`): per training phase (an experience, or a
    federated client's share of one) `experience`, and per phase and epoch `loss`, `accuracy` (%; null
    where the learner reported none), `seconds` and `samples`. Loss to 6 significant digits, accuracy
    and seconds to 4 decimals."""
    columns: dict[str, list] = {"experience": [], "loss": [], "accuracy": [], "seconds": [], "samples": []}
    for record in records:
        if record.epoch == 0:  # a new phase
            columns["experience"].append(record.experience)
            for key in ("loss", "accuracy", "seconds", "samples"):
                columns[key].append([])
        columns["loss"][-1].append(_significant(record.loss))
        columns["accuracy"][-1].append(None if record.accuracy is None else round(record.accuracy, 4))
        columns["seconds"][-1].append(round(record.seconds, 4))
        columns["samples"][-1].append(record.samples)
    return columns


def _significant(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")
