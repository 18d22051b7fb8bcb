"""Leaderboard rows and what is read from them: the row of a run, the figures each protocol
reports, one run per seed and aggregation over seeds (the rendered tables are
`clbench.leaderboard_tables`). The file itself (the
column schema, locked appends, a reader that skips malformed lines) is `clbench.leaderboard_file`,
whose public names are re-exported here."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import uuid
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import torch

from clbench import __version__, metrics, revision, stats
from clbench.leaderboard_file import COLUMNS, append_rows, check_writable, default_path, read  # noqa: F401
from clbench.chance import chance_accuracy, derived_chance
from clbench.device import cpu_name
from clbench.errors import ClbenchError
from clbench.protocols.class_order import RUN_SEED
from clbench.runner import RunResult
from clbench.scenario import Scenario
from clbench.setting import is_seeded, setting_identity
from clbench.training_log import log_columns

METRICS = ("final_accuracy", "average_incremental_accuracy", "forgetting", "backward_transfer", "forward_transfer")
"""The accuracy-matrix metrics of DESIGN §5 (`final_accuracy` is the mean over the last row's columns)."""

_MATRIX_FIGURES = {"final acc": "final_accuracy", "avg inc acc": "average_incremental_accuracy",
                   "forgetting": "forgetting", "BWT": "backward_transfer", "FWT": "forward_transfer"}
_FULL_TEST_SET = {"final acc (full test set)": "final_seen_accuracy", "final acc (mean over batches)": "final_accuracy",
                  **{k: v for k, v in _MATRIX_FIGURES.items() if k != "final acc"}}
_FIGURES = {
    "episodes": {"episode acc": "fewshot_accuracy", "± 95% CI": "fewshot_ci95"},
    "fscil": {"last session": "final_seen_accuracy", "average": "fscil_average", "drop": "fscil_drop",
              "base": "base_accuracy", "novel": "novel_accuracy"},
    "core50-nc": _FULL_TEST_SET,
    "core50-nic": _FULL_TEST_SET,
}
FIGURE_COLUMNS = tuple(dict.fromkeys(c for f in (_MATRIX_FIGURES, *_FIGURES.values()) for c in f.values()))
"""Every column some protocol reports."""

COST_COLUMNS = ("train_seconds", "eval_seconds", "feature_seconds", "samples_per_second", "peak_memory_mb", "state_mb",
                "n_parameters")
STAT_COLUMNS = FIGURE_COLUMNS + COST_COLUMNS
"""The columns `aggregate` gives statistics over seeds of: every figure and every cost."""

SEEDED_STREAM = "seeded"
TABLE = ["scenario", "stream", "setting_id"]
"""One table per scenario, stream and setting. `stream` is the row's `scenario_fingerprint` (the same
data in the same order), or `SEEDED_STREAM` for a setting whose class order is drawn from each run's
seed (`setting.is_seeded`): its rows' fingerprints differ by seed, and its setting_id keeps them
apart from every other setting. Rows of two fixed streams are never merged."""
GROUP = TABLE + ["learner", "learner_config"]
"""Rows are aggregated only within one table, one learner and one config."""


def figures(protocol: str) -> dict[str, str]:
    """The figures a protocol reports, label -> leaderboard column, its headline first: the
    accuracy-matrix figures for class-/task-incremental, CoRe50 NI and federated; for FSCIL and
    CoRe50 NC/NIC the literature's pooled accuracy on every test sample seen so far; for
    few-shot episodes the mean episode accuracy and its 95% CI."""
    return _FIGURES.get(protocol, _MATRIX_FIGURES)


def make_row(result: RunResult, scenario: Scenario, learner_wants: str, run_id: str | None = None) -> dict[str, Any]:
    """The leaderboard row of one finished run (its setting in the precision the run resolved), under
    `run_id` (default: a new one)."""
    spec = dataclasses.replace(scenario.spec, precision=result.precision)
    if spec.class_order == RUN_SEED and scenario.order_seed != result.seed:
        raise ClbenchError(f"the run with seed {result.seed} saw the class order of seed {scenario.order_seed}: "
                           "run it on scenario.for_seed(seed)")
    return {
        "run_id": run_id or new_run_id(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scenario": spec.name,
        "scenario_fingerprint": scenario.fingerprint,
        "setting_id": setting_identity(spec),
        "scenario_overrides": json.dumps(spec.overrides, sort_keys=True),
        "protocol": scenario.stream.protocol,
        "learner": result.learner,
        "learner_config": json.dumps(result.config, sort_keys=True),
        "backbone": spec.encoder if learner_wants == "features" else spec.backbone,
        "weights": result.weights,
        "init_set": result.init_set,
        "seed": result.seed,
        "n_experiences": len(result.accuracy_matrix),
        **{k: round(v, 4) for k, v in metrics.summary(result.accuracy_matrix, result.untrained_accuracy).items()},
        "final_seen_accuracy": round(result.accuracy_curve[-1], 4),
        **{k: round(v, 4) for k, v in _protocol_figures(result, scenario).items()},
        "chance_accuracy": round(chance_accuracy(spec, scenario.dataset.num_classes), 4),
        "final_class_il_accuracy": _final(result.class_il_matrix),
        "final_task_il_accuracy": _final(result.task_il_matrix),
        "accuracy_matrix": json.dumps(_rounded(result.accuracy_matrix)),
        "accuracy_curve": json.dumps([round(a, 4) for a in result.accuracy_curve]),
        "untrained_accuracy": json.dumps(result.untrained_accuracy and [round(a, 4) for a in result.untrained_accuracy]),
        "client_accuracy": json.dumps(result.client_accuracies and _rounded(result.client_accuracies)),
        "class_il_matrix": json.dumps(result.class_il_matrix and _rounded(result.class_il_matrix)),
        "task_il_matrix": json.dumps(result.task_il_matrix and _rounded(result.task_il_matrix)),
        "training_log": json.dumps(log_columns(list(result.training_log))),
        "train_seconds": round(result.train_seconds, 4),
        "eval_seconds": round(result.eval_seconds, 4),
        "feature_seconds": round(result.feature_seconds, 4),
        "feature_cache": result.feature_cache,
        "samples_per_second": round(result.samples_seen / result.train_seconds, 1) if result.train_seconds else math.nan,
        "peak_memory_mb": round(result.peak_memory_mb, 1),
        "state_mb": round(result.state_mb, 4),
        "n_parameters": result.n_parameters,
        "device": result.device,
        "precision": result.precision,
        "torch_version": torch.__version__,
        "clbench_version": __version__,
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "deterministic": json.dumps(torch.are_deterministic_algorithms_enabled()),
        "code_revision": revision.code_revision(),
        "source_hash": revision.source_hash(),
        "status": "ok",
    }


def new_run_id() -> str:
    """A fresh random row id (12 hex digits)."""
    return uuid.uuid4().hex[:12]


def _final(matrix: list[list[float | None]] | None) -> float:
    """Mean over the last row of a scoring's matrix (its final accuracy), to 4 decimals; NaN without one."""
    return round(metrics.final_accuracy(matrix), 4) if matrix else math.nan


def _rounded(matrix: list[list[float | None]]) -> list[list[float | None]]:
    """A matrix to 4 decimals, its unscored cells (None) kept."""
    return [[None if a is None else round(a, 4) for a in row] for row in matrix]


def _protocol_figures(result: RunResult, scenario: Scenario) -> dict[str, float]:
    """The few-shot and FSCIL columns, filled for the protocols they belong to (NaN elsewhere)."""
    mean, ci = metrics.fewshot_summary(result.episode_accuracies or [])
    few_shot = {"fewshot_accuracy": mean, "fewshot_ci95": ci}
    empty = dict.fromkeys(("fscil_average", "fscil_drop", "base_accuracy", "novel_accuracy"), math.nan)
    if scenario.stream.protocol == "fscil":
        sizes = [len(e.test_indices) for e in scenario.stream.experiences]
        return {**few_shot, **metrics.fscil_summary(result.accuracy_curve, result.accuracy_matrix[-1], sizes)}
    return {**few_shot, **empty}


def recompute_metrics(row: pd.Series) -> dict[str, float]:
    """The metrics of a row, recomputed from its accuracy_matrix and untrained_accuracy cells."""
    untrained = row.get("untrained_accuracy")
    return metrics.summary(json.loads(row["accuracy_matrix"]), json.loads(untrained) if isinstance(untrained, str) else None)




def latest_runs(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The finished runs (status ok), one per (stream, setting, learner, config, seed): the newest by
    `created_at` (on a tie, the later line), with a `stream` column (`TABLE`). Older rows without a
    `setting_id` get one derived from their overrides, `legacy-<hash>`, so they are never merged
    with rows that have one. Returns the runs, in file order, and how many duplicates were set aside."""
    ok = frame[frame["status"].fillna("ok") == "ok"]
    legacy = ok["scenario_overrides"].fillna("{}").map(_legacy_setting_id)
    ok = ok.assign(setting_id=ok["setting_id"].fillna(legacy), learner_config=ok["learner_config"].fillna("{}"),
                   _created=pd.to_datetime(ok["created_at"], utc=True, errors="coerce", format="ISO8601"))
    ok = ok.assign(stream=ok["scenario_fingerprint"].where(~ok["setting_id"].map(is_seeded), SEEDED_STREAM))
    newest = ok.sort_values("_created", kind="stable", na_position="first").drop_duplicates(GROUP + ["seed"], keep="last")
    return newest.sort_index().drop(columns="_created"), len(ok) - len(newest)


def _legacy_setting_id(overrides: str) -> str:
    canonical = json.dumps(json.loads(overrides), sort_keys=True)
    return "legacy-" + hashlib.sha256(canonical.encode()).hexdigest()[:8]


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Statistics over seeds per (scenario, stream, setting, learner, config), each seed counted once
    (see `latest_runs`): for every figure and cost column its `_mean`, `_std` and `_ci95` (half-width
    of the Student-t 95% interval), the number of `seeds`, the `chance_accuracy` of the headline
    (derived from the spec for rows that lack it: `chance.derived_chance`), and the place within its
    table by the headline (`stats.rank`): `rank`, `tied` (not significantly below the best),
    `p_vs_best` (Holm-adjusted) and `test_vs_best`. `attrs["duplicates"]` holds how many rows were
    set aside as duplicates."""
    runs, duplicates = latest_runs(frame)
    runs = runs.assign(**{c: pd.to_numeric(runs[c]) if c in runs else math.nan for c in STAT_COLUMNS},
                       chance_accuracy=_chance_levels(runs))
    grouped = runs.groupby(GROUP, sort=False, dropna=False)
    out = grouped.agg(protocol=("protocol", "first"), scenario_overrides=("scenario_overrides", "first"),
                      chance_accuracy=("chance_accuracy", "first"), seeds=("seed", "nunique"),
                      **{f"{c}_{name}": (c, how) for c in STAT_COLUMNS for name, how in _STATISTICS.items()})
    out = out.reset_index()
    values = [dict(zip(rows["seed"], rows[headline(rows["protocol"].iloc[0])])) for _, rows in grouped]
    episodes = [(m, ci / metrics.EPISODE_Z95) if protocol == "episodes" else None for protocol, m, ci in
                zip(out["protocol"], out["fewshot_accuracy_mean"], out["fewshot_ci95_mean"])]
    out = out.assign(rank=0, tied=False, p_vs_best=math.nan, test_vs_best="")
    for _, table in out.groupby(TABLE, sort=False, dropna=False):
        places = stats.rank([values[i] for i in table.index], [episodes[i] for i in table.index])
        for index, place in zip(table.index, places):
            out.loc[index, ["rank", "tied", "p_vs_best", "test_vs_best"]] = place.rank, place.tied, place.p, place.test
    out.attrs["duplicates"] = duplicates
    return out


_STATISTICS = {"mean": "mean", "std": "std", "ci95": stats.ci95}


def _chance_levels(runs: pd.DataFrame) -> pd.Series:
    """Each run's `chance_accuracy`, derived from its spec where the row lacks it."""
    recorded = pd.to_numeric(runs["chance_accuracy"]) if "chance_accuracy" in runs else pd.Series(math.nan, runs.index)
    missing = runs[recorded.isna()]
    derived = [derived_chance(str(s), o if isinstance(o, str) else "{}")
               for s, o in zip(missing["scenario"], missing["scenario_overrides"])]
    return recorded.fillna(pd.Series(derived, index=missing.index, dtype=float))


def headline(protocol: str) -> str:
    """The column of a protocol's headline figure (the first of `figures`)."""
    return next(iter(figures(protocol).values()))
