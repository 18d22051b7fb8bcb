"""Streams are deterministic, disjoint and fingerprinted."""

import numpy as np
import pytest

from clbench.errors import ClbenchError
from clbench.protocols import resolve_class_order, split_by_class
from clbench.scenario import build_scenario, load_spec

LABELS_TRAIN = np.repeat(np.arange(6), 4)
LABELS_TEST = np.repeat(np.arange(6), 2)


def test_class_incremental_split_is_disjoint_and_complete():
    stream = split_by_class(LABELS_TRAIN, LABELS_TEST, (4, 0, 2, 5, 1, 3), 3)
    assert [e.classes for e in stream.experiences] == [(4, 0), (2, 5), (1, 3)]
    seen = np.concatenate([e.train_indices for e in stream.experiences])
    assert sorted(seen) == list(range(len(LABELS_TRAIN)))
    for e in stream.experiences:
        assert set(LABELS_TRAIN[e.train_indices]) == set(e.classes)
        assert set(LABELS_TEST[e.test_indices]) == set(e.classes)
        assert e.task is None
    assert stream.mask == "seen" and not stream.task_ids_at_test


def test_task_incremental_gives_task_ids_and_task_masks():
    stream = split_by_class(LABELS_TRAIN, LABELS_TEST, tuple(range(6)), 2, task_incremental=True)
    assert [e.task for e in stream.experiences] == [0, 1]
    assert stream.mask == "task" and stream.task_ids_at_test and stream.reports_forward_transfer


def test_uneven_split_is_a_clear_error():
    with pytest.raises(ClbenchError, match="6 classes cannot be split into 4"):
        split_by_class(LABELS_TRAIN, LABELS_TEST, tuple(range(6)), 4)


def test_class_orders():
    assert resolve_class_order("natural", 5) == (0, 1, 2, 3, 4)
    assert resolve_class_order(7, 10) == resolve_class_order("7", 10)
    assert sorted(resolve_class_order(7, 10)) == list(range(10))
    # PyCIL / PILOT: np.random.seed(1993); np.random.permutation(100)
    assert resolve_class_order("pycil", 100)[:5] == (68, 56, 78, 8, 23)
    icarl = resolve_class_order("icarl", 100)
    assert icarl[:5] == (87, 0, 52, 58, 44) and sorted(icarl) == list(range(100))
    with pytest.raises(ClbenchError, match="defined for 100 classes, not 10"):
        resolve_class_order("icarl", 10)
    with pytest.raises(ClbenchError, match="unknown class_order"):
        resolve_class_order("nope", 10)


def test_fingerprint_is_stable_and_sensitive():
    a = split_by_class(LABELS_TRAIN, LABELS_TEST, tuple(range(6)), 3)
    b = split_by_class(LABELS_TRAIN, LABELS_TEST, tuple(range(6)), 3)
    assert a.fingerprint("x", 24, 12) == b.fingerprint("x", 24, 12)
    other_order = split_by_class(LABELS_TRAIN, LABELS_TEST, (1, 0, 2, 3, 4, 5), 3)
    til = split_by_class(LABELS_TRAIN, LABELS_TEST, tuple(range(6)), 3, task_incremental=True)
    fingerprints = {a.fingerprint("x", 24, 12), other_order.fingerprint("x", 24, 12),
                    til.fingerprint("x", 24, 12), a.fingerprint("y", 24, 12)}
    assert len(fingerprints) == 4


def test_split_digits_is_the_same_everywhere():
    scenario = build_scenario(load_spec("split-digits"))
    train, test = scenario.dataset.partition("train"), scenario.dataset.partition("test")
    assert len(train) + len(test) == 1797 and len(test) == 445
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == np.uint8
    assert [e.classes for e in scenario.stream.experiences] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    # pinned: a change of the split rule or the stream must be a deliberate, visible change
    assert scenario.fingerprint == "0d459c438ea72072"


def test_spec_override_changes_fingerprint_and_is_recorded():
    spec = load_spec("split-digits")
    modified = spec.with_overrides({"n_experiences": "2", "class_order": "3"})
    assert modified.n_experiences == 2 and modified.overrides == {"n_experiences": 2, "class_order": "3"}
    assert modified.display_name == "split-digits*"
    assert build_scenario(modified).fingerprint != build_scenario(spec).fingerprint


def test_spec_errors_are_one_line():
    spec = load_spec("split-digits")
    with pytest.raises(ClbenchError, match="no setting 'bogus'"):
        spec.with_overrides({"bogus": 1})
    with pytest.raises(ClbenchError, match="'epochs'"):
        spec.with_overrides({"epochs": "many"})
    with pytest.raises(ClbenchError, match="unknown scenario 'nope'.*split-digits"):
        load_spec("nope")
