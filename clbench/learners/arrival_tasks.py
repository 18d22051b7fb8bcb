"""Task ids a task-free learner infers from the stream itself: a class's task is the rank of its first
appearance divided by the classes per task, kept on the device and updated without a host sync."""

from __future__ import annotations

import math

import torch


class ArrivalTasks:
    """The task of each of `num_classes` classes, from the order classes first appear in the stream.

    The k-th class to appear (k = 0, 1, ...; within a batch, in order of first position) gets task
    k // ceil(num_classes / n_experiences): for an even class-incremental split, the experience that
    brought it, without boundaries or task ids. `table` holds -1 for a class not seen yet. `update` is
    a handful of fixed-size tensor ops (no `.item()`, no data-dependent shape), so a training step
    that calls it never waits for the device.
    """

    def __init__(self, num_classes: int, n_experiences: int, device: torch.device) -> None:
        self.per_task = math.ceil(num_classes / n_experiences)
        self.table = torch.full((num_classes,), -1, dtype=torch.int64, device=device)
        self._positions = torch.arange(num_classes, device=device)

    @property
    def seen(self) -> torch.Tensor:
        """(num_classes,) bool: the classes seen so far."""
        return self.table >= 0

    def update(self, y: torch.Tensor) -> torch.Tensor:
        """Give the classes first seen in `y` their task; return the current task, the largest task
        given so far (a 0-dim int64 tensor on the device; 0 before any class is seen)."""
        n = len(y)
        first = torch.full_like(self.table, n).scatter_reduce(0, y, torch.arange(n, device=y.device), reduce="amin")
        fresh = (first < n) & (self.table < 0)
        order = torch.where(fresh, first, n).argsort(stable=True)  # fresh classes first, by first position
        rank = torch.empty_like(order).scatter_(0, order, self._positions)
        task = (self.seen.sum() + rank) // self.per_task
        self.table.copy_(torch.where(fresh, task, self.table))
        return self.table.max().clamp(min=0)
