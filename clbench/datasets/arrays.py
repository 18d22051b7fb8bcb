"""The in-memory form every data source returns: uint8 images, int64 labels, names, metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clbench.errors import ClbenchError


def int_vector(values: object) -> np.ndarray | None:
    """`values` read from a data file (a list or an array) as a 1-D int64 array; None unless it is a flat
    sequence of integers that fit in int64 (an empty one is fine)."""
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError, OverflowError):  # ragged, or not array-like at all
        return None
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or (arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max):
        return None
    return arr.astype(np.int64)


def uint8_mismatch(value: object, row_shape: tuple[int, ...]) -> str | None:
    """None if `value` (read from a data file) is a uint8 array of N rows of `row_shape`; else what it is
    instead ("int64 (2, 5)", "a list"), for a one-line message."""
    if not isinstance(value, np.ndarray):
        return f"a {type(value).__name__}"
    if value.dtype != np.uint8 or value.shape[1:] != tuple(row_shape):
        return f"{value.dtype} {value.shape}"
    return None


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
