"""`clbench reproduce RUN_ID`: re-run one leaderboard row from what it records (scenario and
overrides, learner and config, seed; the encoder and weights are part of the overrides) and tell
whether the stream fingerprint, the setting and the accuracy matrix come out the same."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clbench import leaderboard
from clbench.errors import ClbenchError

TOLERANCE = 1.0
"""Largest accepted difference of an accuracy-matrix cell, in percentage points, when the rerun is on
another kind of device or other torch/clbench versions than the row (float arithmetic differs)."""


@dataclass(frozen=True)
class Check:
    """The outcome of a reproduction: what matched, and how far the matrices are apart."""

    row: pd.Series
    new_row: dict
    fingerprint: bool
    setting: bool
    max_difference: float
    tolerance: float

    @property
    def matrix(self) -> bool:
        return self.max_difference <= self.tolerance

    @property
    def ok(self) -> bool:
        return self.fingerprint and self.setting and self.matrix


def find_row(path: Path, run_id: str) -> pd.Series:
    """The row whose `run_id` is `run_id` (or starts with it, if only one does)."""
    frame = leaderboard.read(path)
    ids = frame["run_id"].astype(str)
    found = frame[ids == run_id]
    if found.empty:
        found = frame[ids.str.startswith(run_id)] if run_id else found
    if found.empty:
        raise ClbenchError(f"no row with run_id '{run_id}' in {path} (see the run_id column)")
    if len(found) > 1:
        raise ClbenchError(f"run_id '{run_id}' matches {len(found)} rows in {path}; give more of it")
    return found.iloc[0]


def exact(row: pd.Series, new_row: dict) -> bool:
    """Whether bit-identical numbers are expected: both on the CPU, with the same torch and clbench."""
    return (str(row["device"]) == new_row["device"] == "cpu" and str(row["torch_version"]) == new_row["torch_version"]
            and str(row["clbench_version"]) == new_row["clbench_version"])


def reproduce(row: pd.Series, data_root: str | None, cache_root: Path, device_name: str | None = None,
              threads: int | None = None) -> Check:
    """Rebuild the row's setting and run it again (nothing is appended); a setting that cannot be
    rebuilt (data or weights missing, a learner not installed) is one line saying so."""
    from clbench.device import resolve_device
    from clbench.learner import get_learner, validate
    from clbench.orchestration import RunOptions, configure_torch, run_and_store
    from clbench.scenario import build_scenario, load_spec
    from clbench.setting import setting_identity

    what = f"run {row['run_id']} ({row['learner']} on {row['scenario']}, seed {int(row['seed'])})"
    try:
        spec = load_spec(str(row["scenario"])).with_overrides(json.loads(row["scenario_overrides"]))
        setting = setting_identity(spec)
        scenario = build_scenario(spec, data_root)
        cls = get_learner(str(row["learner"]))
        config = validate(cls, json.loads(row["learner_config"]))
    except ClbenchError as exc:
        raise ClbenchError(f"cannot rebuild the setting of {what}: {exc}") from None
    device = resolve_device(device_name or ("cpu" if row["device"] == "cpu" else "auto"))
    configure_torch(scenario, device, threads)
    options = RunOptions(device, cache_root / "checkpoints", None, None, resume=False, progress=False)
    new_row = run_and_store(scenario, cls, config, int(row["seed"]), options)
    old, new = json.loads(row["accuracy_matrix"]), json.loads(new_row["accuracy_matrix"])
    same_shape = [len(r) for r in old] == [len(r) for r in new]
    difference = max((abs(a - b) for r, s in zip(old, new) for a, b in zip(r, s)), default=0.0) if same_shape else float("inf")
    return Check(row, new_row, new_row["scenario_fingerprint"] == row["scenario_fingerprint"],
                 setting == row["setting_id"], difference, 0.0 if exact(row, new_row) else TOLERANCE)


def describe(check: Check) -> list[str]:
    """The report: one line per check, then the verdict."""
    row, new = check.row, check.new_row

    def mark(ok: bool) -> str:
        return "same     " if ok else "DIFFERENT"

    how = "exactly (CPU, same torch and clbench)" if check.tolerance == 0 else \
        f"within {check.tolerance} points (device or versions differ: {row['device']} -> {new['device']}, " \
        f"torch {row['torch_version']} -> {new['torch_version']})"
    return [
        f"run {row['run_id']}: {row['learner']} on {row['scenario']}, seed {int(row['seed'])}",
        f"  {mark(check.fingerprint)} stream fingerprint  {str(row['scenario_fingerprint'])[:12]} -> {new['scenario_fingerprint'][:12]}",
        f"  {mark(check.setting)} setting             {row['setting_id']} -> {new['setting_id']}",
        f"  {mark(check.matrix)} accuracy matrix     largest difference {check.max_difference:.4f} points, "
        f"compared {how}",
        "reproduced" if check.ok else "NOT reproduced",
    ]
