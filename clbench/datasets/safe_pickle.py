"""Reading the pickles that official dataset releases ship, without letting them run code.

A pickle can call any importable function while it loads. The files the suite reads (CIFAR-100
train/test/meta, the mini-ImageNet pickle caches, CoRe50 paths/labels/LUP) hold only builtin
containers, strings, bytes, numbers and NumPy arrays, so every other global is refused before it is
even imported: a crafted data file gives one line naming it, and nothing runs.
"""

from __future__ import annotations

import codecs
import collections
import pickle
from pathlib import Path

import numpy as np

from clbench.errors import ClbenchError

try:  # NumPy >= 1.26 (and 2.x, where numpy.core is a deprecated alias)
    from numpy._core import multiarray, numeric
except ImportError:  # pragma: no cover - NumPy 1.24 / 1.25
    from numpy.core import multiarray, numeric

__all__ = ["ALLOWED", "load"]


def _allowed() -> dict[tuple[str, str], object]:
    """(module, name) as written in a pickle -> the object it stands for (Python 2 and 3 spellings)."""
    table: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes at protocol 2
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    for builtins in ("builtins", "__builtin__"):
        for kind in (bytes, bytearray, set, frozenset, complex):  # bytes(): how b'' is written
            table[(builtins, kind.__name__)] = kind
    return table


ALLOWED = _allowed()


class _Refused(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified = f"{module}.{name}"


class _DataUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ALLOWED (without importing anything)."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(module, name) from None


def load(path: Path, what: str, fix: str) -> object:
    """The object pickled in `path` (Python 2 or 3 pickles; Python 2 strings decoded as latin-1).

    `what` names the file for messages ("CIFAR-100 file") and `fix` says what to do ("get it again
    from URL"). A file that refers to any global outside ALLOWED, a truncated or foreign file, or an
    unreadable one is a one-line ClbenchError naming the file. FileNotFoundError is left to the caller,
    which knows how to say where the file comes from.
    """
    try:
        with open(path, "rb") as f:
            return _DataUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise
    except _Refused as e:
        raise ClbenchError(f"{what} {path} was refused: it asks to call {e.qualified}, which no data file needs "
                           f"(a data file may not run code): {fix}") from None
    except (PermissionError, IsADirectoryError) as e:
        raise ClbenchError(f"{what} {path} cannot be read ({e.strerror}): {fix}") from None
    except Exception as e:  # truncated or foreign pickles raise anything from EOFError to MemoryError
        why = " ".join(f"{type(e).__name__}: {e}".split())
        raise ClbenchError(f"{what} {path} is corrupt ({why}): {fix}") from None
