"""Class orders: the natural order, a seeded permutation (a fixed seed, or each run's own seed), or a
named standard order."""

from __future__ import annotations

import numpy as np

from clbench.errors import ClbenchError

# name -> seed of NumPy's legacy RandomState permutation (stable across NumPy versions)
SEEDED_ORDERS = {"pycil": 1993}

RUN_SEED = "seeded"
"""The class order drawn from each run's own seed: `RandomState(seed).permutation(C)`, as in the
multi-order protocol of FACIL and PyCIL. The stream (and its fingerprint) then differs by seed, so
results over seeds include the variance due to the class order."""

# name -> a published fixed order: iCaRL's CIFAR-100 order (also PODNet's, and the NMC paper's)
FIXED_ORDERS = {
    "icarl": (
        87, 0, 52, 58, 44, 91, 68, 97, 51, 15, 94, 92, 10, 72, 49, 78, 61, 14, 8, 86, 84, 96, 18, 24, 32,
        45, 88, 11, 4, 67, 69, 66, 77, 47, 79, 93, 29, 50, 57, 83, 17, 81, 41, 12, 37, 59, 25, 20, 80, 73,
        1, 28, 6, 46, 62, 82, 53, 9, 31, 75, 38, 63, 33, 74, 27, 22, 36, 3, 16, 21, 60, 19, 70, 90, 89,
        43, 5, 42, 65, 76, 40, 30, 23, 85, 2, 95, 56, 48, 71, 64, 98, 13, 99, 7, 34, 55, 54, 26, 35, 39,
    ),
}


def resolve_class_order(order: str | int, num_classes: int) -> tuple[int, ...]:
    """Turn a class-order setting into a tuple of class ids.

    "natural" is 0..C-1; an integer (or a string of digits) is the permutation
    `numpy.random.RandomState(seed).permutation(C)`; "pycil" is seed 1993 (PyCIL, PILOT);
    "icarl" is iCaRL's fixed CIFAR-100 order (PODNet, the NMC paper). "seeded" (`RUN_SEED`) is
    not an order until a run's seed replaces it (`scenario.build_scenario`).
    """
    if isinstance(order, str) and order.strip().lstrip("-").isdigit():
        order = int(order)
    if isinstance(order, int):
        return tuple(int(c) for c in np.random.RandomState(order).permutation(num_classes))
    if order == "natural":
        return tuple(range(num_classes))
    if order in SEEDED_ORDERS:
        return resolve_class_order(SEEDED_ORDERS[order], num_classes)
    if order in FIXED_ORDERS:
        if len(FIXED_ORDERS[order]) != num_classes:
            raise ClbenchError(f"class_order '{order}' is defined for {len(FIXED_ORDERS[order])} classes, not {num_classes}")
        return FIXED_ORDERS[order]
    if order == RUN_SEED:
        raise ClbenchError("class_order 'seeded' is drawn from a run's seed: build the scenario with that seed")
    known = ["natural", RUN_SEED, *SEEDED_ORDERS, *FIXED_ORDERS, "<integer seed>"]
    raise ClbenchError(f"unknown class_order '{order}' (known: {', '.join(known)})")
