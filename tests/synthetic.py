"""Tiny synthetic scenarios built from in-memory arrays, for tests."""

from __future__ import annotations

import numpy as np

from clbench.datasets import Dataset, LabeledArrays
from clbench.protocols import split_by_class
from clbench.scenario import Scenario, ScenarioSpec


def make_scenario(n_classes: int = 4, n_experiences: int = 2, per_class: int = 6, test_per_class: int = 3,
                  task_incremental: bool = False, **spec) -> Scenario:
    """Well-separated 1x4x4 images: class c is a constant image of brightness 40 * c plus noise."""
    rng = np.random.default_rng(0)
    names = tuple(f"c{c}" for c in range(n_classes))

    def part(per: int) -> LabeledArrays:
        labels = np.repeat(np.arange(n_classes), per).astype(np.int64)
        images = (labels[:, None, None, None] * 40 + rng.integers(0, 10, (len(labels), 1, 4, 4))).astype(np.uint8)
        return LabeledArrays(images, labels, names)

    dataset = Dataset("synthetic", {"train": part(per_class), "test": part(test_per_class)})
    stream = split_by_class(dataset.partition("train").labels, dataset.partition("test").labels,
                            tuple(range(n_classes)), n_experiences, task_incremental=task_incremental)
    protocol = "task-incremental" if task_incremental else "class-incremental"
    settings = {"epochs": 1, "batch_size": 4, **spec}
    return Scenario(ScenarioSpec(name="synthetic", dataset="synthetic", protocol=protocol,
                                 n_experiences=n_experiences, **settings), dataset, stream)


