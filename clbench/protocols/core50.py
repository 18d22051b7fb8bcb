"""CoRe50 protocols (Lomonaco & Maltoni 2017): new instances (NI), new classes (NC), both (NIC).

Pure: a CoRe50 `Dataset` (see `clbench.datasets.core50.load`) in, a `Stream` out. The official runs come
from `dataset.index_lists["lup"]` (LUP.pkl: paths.pkl indices), mapped to partition rows through
`metadata["path_index"]`. Labels are the dataset's object ids (or, at category level, `object // 5`),
never labels.pkl's per-run renumbering: the classes are the same, and one label space serves every run.

Test sets. NI: every experience is evaluated on the whole test set (sessions 3, 7, 10) over all classes.
NC / NIC: experience i is evaluated on the official test list restricted to the classes of its own
training batch, with scores masked to the classes seen so far. In NIC a class recurs in many batches,
so those test sets overlap; each column of the accuracy matrix is still "the classes of batch j".

At category level (`category=True`, 10 classes) the runner must score against category labels: pair
the stream with `category_level(dataset)`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from clbench.datasets.arrays import Dataset, LabeledArrays
from clbench.datasets.core50 import CATEGORY_NAMES, TRAIN_SESSIONS, URL
from clbench.errors import ClbenchError
from clbench.protocols.stream import Experience, Stream

BATCHES = {"ni": 8, "nc": 9, "nic": 79}  # training batches of each official scenario
METADATA = ("session", "category", "path_index")


def _partitions(dataset: Dataset) -> tuple[LabeledArrays, LabeledArrays]:
    train, test = dataset.partition("train"), dataset.partition("test")
    for part in (train, test):
        missing = [key for key in METADATA if key not in part.metadata]
        if missing:
            raise ClbenchError(f"dataset '{dataset.name}' is not CoRe50 (no metadata column '{missing[0]}')")
    return train, test


def _labels(part: LabeledArrays, category: bool) -> np.ndarray:
    return np.asarray(part.metadata["category"] if category else part.labels, dtype=np.int64)


def category_level(dataset: Dataset) -> Dataset:
    """The same images and metadata with labels = category (0..9) and the 10 category names."""
    train, _ = _partitions(dataset)
    names = tuple(dict.fromkeys(name.rstrip("0123456789") for name in train.class_names))
    names = names if len(names) == len(CATEGORY_NAMES) else CATEGORY_NAMES
    partitions = {
        key: dataclasses.replace(part, labels=_labels(part, True), class_names=names)
        for key, part in dataset.partitions.items()
    }
    return Dataset(name=f"{dataset.name}-category", partitions=partitions, index_lists=dataset.index_lists)


def _locator(path_index: np.ndarray):
    """A function mapping paths.pkl indices to the rows of the partition that holds them (else an error)."""
    order = np.argsort(path_index, kind="stable")
    sorted_index = np.asarray(path_index)[order]

    def rows(wanted: np.ndarray, what: str) -> np.ndarray:
        pos = np.searchsorted(sorted_index, wanted)
        found = pos < len(order)
        found[found] = sorted_index[pos[found]] == wanted[found]
        if not found.all():
            raise ClbenchError(f"{what} names paths.pkl row {int(wanted[~found][0])}, which is not in that "
                               "partition: LUP.pkl and paths.pkl must come from the same release")
        return order[pos]

    return rows


def official_run(dataset: Dataset, scenario: str, run: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The official run as (train rows of each batch, test rows), from `index_lists["lup"]`."""
    train, test = _partitions(dataset)
    lup = dataset.index_lists.get("lup") or {}
    if scenario not in lup:
        raise ClbenchError(f"CoRe50 {scenario.upper()} needs the official run lists: put LUP.pkl (from {URL}) in "
                           "<data root>/core50/ next to paths.pkl")
    runs = lup[scenario]
    if not 0 <= run < len(runs):
        raise ClbenchError(f"CoRe50 {scenario.upper()} has runs 0..{len(runs) - 1}, got run {run}")
    *batches, test_list = runs[run]
    if scenario in BATCHES and len(batches) != BATCHES[scenario]:
        raise ClbenchError(f"LUP.pkl '{scenario}' run {run} has {len(batches)} batches, expected "
                           f"{BATCHES[scenario]}: use the official LUP.pkl")
    where = f"LUP.pkl '{scenario}' run {run}"
    train_locate = _locator(train.metadata["path_index"])
    train_rows = [train_locate(np.asarray(b, dtype=np.int64), f"{where} batch {i}") for i, b in enumerate(batches)]
    for i, rows in enumerate(train_rows):
        if not len(rows):
            raise ClbenchError(f"{where} batch {i} is empty: use the official LUP.pkl")
    test_rows = _locator(test.metadata["path_index"])(np.asarray(test_list, dtype=np.int64), f"{where} test list")
    return train_rows, np.sort(test_rows)


def core50_ni(dataset: Dataset, run: int | None = None, category: bool = False) -> Stream:
    """New instances: one experience per training session, all classes, evaluated over all classes.

    `run=None`: sessions 1, 2, 4, 5, 6, 8, 9, 11 in that order, each in paths.pkl order (no LUP.pkl
    needed); test set = all of sessions 3, 7, 10. `run=k`: the official NI run k of LUP.pkl (its own
    session order and within-batch order) and its test list.
    """
    train, test = _partitions(dataset)
    if run is None:
        session = np.asarray(train.metadata["session"])
        batches = [np.flatnonzero(session == s) for s in TRAIN_SESSIONS]
        empty = [s for s, rows in zip(TRAIN_SESSIONS, batches) if not len(rows)]
        if empty:
            raise ClbenchError(f"CoRe50 NI: the train partition has no image of session {empty[0]}")
        test_rows = np.arange(len(test), dtype=np.int64)
    else:
        batches, test_rows = official_run(dataset, "ni", run)
    y = _labels(train, category)
    n_classes = len(CATEGORY_NAMES) if category else dataset.num_classes
    experiences = tuple(Experience(i, tuple(int(c) for c in np.unique(y[rows])), rows.astype(np.int64), test_rows)
                        for i, rows in enumerate(batches))
    return Stream("core50-ni", tuple(range(n_classes)), experiences, mask="all")


def _class_stream(dataset: Dataset, scenario: str, run: int, category: bool) -> Stream:
    train, test = _partitions(dataset)
    batches, test_rows = official_run(dataset, scenario, run)
    y_train, y_test = _labels(train, category), _labels(test, category)
    order: dict[int, None] = {}
    experiences = []
    for i, rows in enumerate(batches):
        classes = np.unique(y_train[rows])
        order.update(dict.fromkeys(int(c) for c in classes))
        own_test = test_rows[np.isin(y_test[test_rows], classes)]
        experiences.append(Experience(i, tuple(int(c) for c in classes), rows.astype(np.int64), own_test))
    return Stream(f"core50-{scenario}", tuple(order), tuple(experiences), mask="seen")


def core50_nc(dataset: Dataset, run: int = 0, category: bool = False) -> Stream:
    """New classes: the 9 batches of official NC run `run`, class-incremental (scores over seen classes).

    `class_order` is the order in which classes first appear (sorted within a batch).
    """
    return _class_stream(dataset, "nc", run, category)


def core50_nic(dataset: Dataset, run: int = 0, category: bool = False) -> Stream:
    """New instances and classes: the 79 batches of official NIC run `run`, scores over seen classes."""
    return _class_stream(dataset, "nic", run, category)
