"""Re-cutting a dataset's partitions by a fixed rule (arrays in, arrays out)."""

from __future__ import annotations

import numpy as np

from clbench.datasets import Dataset, LabeledArrays


def pooled_split(dataset: Dataset, test_every: int = 6) -> Dataset:
    """Pool every partition (in partition order, then file order) and, within each class, send the
    last 1/`test_every` of its samples to "test", the rest to "train".

    With mini-ImageNet's 600 images per class this is the usual 500 train / 100 test; a smaller
    copy keeps the same 5:1 ratio. The rule has no randomness, so it is the same everywhere.
    """
    parts = list(dataset.partitions.values())
    labels = np.concatenate([p.labels for p in parts])
    position = np.empty(len(labels), dtype=np.int64)
    counts = np.bincount(labels)
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position[order] = np.arange(len(labels)) - np.repeat(starts, counts)
    is_test = position >= (counts - counts // test_every)[labels]
    images = np.concatenate([np.asarray(p.images) for p in parts])
    keys = set.intersection(*(set(p.metadata) for p in parts))
    meta = {k: np.concatenate([p.metadata[k] for p in parts]) for k in keys}
    names = parts[0].class_names

    def take(mask: np.ndarray) -> LabeledArrays:
        return LabeledArrays(images[mask], labels[mask], names, {k: v[mask] for k, v in meta.items()})

    return Dataset(name=f"{dataset.name}-pooled", partitions={"train": take(~is_test), "test": take(is_test)},
                   index_lists=dataset.index_lists)
