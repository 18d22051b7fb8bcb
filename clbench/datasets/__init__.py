"""Data sources: files on disk -> `Dataset` of uint8 arrays. No protocol logic lives here."""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path

from clbench.datasets.arrays import Dataset, LabeledArrays
from clbench.errors import ClbenchError
from clbench.files import usable_folder

__all__ = ["Dataset", "LabeledArrays", "SOURCES", "load_dataset", "resolve_data_root"]

# dataset name -> "module:function", a function `(root: Path) -> Dataset`
SOURCES: dict[str, str] = {
    "digits": "clbench.datasets.digits:load",
    "cifar100": "clbench.datasets.cifar100:load",
    "cifar100-fscil": "clbench.datasets.fscil_splits:load_cifar100_fscil",
    "mini-imagenet": "clbench.datasets.miniimagenet:load",
    "mini-imagenet-fscil": "clbench.datasets.fscil_splits:load_miniimagenet_fscil",
    "core50": "clbench.datasets.core50:load",
}


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """`--data-root`, else `$CLBENCH_DATA`, else `~/.cache/clbench`; one line if that is a file (or a
    folder that cannot be read). It need not exist yet, nor be writable (see `usable_folder`)."""
    if data_root:
        return usable_folder(data_root, "--data-root")
    if os.environ.get("CLBENCH_DATA"):
        return usable_folder(os.environ["CLBENCH_DATA"], "$CLBENCH_DATA")
    return usable_folder(Path.home() / ".cache" / "clbench", "the default data root")


def load_dataset(name: str, data_root: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name from the data root; prepared caches go to `cache_dir` when given
    (for a read-only data root), else next to the data."""
    if name not in SOURCES:
        raise ClbenchError(f"unknown dataset '{name}' (known: {', '.join(sorted(SOURCES))})")
    module, _, function = SOURCES[name].partition(":")
    load = getattr(importlib.import_module(module), function)
    if cache_dir is not None and "cache_dir" in inspect.signature(load).parameters:
        return load(resolve_data_root(data_root), cache_dir=Path(cache_dir))
    return load(resolve_data_root(data_root))
