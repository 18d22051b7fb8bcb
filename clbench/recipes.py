"""Recipes (`baselines/**/*.toml`): which scenario settings, learner, hyper-parameters and seeds
produce a set of leaderboard rows, and the runs they expand to.

A recipe file holds::

    scenario = "split-digits"          # a shipped scenario name, or a .toml spec path (relative to the recipe)
    learner = "replay"                 # a registered name, or package.module:ClassName
    seeds = [0, 1, 2]
    [settings]                         # optional: scenario overrides, as --set scenario.KEY=VALUE
    epochs = 5
    [hyperparameters]                  # optional: learner hyper-parameters, as --set LEARNER.KEY=VALUE
    buffer_size = 200
    [reference]                        # optional: the published figure this recipe is compared with
    figure = "49.42 ± 0.78 %"          #   the number as published
    metric = "fewshot_accuracy"        #   the leaderboard column that measures the same quantity
    setting = "..."                    #   the paper's setting, and how this recipe's differs
    source = "..."                     #   paper, table or figure
    note = "..."                       #   optional

`reference` may also be one string (older recipes); a table is checked: every key above but `note`
present and a non-empty string, and `metric` one of the figures the scenario's protocol reports.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clbench.errors import ClbenchError
from clbench.overrides import MAX_SEED

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_KEYS = {"scenario": (str,), "learner": (str,), "seeds": (list,), "reference": (str, dict), "settings": (dict,),
         "hyperparameters": (dict,)}
_REQUIRED = ("scenario", "learner", "seeds")
_TYPE_NAMES = {str: "string", list: "list", dict: "table"}
REFERENCE_KEYS = ("figure", "metric", "setting", "source")
"""The keys a `[reference]` table must have; `note` is the one optional key."""


@dataclass(frozen=True)
class Job:
    """One run of a recipe: a scenario with settings, a learner with its full config, a seed."""

    recipe: str
    scenario: str
    settings: dict[str, Any] = field(hash=False)
    learner: str
    config: dict[str, Any] = field(hash=False)
    seed: int
    key: tuple[str, str, str, str, int]
    """(scenario name, setting id, learner name, config JSON, seed): what a leaderboard row records of it."""
    precision: str = "fp32"
    """The resolved precision the run computes in (part of its setting id): what a worker runs it in."""

    @property
    def label(self) -> str:
        return f"{self.recipe} seed {self.seed}"


def run_key(scenario: str, setting_id: str, learner: str, config: dict[str, Any] | str, seed: int) -> tuple:
    """The identity of a run as a leaderboard row records it (a config given as JSON text or a dict)."""
    parsed = json.loads(config) if isinstance(config, str) else config
    return (str(scenario), str(setting_id), str(learner), json.dumps(parsed, sort_keys=True), int(seed))


def recipe_files(path: Path, pattern: str | None = None) -> dict[str, Path]:
    """Recipe id (path under `path` without `.toml`) -> file, for a folder (searched recursively) or
    one file, keeping the ids that match the glob `pattern`."""
    if not path.exists():
        raise ClbenchError(f"no recipes at {path}: give a folder of recipe .toml files (e.g. baselines/) or one file")
    files = {path.stem: path} if path.is_file() else {
        p.relative_to(path).with_suffix("").as_posix(): p for p in sorted(path.rglob("*.toml"))}
    if not files:
        raise ClbenchError(f"no recipe files (*.toml) under {path}")
    chosen = {k: v for k, v in files.items() if pattern is None or fnmatch.fnmatchcase(k, pattern)}
    if not chosen:
        raise ClbenchError(f"--filter '{pattern}' matches none of the {len(files)} recipes under {path} "
                           f"(ids look like {next(iter(files))})")
    return chosen


def load_jobs(path: Path, pattern: str | None = None, precision: str = "auto", device: str = "cpu") -> list[Job]:
    """Every run of the recipes at `path` (filtered by `pattern`), each recipe checked in full first:
    a bad recipe is one line naming its file, and two recipes may not define the same run. A recipe
    that leaves `precision` out computes in `precision` (`--precision`), "auto" resolved for the
    `device` (type) the runs will use, before its setting id is computed."""
    jobs: dict[tuple, Job] = {}
    for recipe, file in recipe_files(path, pattern).items():
        for job in _expand(recipe, file, precision, device):
            if job.key in jobs:
                raise ClbenchError(f"recipes {jobs[job.key].recipe} and {recipe} define the same run "
                                   f"({job.learner}, seed {job.seed}, same setting and config): keep one")
            jobs[job.key] = job
    return list(jobs.values())


def _expand(recipe: str, file: Path, precision: str, device: str) -> list[Job]:
    import torch

    from clbench.learner import get_learner, validate
    from clbench.precision import settle_spec
    from clbench.scenario import load_spec
    from clbench.setting import setting_identity

    raw = _read(recipe, file)
    scenario = raw["scenario"]
    if scenario.endswith(".toml"):
        scenario = str((file.parent / scenario).resolve())
    try:
        spec = settle_spec(load_spec(scenario).with_overrides(raw.get("settings", {})), torch.device(device), precision)
        cls = get_learner(raw["learner"])
        config = validate(cls, raw.get("hyperparameters", {}))
        setting = setting_identity(spec)
        if isinstance(raw.get("reference"), dict):
            check_reference(raw["reference"], spec.protocol)
    except ClbenchError as exc:
        raise ClbenchError(f"recipe {file}: {exc}") from None
    return [Job(recipe, scenario, dict(raw.get("settings", {})), raw["learner"], config, seed,
                run_key(spec.name, setting, cls.name, config, seed), spec.precision) for seed in raw["seeds"]]


def _read(recipe: str, file: Path) -> dict[str, Any]:
    """The recipe's table, its keys and seeds checked."""
    try:
        raw = tomllib.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ClbenchError(f"recipe {file} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ClbenchError(f"recipe {file} cannot be read: {exc.strerror or exc}") from None
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ClbenchError(f"recipe {file}: unknown key {unknown[0]!r} (keys: {', '.join(_KEYS)})")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ClbenchError(f"recipe {file}: missing {', '.join(missing)} (a recipe names a scenario, a learner and seeds)")
    wrong = [k for k, kinds in _KEYS.items() if k in raw and not isinstance(raw[k], kinds)]
    if wrong:
        kinds = " or a ".join(_TYPE_NAMES[kind] for kind in _KEYS[wrong[0]])
        raise ClbenchError(f"recipe {file}: '{wrong[0]}' must be a {kinds}")
    seeds = raw["seeds"]
    if not seeds or any(type(s) is not int or not 0 <= s <= MAX_SEED for s in seeds) or len(set(seeds)) != len(seeds):
        raise ClbenchError(f"recipe {file}: seeds must be a non-empty list of distinct integers from 0 to {MAX_SEED}, "
                           f"got {seeds!r}")
    return raw


def check_reference(reference: dict[str, Any], protocol: str) -> None:
    """A one-line error unless a `[reference]` table has `REFERENCE_KEYS` (and at most `note` besides),
    each a non-empty string, and `metric` names a figure that `protocol` reports (a leaderboard column)."""
    from clbench.leaderboard import figures

    allowed = (*REFERENCE_KEYS, "note")
    unknown = sorted(set(reference) - set(allowed))
    if unknown:
        raise ClbenchError(f"unknown reference key {unknown[0]!r} (keys: {', '.join(allowed)})")
    missing = [k for k in REFERENCE_KEYS if k not in reference]
    if missing:
        raise ClbenchError(f"the reference lacks {', '.join(missing)} (a reference names the figure, the metric, the "
                           "setting and the source)")
    empty = [k for k, v in reference.items() if not isinstance(v, str) or not v.strip()]
    if empty:
        raise ClbenchError(f"reference '{empty[0]}' must be a non-empty string")
    columns = list(figures(protocol).values())
    if reference["metric"] not in columns:
        raise ClbenchError(f"reference metric '{reference['metric']}' is not a figure of the {protocol} protocol "
                           f"(one of: {', '.join(columns)})")
