"""An Avalanche benchmark as a clbench scenario (from Python): its experiences' data become a dataset of
uint8 images, its streams a `Stream` with a fingerprint like any other."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from clbench.datasets import Dataset, LabeledArrays
from clbench.errors import ClbenchError
from clbench.protocols import Experience, Stream
from clbench.scenario import Scenario, ScenarioSpec


def _arrays(experience: Any, what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, labels and task labels of one experience's dataset (its eval transforms: no augmentation)."""
    dataset = experience.dataset.eval()
    if not len(dataset):
        raise ClbenchError(f"the Avalanche benchmark's {what} is empty")
    batches = list(DataLoader(dataset, batch_size=4096, collate_fn=getattr(dataset, "collate_fn", None)))
    x, y = (torch.cat([torch.as_tensor(b[k]) for b in batches]) for k in (0, 1))
    t = torch.cat([torch.as_tensor(b[2]) for b in batches]) if len(batches[0]) > 2 else torch.zeros_like(y)
    return x, y.long(), t.long()


def _uint8_images(x: torch.Tensor) -> np.ndarray:
    """N x C x H x W uint8 images from uint8 tensors, or floats in [0, 1] (scaled by 255, rounded); N x H x W
    gains a channel, N x D (vectors) becomes N x 1 x 1 x D."""
    if x.ndim == 2:
        x = x[:, None, None, :]
    elif x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ClbenchError(f"Avalanche inputs of shape {tuple(x.shape[1:])} are not images (C x H x W, H x W or D)")
    if x.dtype == torch.uint8:
        return x.numpy()
    if not x.is_floating_point() or x.min() < 0 or x.max() > 1:
        raise ClbenchError(f"Avalanche inputs must be uint8 or floats in [0, 1] (raw images: clbench normalises with "
                           f"the scenario's mean/std), not {x.dtype} in [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return (x.float() * 255).round().to(torch.uint8).numpy()


def scenario_from_benchmark(benchmark: Any, name: str = "avalanche", **settings: Any) -> Scenario:
    """An Avalanche new-classes benchmark (e.g. `nc_benchmark` over tensors, or a classic generator whose
    data is present) as a clbench scenario named `name`; `settings` are scenario settings (epochs,
    batch_size, backbone, mean, std, ...; see `ScenarioSpec`).

    Train experience i is clbench experience i; its test data is test experience i (or, for a single test
    experience, the whole test set for every experience). Task labels that differ between experiences
    make it task-incremental (task ids at test), else class-incremental. The dataset is named by a hash
    of its images and labels, so the stream fingerprint says when two benchmarks hold the same data in
    the same order.
    """
    train = [_arrays(exp, f"train experience {i}") for i, exp in enumerate(benchmark.train_stream)]
    test = [_arrays(exp, f"test experience {i}") for i, exp in enumerate(benchmark.test_stream)]
    if len(test) not in (1, len(train)):
        raise ClbenchError(f"the Avalanche benchmark has {len(train)} train and {len(test)} test experiences; "
                           "give one test experience per train experience, or a single one")
    classes = [tuple(int(c) for c in torch.unique(y)) for _, y, _ in train]
    if len({c for cs in classes for c in cs}) != sum(map(len, classes)):
        raise ClbenchError("experiences of the Avalanche benchmark share classes: only new-classes benchmarks "
                           "(nc_benchmark and the split generators) convert to clbench scenarios")
    tasks = [int(t[0]) for _, _, t in train]
    multitask = len(set(tasks)) > 1
    parts = {}
    for part, stream in (("train", train), ("test", test)):
        images = _uint8_images(torch.cat([x for x, _, _ in stream]))
        labels = torch.cat([y for _, y, _ in stream]).numpy()
        parts[part] = (images, labels)
    num_classes = 1 + max(int(labels.max()) for _, labels in parts.values())
    names = tuple(str(c) for c in range(num_classes))
    digest = hashlib.sha256()
    for images, labels in parts.values():
        digest.update(np.ascontiguousarray(images).tobytes())
        digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    dataset = Dataset(f"avalanche-{digest.hexdigest()[:16]}",
                      {part: LabeledArrays(images, labels, names) for part, (images, labels) in parts.items()})
    spans = [np.cumsum([0, *(len(y) for _, y, _ in s)]) for s in (train, test)]
    experiences = tuple(
        Experience(i, classes[i], np.arange(spans[0][i], spans[0][i + 1]),
                   np.arange(spans[1][i], spans[1][i + 1]) if len(test) > 1 else np.arange(spans[1][-1]),
                   tasks[i] if multitask else None)
        for i in range(len(train)))
    protocol = "task-incremental" if multitask else "class-incremental"
    stream = Stream(protocol, tuple(c for cs in classes for c in cs), experiences,
                    mask="task" if multitask else "seen", task_ids_at_test=multitask)
    spec = ScenarioSpec(name=name, description="an Avalanche benchmark", dataset=dataset.name, protocol=protocol,
                        n_experiences=len(train), **settings)
    return Scenario(spec, dataset, stream)
