"""Resuming interrupted runs: after each finished experience the runner saves what it needs to carry
on (the learner's state, the results so far, every random generator) to one file, atomically; a
later identical run loads it and continues from the next experience with the same result."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clbench import __version__
from clbench.errors import ClbenchError
from clbench.files import AtomicFile, marked_read_only

if TYPE_CHECKING:
    from clbench.scenario import Scenario


def run_key(scenario: Scenario, learner_cls: type, config: dict[str, Any], seed: int, device: torch.device) -> str:
    """What identifies a run, hashed: the scenario's whole spec and fingerprint, the learner class,
    its hyper-parameters, the seed, the device and the clbench version. Only a checkpoint with
    the same key is resumed."""
    fields = {
        "spec": dataclasses.asdict(scenario.spec),
        "fingerprint": scenario.fingerprint,
        "learner": f"{learner_cls.__module__}.{learner_cls.__qualname__}",
        "name": learner_cls.name,
        "config": config,
        "seed": seed,
        "device": str(device),
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]


def random_states() -> dict[str, Any]:
    """The global generators' states (Python, NumPy, torch CPU and CUDA), weights_only-loadable."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_random_states(states: dict[str, Any]) -> None:
    """Restore what `random_states` returned."""
    random.setstate(_tuples(states["python"]))
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _tuples(value: Any) -> Any:
    """random.setstate wants the nested tuples random.getstate gave (a reload may give lists)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class Checkpoint:
    """One run's checkpoint file `folder/<key>.pt`."""

    def __init__(self, folder: Path, key: str) -> None:
        self.path = Path(folder) / f"{key}.pt"
        self.key = key
        self.writable = True

    def load(self) -> dict[str, Any] | None:
        """The saved progress, or None when there is none; an unreadable file is one clear error."""
        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ClbenchError(f"cannot read the checkpoint {self.path} ({type(exc).__name__}); delete it, or rerun "
                               "with --no-resume to start this run over") from exc
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            raise ClbenchError(f"the checkpoint {self.path} belongs to another run; delete it, or rerun with "
                               "--no-resume")
        return saved

    def save(self, progress: dict[str, Any]) -> None:
        """Write `progress` (with this run's key) atomically: a temporary file, then a rename. A folder
        that cannot be written (or has no write bit) gives one warning, and the run goes on unsaved."""
        if not self.writable:
            return
        try:
            if marked_read_only(self.path.parent):
                raise PermissionError("the folder is marked read-only")
            target = AtomicFile(self.path)
        except OSError as exc:
            self.writable = False
            warnings.warn(f"cannot write run checkpoints to {self.path.parent} ({exc}); this run cannot be resumed if "
                          "interrupted (give --cache-dir DIR)", stacklevel=2)
            return
        with target as tmp:
            torch.save({**progress, "key": self.key}, tmp)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
