"""Federated reconnaissance (Hendryx et al. 2021): a server's base classes, then missions in which
several clients each reconnoitre their own new classes from a few images."""

from __future__ import annotations

import numpy as np

from clbench.errors import ClbenchError
from clbench.protocols.stream import Experience, Stream


def federated_stream(train_labels: np.ndarray, test_labels: np.ndarray, class_order: tuple[int, ...],
                     n_base: int, n_missions: int, n_clients: int, classes_per_client: int, shots: int,
                     seed: int = 0) -> Stream:
    """Experience 0: the server's `n_base` base classes (all their training images). Experience m
    (1..n_missions): a mission of `n_clients` clients, each with its own `classes_per_client` new
    classes (next in `class_order`) and `shots` training images per class, drawn with
    `numpy.random.RandomState(seed)`. An experience's test data are the test images of all its
    classes; `Stream.clients[m]` holds the per-client experiences."""
    needed = n_base + n_missions * n_clients * classes_per_client
    if needed > len(class_order):
        raise ClbenchError(f"federated reconnaissance needs {needed} classes "
                           f"({n_base} base + {n_missions} missions x {n_clients} clients x {classes_per_client}); "
                           f"the dataset has {len(class_order)}")
    rng = np.random.RandomState(seed)
    rows_of = {int(c): np.flatnonzero(train_labels == c) for c in class_order[:needed]}
    short = [c for c in class_order[n_base:needed] if len(rows_of[c]) < shots]
    if short:
        raise ClbenchError(f"class {short[0]} has {len(rows_of[short[0]])} training images; each client needs {shots}")

    def experience(index: int, classes: tuple[int, ...], train: np.ndarray) -> Experience:
        return Experience(index, classes, np.sort(train), np.flatnonzero(np.isin(test_labels, classes)))

    base = tuple(class_order[:n_base])
    experiences = [experience(0, base, np.flatnonzero(np.isin(train_labels, base)))]
    clients: list[tuple[Experience, ...]] = [()]
    start = n_base
    for m in range(1, n_missions + 1):
        mission = []
        for _ in range(n_clients):
            classes = tuple(class_order[start : start + classes_per_client])
            start += classes_per_client
            rows = np.concatenate([rng.choice(rows_of[c], size=shots, replace=False) for c in classes])
            mission.append(experience(m, classes, rows))
        clients.append(tuple(mission))
        experiences.append(experience(m, tuple(c for e in mission for c in e.classes),
                                      np.concatenate([e.train_indices for e in mission])))
    return Stream(protocol="federated", class_order=tuple(class_order[:needed]), experiences=tuple(experiences),
                  mask="seen", clients=tuple(clients))
