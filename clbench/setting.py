"""The setting identity of a run: one short hash of everything in the resolved scenario spec that
can change a number. Two rows are compared or aggregated only when their stream fingerprint (the
same data in the same order) and their setting identity (the same way of running on it) agree."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import lru_cache
from pathlib import Path

from clbench.backbones import weights_id
from clbench.errors import ClbenchError
from clbench.protocols.class_order import RUN_SEED
from clbench.scenario import ScenarioSpec

NOT_A_SETTING = ("name", "description", "overrides")
"""Spec fields that name or describe a setting but cannot change a number."""
SEEDED_PREFIX = f"{RUN_SEED}-"
"""The start of the identity of a setting whose class order is drawn from each run's seed: its rows'
stream fingerprints differ by seed, and they are aggregated by this identity instead."""


def setting_identity(spec: ScenarioSpec) -> str:
    """A 12-hex-digit hash of every field of the resolved `spec` except `NOT_A_SETTING`, with a
    weights file replaced by the identity of its content (so the same file under two paths is one
    setting, and an edited file is another). The learner is not part of it: every learner run on
    one setting shares the identity. A "seeded" class order prefixes it with `SEEDED_PREFIX`."""
    values = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in NOT_A_SETTING}
    values["weights"] = _weights_identity(spec.weights)
    text = json.dumps(values, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return SEEDED_PREFIX + digest if spec.class_order == RUN_SEED else digest


def is_seeded(setting_id: object) -> bool:
    """Whether a row's `setting_id` names a setting with a "seeded" class order."""
    return isinstance(setting_id, str) and setting_id.startswith(SEEDED_PREFIX)


def _weights_identity(weights: str) -> str:
    if weights in ("", "hub"):  # random init or timm's pretrained weights of the encoder/backbone named beside
        return weights
    path = Path(weights).expanduser()
    try:
        stat = path.stat()
        return _content_id(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        raise ClbenchError(f"cannot read the weights file '{weights}': {exc.strerror or exc}") from None


@lru_cache(maxsize=16)
def _content_id(path: str, mtime_ns: int, size: int) -> str:
    """Content hash of a weights file, computed once per (path, modification time, size)."""
    return weights_id("", path)
