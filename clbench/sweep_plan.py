"""`clbench sweep --dry-run`: the runs a sweep would carry out and those it would skip, whether each
run's data is on disk, and what each would cost judging by the rows already in the leaderboard.
It reads the recipes, the leaderboard and the data root, and writes nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clbench.recipes import Job
from clbench.sweep import finished_runs, run_keys

EMBEDDED = ("digits",)
"""Datasets that ship inside a dependency: always present."""


@dataclass(frozen=True)
class Planned:
    """One run of the recipes as the sweep would treat it."""

    job: Job
    skipped: bool
    """True when the leaderboard already has the run's row (and the sweep is not forced)."""
    data: str
    """The state of the data it needs: embedded, present, prepared, missing, corrupt (the worst of its datasets)."""
    seconds: float | None
    """Estimated train + eval seconds: the median over the matching rows, None when no row matches."""
    basis: str
    """Which rows `seconds` comes from."""


def plan(jobs: list[Job], board: Path, data_root: Path, cache_dir: Path | None = None,
         force: bool = False) -> list[Planned]:
    """Each job with whether the sweep would skip it, its data's state, and its estimated cost: the
    median train + eval seconds of the rows with its scenario, setting, learner and config, else of
    the rows with its scenario and learner, else unknown."""
    runs = finished_runs(board)
    done = set() if force else run_keys(runs)
    costs = _costs(runs)
    states: dict[str, str] = {}
    planned = []
    for job in jobs:
        data = _worst([_dataset_state(name, data_root, cache_dir, states) for name in _datasets(job)])
        seconds, basis = _estimate(job, costs)
        planned.append(Planned(job, job.key in done, data, seconds, basis))
    return planned


def describe(planned: list[Planned], board: Path) -> list[str]:
    """The plan as a table (one line per run) and a summary."""
    from tabulate import tabulate

    rows = [(p.job.recipe, p.job.key[0], p.job.key[2], p.job.seed, p.data,
             "skip (has a row)" if p.skipped else "run",
             "-" if p.skipped else ("unknown" if p.seconds is None else f"{p.seconds:.1f}"),
             "" if p.skipped else p.basis) for p in planned]
    table = tabulate(rows, headers=("recipe", "scenario", "learner", "seed", "data", "action",
                                    "est. train+eval s", "estimated from"), disable_numparse=True)
    todo = [p for p in planned if not p.skipped]
    known = [p.seconds for p in todo if p.seconds is not None]
    no_data = sum(p.data in ("missing", "corrupt") for p in todo)
    return [table, "",
            f"{len(planned)} run(s) in the recipes: {len(todo)} to run, {len(planned) - len(todo)} skipped "
            f"(already in {board})",
            f"data missing or corrupt for {no_data} of the {len(todo)} to run",
            f"estimated train+eval time of the {len(known)} to run with an estimate: {sum(known):.1f} s "
            f"({sum(known) / 3600:.2f} h); no estimate for {len(todo) - len(known)}",
            "dry run: nothing was run or written"]


def _costs(runs: pd.DataFrame | None) -> pd.DataFrame:
    """Per finished run: scenario, setting, learner, canonical config and train + eval seconds."""
    if runs is None or runs.empty:
        return pd.DataFrame(columns=["scenario", "setting_id", "learner", "config", "seconds"])
    seconds = pd.to_numeric(runs["train_seconds"], errors="coerce") + pd.to_numeric(runs["eval_seconds"], errors="coerce")
    config = runs["learner_config"].map(lambda text: json.dumps(json.loads(text), sort_keys=True))
    frame = pd.DataFrame({"scenario": runs["scenario"].astype(str), "setting_id": runs["setting_id"].astype(str),
                          "learner": runs["learner"].astype(str), "config": config, "seconds": seconds})
    return frame[frame["seconds"].notna()]


def _estimate(job: Job, costs: pd.DataFrame) -> tuple[float | None, str]:
    scenario, setting, learner, config, _ = job.key
    same_setting = costs[(costs["scenario"] == scenario) & (costs["setting_id"] == setting)
                         & (costs["learner"] == learner)]  # another setting (a 16-px CPU budget) says nothing
    same_run = same_setting[same_setting["config"] == config]
    for rows, what in ((same_run, "same setting and config"), (same_setting, "same setting, another config")):
        if len(rows):
            return float(rows["seconds"].median()), f"median of {len(rows)} row(s), {what}"
    return None, "unknown"


def _datasets(job: Job) -> list[str]:
    """The datasets a run reads: its scenario's, and its `init_set` when that names another one."""
    from clbench.scenario import FIRST_EXPERIENCE, load_spec

    spec = load_spec(job.scenario).with_overrides(job.settings)
    return [spec.dataset] + ([spec.init_set] if spec.init_set != FIRST_EXPERIENCE else [])


def _dataset_state(name: str, root: Path, cache_dir: Path | None, known: dict[str, str]) -> str:
    """`clbench data`'s state of a dataset (checked once per plan), "embedded" for one inside a dependency."""
    from clbench.datasets import fscil_splits, status

    if name not in known:
        if name in EMBEDDED:
            known[name] = "embedded"
        elif name in status.CHECKS:
            known[name] = status.CHECKS[name](root, cache_dir)["state"]
        elif name == "cifar100-fscil":  # CIFAR-100 itself plus its session lists
            lists = all(f.exists() for f in fscil_splits.session_files(root, "cifar100"))
            known[name] = _worst([_dataset_state("cifar100", root, cache_dir, known), "present" if lists else "missing"])
        else:
            known[name] = "unknown"
    return known[name]


_ORDER = ("embedded", "prepared", "present", "unknown", "missing", "corrupt")


def _worst(states: list[str]) -> str:
    return max(states, key=_ORDER.index)
