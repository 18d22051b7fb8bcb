"""CoRe50 NI / NC / NIC streams: session order, the official LUP runs, category level, fingerprints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from clbench.datasets.arrays import Dataset, LabeledArrays
from clbench.datasets.core50 import CLASS_NAMES, TEST_SESSIONS, TRAIN_SESSIONS
from clbench.errors import ClbenchError
from clbench.protocols.core50 import category_level, core50_nc, core50_ni, core50_nic

OBJECTS = (0, 1, 5, 6, 10, 11, 20, 25, 30, 45)  # 10 objects in 7 categories
FRAMES = 2


def official_lup(session: np.ndarray, obj: np.ndarray, n_runs: int = 2) -> dict:
    """LUP as the loader carries it: scenario -> runs -> [batch rows..., test rows] of paths.pkl indices."""
    train, test = np.flatnonzero(np.isin(session, TRAIN_SESSIONS)), np.flatnonzero(np.isin(session, TEST_SESSIONS))
    lup: dict = {"ni": [], "nc": [], "nic": []}
    key = session * 100 + obj
    for r in range(n_runs):
        rng = np.random.RandomState(r)
        objects = rng.permutation(OBJECTS)
        pairs = rng.permutation([s * 100 + o for s in TRAIN_SESSIONS for o in OBJECTS])
        groups = {
            "ni": [train[session[train] == s] for s in rng.permutation(TRAIN_SESSIONS)],
            "nc": [train[np.isin(obj[train], g)] for g in [objects[:2], *([o] for o in objects[2:])]],
            "nic": [train[np.isin(key[train], g)] for g in [pairs[:2], *([p] for p in pairs[2:])]],
        }
        for scenario, batches in groups.items():
            lup[scenario].append([rng.permutation(b).astype(np.int64) for b in batches] + [rng.permutation(test)])
    return lup


def make_core50(lup: bool = True) -> Dataset:
    """A tiny CoRe50 as `clbench.datasets.core50.load` returns it (1 x 1 images: protocols never look)."""
    rows = [(s, o) for s in sorted(range(1, 12), key=str) for o in OBJECTS for _ in range(FRAMES)]
    session, obj = (np.array(col, dtype=np.int64) for col in zip(*rows))
    partitions = {}
    for name, sessions in (("train", TRAIN_SESSIONS), ("test", TEST_SESSIONS)):
        idx = np.flatnonzero(np.isin(session, sessions))
        meta = {"session": session[idx], "object": obj[idx], "category": obj[idx] // 5, "path_index": idx}
        images = np.zeros((len(idx), 3, 1, 1), dtype=np.uint8)
        partitions[name] = LabeledArrays(images, obj[idx], CLASS_NAMES, meta)
    return Dataset("core50", partitions, {"lup": official_lup(session, obj)} if lup else {})


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_core50()


def fingerprint(stream, data: Dataset) -> str:
    return stream.fingerprint(data.name, len(data.partition("train")), len(data.partition("test")))


def test_ni_is_the_training_sessions_in_order_evaluated_over_all_classes(data: Dataset):
    stream = core50_ni(data)
    train, test = data.partition("train"), data.partition("test")
    assert stream.protocol == "core50-ni" and stream.mask == "all" and not stream.task_ids_at_test
    assert stream.reports_forward_transfer and stream.class_order == tuple(range(50))
    assert len(stream.experiences) == 8
    for exp, s in zip(stream.experiences, (1, 2, 4, 5, 6, 8, 9, 11)):
        assert set(train.metadata["session"][exp.train_indices]) == {s}
        assert len(exp.train_indices) == len(OBJECTS) * FRAMES
        assert np.all(np.diff(train.metadata["path_index"][exp.train_indices]) > 0)  # paths.pkl order
        assert exp.classes == OBJECTS and exp.task is None
        np.testing.assert_array_equal(exp.test_indices, np.arange(len(test)))
    assert set(test.metadata["session"]) == {3, 7, 10}
    covered = np.sort(np.concatenate([e.train_indices for e in stream.experiences]))
    np.testing.assert_array_equal(covered, np.arange(len(train)))


def test_ni_needs_no_lup_but_can_follow_an_official_run(data: Dataset):
    bare = make_core50(lup=False)
    assert fingerprint(core50_ni(bare), bare) == fingerprint(core50_ni(data), data)
    stream = core50_ni(data, run=1)
    run = data.index_lists["lup"]["ni"][1]
    train_pi, test_pi = (data.partition(p).metadata["path_index"] for p in ("train", "test"))
    for exp, batch in zip(stream.experiences, run[:-1]):
        np.testing.assert_array_equal(train_pi[exp.train_indices], batch)
        np.testing.assert_array_equal(test_pi[exp.test_indices], np.sort(run[-1]))
    assert stream.mask == "all" and fingerprint(stream, data) != fingerprint(core50_ni(data), data)


@pytest.mark.parametrize("protocol, scenario, n", [(core50_nc, "nc", 9), (core50_nic, "nic", 79)])
def test_nc_and_nic_follow_the_official_lists(data: Dataset, protocol, scenario: str, n: int):
    train, test = data.partition("train"), data.partition("test")
    label_of = np.zeros(train.metadata["path_index"].max() + test.metadata["path_index"].max() + 1, dtype=np.int64)
    label_of[test.metadata["path_index"]] = test.labels
    for r in (0, 1):
        stream = protocol(data, run=r)
        run = data.index_lists["lup"][scenario][r]
        assert stream.protocol == f"core50-{scenario}" and stream.mask == "seen" and len(stream.experiences) == n
        first_seen: list[int] = []
        for exp, batch in zip(stream.experiences, run[:-1]):
            np.testing.assert_array_equal(train.metadata["path_index"][exp.train_indices], batch)  # LUP order kept
            assert exp.classes == tuple(sorted(set(train.labels[exp.train_indices].tolist())))
            first_seen += [c for c in exp.classes if c not in first_seen]
            # its test set: the official test list, restricted to its own classes
            official_test = np.sort(run[-1])
            expected = official_test[np.isin(label_of[official_test], exp.classes)]
            np.testing.assert_array_equal(test.metadata["path_index"][exp.test_indices], expected)
            assert len(exp.test_indices) == len(exp.classes) * 3 * FRAMES
        assert stream.class_order == tuple(first_seen) and sorted(first_seen) == list(OBJECTS)


def test_nc_classes_are_disjoint_and_nic_classes_recur(data: Dataset):
    nc = core50_nc(data)
    assert [len(e.classes) for e in nc.experiences] == [2] + [1] * 8
    assert len({c for e in nc.experiences for c in e.classes}) == len(OBJECTS)
    nic = core50_nic(data)
    assert sum(len(e.classes) for e in nic.experiences) > len(OBJECTS)


def test_category_level(data: Dataset):
    cats = category_level(data)
    assert cats.num_classes == 10 and cats.name == "core50-category"
    assert cats.partition("train").class_names[:3] == ("plug_adapter", "mobile_phone", "scissor")
    np.testing.assert_array_equal(cats.partition("test").labels, data.partition("test").metadata["category"])
    assert cats.partition("train").images is data.partition("train").images
    categories = tuple(sorted({o // 5 for o in OBJECTS}))
    ni = core50_ni(data, category=True)
    assert ni.class_order == tuple(range(10)) and all(e.classes == categories for e in ni.experiences)
    assert fingerprint(core50_ni(cats, category=True), cats) == fingerprint(ni, cats)
    for protocol in (core50_nc, core50_nic):
        stream = protocol(data, category=True)
        assert set(stream.class_order) == set(categories)
        y = data.partition("train").metadata["category"]
        for exp in stream.experiences:
            assert exp.classes == tuple(sorted(set(y[exp.train_indices].tolist())))
            assert set(data.partition("test").metadata["category"][exp.test_indices]) == set(exp.classes)
        assert fingerprint(stream, data) != fingerprint(protocol(data), data)


def test_streams_are_deterministic_and_fingerprints_pinned(data: Dataset):
    again = make_core50()
    streams = {
        "ni": lambda d: core50_ni(d), "ni-run0": lambda d: core50_ni(d, run=0), "nc": lambda d: core50_nc(d),
        "nc-run1": lambda d: core50_nc(d, run=1), "nic": lambda d: core50_nic(d),
        "nc-cat": lambda d: core50_nc(d, category=True),
    }
    prints = {name: fingerprint(make(data), data) for name, make in streams.items()}
    assert prints == {name: fingerprint(make(again), again) for name, make in streams.items()}
    assert len(set(prints.values())) == len(prints)
    # pinned: a change of these streams must be a deliberate, visible change
    assert prints["ni"] == PINNED_NI and prints["nc"] == PINNED_NC


PINNED_NI = "41cc6e43ee700746"
PINNED_NC = "0a3634e60920575c"


def test_missing_lup_is_a_clear_error():
    bare = make_core50(lup=False)
    for protocol in (core50_nc, core50_nic):
        with pytest.raises(ClbenchError, match=r"needs the official run lists: put LUP\.pkl \(from https://"):
            protocol(bare)
    with pytest.raises(ClbenchError, match="LUP.pkl"):
        core50_ni(bare, run=0)


def test_bad_runs_and_lists_are_clear_errors(data: Dataset):
    with pytest.raises(ClbenchError, match=r"NC has runs 0\.\.1, got run 5"):
        core50_nc(data, run=5)
    lup = data.index_lists["lup"]
    short = dataclasses.replace(data, index_lists={"lup": {**lup, "nc": [lup["nc"][0][3:]]}})
    with pytest.raises(ClbenchError, match="'nc' run 0 has 6 batches, expected 9"):
        core50_nc(short)
    test_row = int(data.partition("test").metadata["path_index"][0])
    run = [np.append(lup["nc"][0][0], test_row), *lup["nc"][0][1:]]
    crossed = dataclasses.replace(data, index_lists={"lup": {**lup, "nc": [run]}})
    with pytest.raises(ClbenchError, match=rf"'nc' run 0 batch 0 names paths\.pkl row {test_row}, which is not"):
        core50_nc(crossed)
    plain = Dataset("digits", {p: LabeledArrays(np.zeros((2, 1, 1, 1), np.uint8), np.arange(2), ("a", "b"))
                               for p in ("train", "test")})
    with pytest.raises(ClbenchError, match="'digits' is not CoRe50"):
        core50_ni(plain)
