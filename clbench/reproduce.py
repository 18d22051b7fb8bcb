"""`clbench reproduce RUN_ID`: re-run one leaderboard row from what it records (scenario and
overrides, learner and config, seed; the encoder and weights are part of the overrides) under the
arithmetic it records (torch threads, deterministic algorithms, precision), and tell whether the
stream fingerprint, the setting and the accuracy matrix come out the same, cell by cell."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from clbench import leaderboard
from clbench.errors import ClbenchError

TOLERANCE_SAMPLES = 2
"""Where the arithmetic differs from the row's (another device, processor, torch build,
clbench source, thread count or deterministic setting; or the row does not record it), the test
samples a cell may be off by: a cell on experience j's test set of n_j samples may differ by at most
TOLERANCE_SAMPLES * 100 / n_j points (one sample is 1.12 points on split-digits' 89)."""

ARITHMETIC = {
    "device": "device",
    "cpu": "CPU",
    "torch_version": "torch",
    "source_hash": "clbench source",
    "torch_threads": "torch threads",
    "deterministic": "deterministic algorithms",
}
"""The row columns that decide a run's floating-point arithmetic besides its setting, learner, config
and seed (the precision is part of the setting), and what the report calls them."""

SHOWN_CELLS = 20
"""Differing cells listed one per line; beyond that, a count."""


@dataclass(frozen=True)
class Cell:
    """One accuracy-matrix cell A[i][j] (after experience i, on experience j's test set) that differs."""

    after: int
    on: int
    old: float
    new: float
    test_samples: int
    """How many test samples the cell's accuracy is over."""

    @property
    def points(self) -> float:
        return self.new - self.old

    @property
    def samples(self) -> float:
        """The difference in test samples: a whole number up to `rounding`."""
        return abs(self.points) * self.test_samples / 100.0

    @property
    def rounding(self) -> float:
        """How far `samples` may be from the true count because rows keep accuracies to 4 decimals."""
        return 1e-4 * self.test_samples / 100.0 + 1e-9


@dataclass(frozen=True)
class Check:
    """The outcome of a reproduction: what matched, which settings of the arithmetic differ or are
    unknown, and the accuracy-matrix cells that differ."""

    row: pd.Series
    new_row: dict
    fingerprint: bool
    setting: bool
    same_shape: bool
    cells: tuple[Cell, ...]
    differing: tuple[str, ...]
    """The arithmetic settings that differ, as "name old -> new"."""
    unknown: tuple[str, ...]
    """The arithmetic settings the row does not record (written before clbench recorded them)."""

    @property
    def exact(self) -> bool:
        """Whether bit-identical numbers are expected: every setting that decides the arithmetic is the
        row's, on the CPU or with deterministic algorithms."""
        deterministic = self.new_row["device"] == "cpu" or self.new_row["deterministic"] == "true"
        return not self.differing and not self.unknown and deterministic

    @property
    def tolerance(self) -> int:
        """The test samples a cell may be off by: 0 when the result should be exact."""
        return 0 if self.exact else TOLERANCE_SAMPLES

    @property
    def matrix(self) -> bool:
        """Equal shapes, and every cell equal (exact) or within the tolerance."""
        if self.exact:
            return self.same_shape and not self.cells
        return self.same_shape and all(cell.samples <= self.tolerance + cell.rounding for cell in self.cells)

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


def recorded(row: pd.Series | dict, column: str) -> str | None:
    """A row's cell as text (a whole number without ".0"), or None where the row has no value."""
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def recorded_precision(row: pd.Series) -> str:
    """The precision a row computed in: its `precision` cell; fp32 for a row written before that column
    existed (its learn and predict ran without autocast)."""
    return recorded(row, "precision") or "fp32"


def samples_per_column(scenario: Any) -> list[int]:
    """The test samples behind each column of a run's accuracy matrix: experience j's test set; for
    few-shot episodes (one cell, the mean episode accuracy) the episodes' queries, episodes x queries."""
    episodes = scenario.stream.episodes
    if episodes:
        return [len(episodes) * max(len(e.query) for e in episodes)]
    return [len(e.test_indices) for e in scenario.stream.experiences]


def compare_matrices(old: list[list[float]], new: list[list[float]], sizes: list[int]) -> tuple[bool, tuple[Cell, ...]]:
    """Whether the matrices have the same shape, and the cells that differ (both as the row stores them,
    rounded to 4 decimals); NaN equals NaN."""
    if [len(r) for r in old] != [len(r) for r in new]:
        return False, ()
    cells = tuple(Cell(i, j, a, b, sizes[j]) for i, (r, s) in enumerate(zip(old, new)) for j, (a, b) in enumerate(zip(r, s))
                  if a != b and not (a != a and b != b))
    return True, cells


def compare_arithmetic(row: pd.Series, new_row: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The `ARITHMETIC` settings that differ between the row and its rerun ("name old -> new"), and
    those the row does not record."""
    differing, unknown = [], []
    for column, name in ARITHMETIC.items():
        old, new = recorded(row, column), recorded(new_row, column)
        if old is None:
            unknown.append(name)
        elif old != new:
            differing.append(f"{name} {old} -> {new}")
    return tuple(differing), tuple(unknown)


def rerun_threads(row: pd.Series, threads: int | None) -> int | None:
    """The torch thread count of the rerun: `threads` when given, else the row's (None: `clbench run`'s
    default, for a row that does not record it)."""
    if threads is not None:
        return threads
    value = recorded(row, "torch_threads")
    return int(value) if value is not None else None


def reproduce(row: pd.Series, data_root: str | None, cache_root: Path, device_name: str | None = None,
              threads: int | None = None, precision: str | None = None) -> Check:
    """Rebuild the row's setting and run it again (nothing is appended), with the row's torch thread
    count (unless `threads` is given), its deterministic-algorithms setting and its precision (unless
    `precision` names another: then the setting differs); a setting that cannot be rebuilt (data or
    weights missing, a learner not installed) is one line saying so."""
    from clbench.device import resolve_device
    from clbench.learner import get_learner, validate
    from clbench.orchestration import RunOptions, configure_torch, run_and_store
    from clbench.precision import settle_spec
    from clbench.scenario import build_scenario, load_spec
    from clbench.setting import setting_identity

    what = f"run {row['run_id']} ({row['learner']} on {row['scenario']}, seed {int(row['seed'])})"
    device = resolve_device(device_name or ("cpu" if row["device"] == "cpu" else "auto"))
    try:
        spec = load_spec(str(row["scenario"])).with_overrides(json.loads(row["scenario_overrides"]))
        spec = settle_spec(spec, device, precision or recorded_precision(row))
        setting = setting_identity(spec)
        scenario = build_scenario(spec, data_root, seed=int(row["seed"]))  # a "seeded" class order needs it
        cls = get_learner(str(row["learner"]))
        config = validate(cls, json.loads(row["learner_config"]))
    except ClbenchError as exc:
        raise ClbenchError(f"cannot rebuild the setting of {what}: {exc}") from None
    configure_torch(scenario, device, rerun_threads(row, threads), recorded(row, "deterministic") == "true")
    options = RunOptions(device, cache_root / "checkpoints", None, None, resume=False, progress=False)
    new_row = run_and_store(scenario, cls, config, int(row["seed"]), options)
    same_shape, cells = compare_matrices(json.loads(row["accuracy_matrix"]), json.loads(new_row["accuracy_matrix"]),
                                         samples_per_column(scenario))
    return Check(row, new_row, new_row["scenario_fingerprint"] == row["scenario_fingerprint"],
                 setting == row["setting_id"], same_shape, cells, *compare_arithmetic(row, new_row))


def _count(cell: Cell) -> str:
    """A cell's difference in test samples: whole where it is one (up to rounding), else with two decimals."""
    return f"{round(cell.samples)}" if abs(cell.samples - round(cell.samples)) <= cell.rounding else f"{cell.samples:.2f}"


def _arithmetic(row: pd.Series | dict) -> str:
    """What the rerun computed with, in words."""
    source = f"clbench source {recorded(row, 'source_hash')}"
    revision = recorded(row, "code_revision")
    return (f"{row['device']} ({recorded(row, 'cpu')}), torch {row['torch_version']}, "
            f"{recorded(row, 'torch_threads')} torch thread(s), deterministic algorithms "
            f"{'on' if recorded(row, 'deterministic') == 'true' else 'off'}, precision {recorded_precision(row)}, "
            f"{source}{f' (git {revision})' if revision else ''}")


def _cell_lines(check: Check) -> list[str]:
    lines = [f"    A[{c.after}][{c.on}]  {c.old:.4f} -> {c.new:.4f}  ({c.points:+.4f} points, {_count(c)} of "
             f"{c.test_samples} test samples)" for c in check.cells[:SHOWN_CELLS]]
    if len(check.cells) > SHOWN_CELLS:
        lines.append(f"    and {len(check.cells) - SHOWN_CELLS} more cell(s)")
    return lines


def describe(check: Check) -> list[str]:
    """The report: what the rerun used, one line per check, the differing cells, then the verdict."""
    row, new = check.row, check.new_row

    def mark(ok: bool) -> str:
        return "same     " if ok else "DIFFERENT"

    if check.differing:
        arithmetic = f"DIFFERENT arithmetic          {'; '.join(check.differing)}"
    else:
        arithmetic = f"{mark(True)} arithmetic          every recorded setting that decides it is the row's"
    if check.unknown:
        arithmetic += f"; the row does not record: {', '.join(check.unknown)} (written before clbench recorded them)"
    if not check.exact and not check.differing and not check.unknown:
        arithmetic += "; GPU without deterministic algorithms"
    why = "the arithmetic differs from the row's" if check.differing else "the arithmetic is not known to be the row's"
    how = "compared exactly" if check.exact else f"compared within {check.tolerance} test samples per cell ({why})"
    if not check.same_shape:
        matrix = f"{mark(False)} accuracy matrix     shapes differ ({row['n_experiences']} rows -> {new['n_experiences']})"
    elif not check.cells:
        matrix = f"{mark(True)} accuracy matrix     every cell equal, {how}"
    else:
        worst = max(check.cells, key=lambda c: c.samples)
        matrix = (f"{mark(check.matrix)} accuracy matrix     {len(check.cells)} cell(s) differ, the largest by "
                  f"{abs(worst.points):.4f} points ({_count(worst)} of {worst.test_samples} test samples), {how}")
    verdict = "NOT reproduced" if not check.ok else "reproduced exactly" if check.exact else \
        f"reproduced within {check.tolerance} test samples per cell"
    return [
        f"run {row['run_id']}: {row['learner']} on {row['scenario']}, seed {int(row['seed'])}",
        f"  rerun with {_arithmetic(new)}",
        f"  {mark(check.fingerprint)} stream fingerprint  {str(row['scenario_fingerprint'])[:12]} -> {new['scenario_fingerprint'][:12]}",
        f"  {mark(check.setting)} setting             {row['setting_id']} -> {new['setting_id']}",
        f"  {arithmetic}",
        f"  {matrix}",
        *_cell_lines(check),
        verdict,
    ]
