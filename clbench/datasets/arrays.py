"""The in-memory form every data source returns: uint8 images, int64 labels, names, metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clbench.errors import ClbenchError


@dataclass(frozen=True)
class LabeledArrays:
    """One partition of a dataset.

    `images` is uint8 N x C x H x W (a NumPy array or a read-only memory map), `labels` int64 N,
    `metadata` optional per-sample columns (e.g. CoRe50's `session` and `object`), each of length N.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    metadata: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ClbenchError(
                f"images must be uint8 N x C x H x W, got {self.images.dtype} with shape {self.images.shape}"
            )
        if self.labels.shape != (len(self.images),):
            raise ClbenchError(f"labels have shape {self.labels.shape}, expected ({len(self.images)},)")
        for key, column in self.metadata.items():
            if len(column) != len(self.images):
                raise ClbenchError(f"metadata column '{key}' has {len(column)} rows, expected {len(self.images)}")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    """A named dataset with its standard partitions ("train"/"test", or "train"/"val"/"test")."""


    name: str
    partitions: dict[str, LabeledArrays]
    index_lists: dict[str, object] = field(default_factory=dict)
    """Named index lists shipped with the data (CoRe50's LUP runs, FSCIL session lists), for protocols."""

    @property
    def num_classes(self) -> int:
        return len(next(iter(self.partitions.values())).class_names)

    def partition(self, name: str) -> LabeledArrays:
        """The named partition, or a one-line error listing the ones this dataset has."""
        if name not in self.partitions:
            raise ClbenchError(f"dataset '{self.name}' has no '{name}' partition (it has: {', '.join(self.partitions)})")
        return self.partitions[name]
