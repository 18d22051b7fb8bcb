"""Class orders: the natural order, a seeded permutation, or a named standard order."""

from __future__ import annotations

import numpy as np

from clbench.errors import ClbenchError

# name -> seed of NumPy's legacy RandomState permutation (stable across NumPy versions)
SEEDED_ORDERS = {"pycil": 1993}


def resolve_class_order(order: str | int, num_classes: int) -> tuple[int, ...]:
    """Turn a class-order setting into a tuple of class ids.

    "natural" is 0..C-1; an integer (or a string of digits) is the permutation
    `numpy.random.RandomState(seed).permutation(C)`; "pycil" is seed 1993 (PyCIL, PILOT).
    """
    if isinstance(order, str) and order.strip().lstrip("-").isdigit():
        order = int(order)
    if isinstance(order, int):
        return tuple(int(c) for c in np.random.RandomState(order).permutation(num_classes))
    if order == "natural":
        return tuple(range(num_classes))
    if order in SEEDED_ORDERS:
        return resolve_class_order(SEEDED_ORDERS[order], num_classes)
    known = ["natural", *SEEDED_ORDERS, "<integer seed>"]
    raise ClbenchError(f"unknown class_order '{order}' (known: {', '.join(known)})")
