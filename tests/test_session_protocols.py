"""FSCIL-style session streams and the pooled fixed-rule re-partition."""

import numpy as np
import pytest

from clbench.datasets import Dataset, LabeledArrays
from clbench.errors import ClbenchError
from clbench.protocols.repartition import pooled_split
from clbench.protocols.sessions import stream_from_sessions


def test_sessions_become_experiences_with_their_classes_test_data():
    train = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    test = np.array([3, 2, 1, 0, 0])
    stream = stream_from_sessions(train, test, [np.array([0, 1, 2, 3]), np.array([4]), np.array([7, 6])])
    assert [e.classes for e in stream.experiences] == [(0, 1), (2,), (3,)]
    assert [e.test_indices.tolist() for e in stream.experiences] == [[2, 3, 4], [1], [0]]
    assert stream.class_order == (0, 1, 2, 3) and stream.mask == "seen" and stream.protocol == "fscil"


def test_sessions_must_be_valid():
    train = np.array([0, 1, 2])
    with pytest.raises(ClbenchError, match="session 2 repeats classes"):
        stream_from_sessions(train, train, [np.array([0]), np.array([0, 1])])
    with pytest.raises(ClbenchError, match="session 1 has rows outside the 3 training samples"):
        stream_from_sessions(train, train, [np.array([5])])


def _images(n):
    return np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)


def test_pooled_split_sends_the_last_sixth_of_each_class_to_test():
    # class 0: 9 samples spread over two partitions, class 1: 12 samples
    a = LabeledArrays(_images(10), np.array([0] * 6 + [1] * 4), ("a", "b"), {"f": np.arange(10)})
    b = LabeledArrays(_images(11) + 100, np.array([0] * 3 + [1] * 8), ("a", "b"), {"f": np.arange(10, 21)})
    pooled = pooled_split(Dataset("toy", {"train": a, "val": b}))
    test = pooled.partition("test")
    # class 0 (9 samples) -> last 1 (9 // 6); class 1 (12 samples) -> last 2
    assert test.labels.tolist() == [0, 1, 1] and test.metadata["f"].tolist() == [12, 19, 20]
    assert len(pooled.partition("train")) == 18
    assert sorted(np.concatenate([test.metadata["f"], pooled.partition("train").metadata["f"]])) == list(range(21))
