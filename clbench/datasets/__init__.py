"""Data sources: files on disk -> `Dataset` of uint8 arrays. No protocol logic lives here."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from clbench.datasets.arrays import Dataset, LabeledArrays
from clbench.errors import ClbenchError

__all__ = ["Dataset", "LabeledArrays", "SOURCES", "load_dataset", "resolve_data_root"]

# dataset name -> module that defines `load(root: Path) -> Dataset`
SOURCES: dict[str, str] = {
    "digits": "clbench.datasets.digits",
}


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """`--data-root`, else `$CLBENCH_DATA`, else `~/.cache/clbench`."""
    if data_root:
        return Path(data_root).expanduser()
    if os.environ.get("CLBENCH_DATA"):
        return Path(os.environ["CLBENCH_DATA"]).expanduser()
    return Path.home() / ".cache" / "clbench"


def load_dataset(name: str, data_root: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name from the data root."""
    if name not in SOURCES:
        raise ClbenchError(f"unknown dataset '{name}' (known: {', '.join(sorted(SOURCES))})")
    return importlib.import_module(SOURCES[name]).load(resolve_data_root(data_root))
