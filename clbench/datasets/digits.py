"""scikit-learn's digits: 1,797 real 8x8 grey images of 10 classes, shipped inside scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clbench.datasets.arrays import Dataset, LabeledArrays

TEST_EVERY = 4  # within each class, every 4th sample (in file order) is a test sample: a fixed 75/25 split


def load(root: Path | None = None) -> Dataset:
    """Load the embedded digits dataset with its fixed stratified train/test split (no download).

    Pixel values 0..16 are rescaled to 0..255 uint8; the split rule needs no random generator,
    so it is the same on every machine and every library version.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    rank_in_class = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank_in_class[where] = np.arange(len(where))
    is_test = rank_in_class % TEST_EVERY == TEST_EVERY - 1
    names = tuple(str(c) for c in range(10))
    return Dataset(
        name="digits",
        partitions={
            "train": LabeledArrays(images[~is_test], labels[~is_test], names),
            "test": LabeledArrays(images[is_test], labels[is_test], names),
        },
    )
