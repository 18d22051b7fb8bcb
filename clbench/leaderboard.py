"""Leaderboard rows and what is read from them: the row of a run, the figures each protocol
reports, one run per seed, aggregation over seeds and the rendered tables. The file itself (the
column schema, locked appends, a reader that skips malformed lines) is `clbench.leaderboard_file`,
whose public names are re-exported here."""

from __future__ import annotations

import hashlib
import html
import json
import math
import uuid
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import torch

from clbench import __version__, metrics, stats
from clbench.leaderboard_file import COLUMNS, append_rows, check_writable, default_path, read  # noqa: F401
from clbench.runner import RunResult
from clbench.scenario import Scenario
from clbench.setting import setting_identity

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

GROUP = ["scenario", "scenario_fingerprint", "setting_id", "learner", "learner_config"]
"""Rows are aggregated only within one stream, one setting, one learner and one config."""


def figures(protocol: str) -> dict[str, str]:
    """The figures a protocol reports, label -> leaderboard column, its headline first: the
    accuracy-matrix figures for class-/task-incremental, CoRe50 NI and federated; for FSCIL and
    CoRe50 NC/NIC the literature's pooled accuracy on every test sample seen so far; for
    few-shot episodes the mean episode accuracy and its 95% CI."""
    return _FIGURES.get(protocol, _MATRIX_FIGURES)


def make_row(result: RunResult, scenario: Scenario, learner_wants: str) -> dict[str, Any]:
    """The leaderboard row of one finished run."""
    spec = scenario.spec
    return {
        "run_id": uuid.uuid4().hex[:12],
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
        "accuracy_matrix": json.dumps([[round(a, 4) for a in row] for row in result.accuracy_matrix]),
        "accuracy_curve": json.dumps([round(a, 4) for a in result.accuracy_curve]),
        "untrained_accuracy": json.dumps(result.untrained_accuracy and [round(a, 4) for a in result.untrained_accuracy]),
        "client_accuracy": json.dumps(result.client_accuracies and [[round(a, 4) for a in m] for m in result.client_accuracies]),
        "train_seconds": round(result.train_seconds, 4),
        "eval_seconds": round(result.eval_seconds, 4),
        "feature_seconds": round(result.feature_seconds, 4),
        "feature_cache": result.feature_cache,
        "samples_per_second": round(result.samples_seen / result.train_seconds, 1) if result.train_seconds else math.nan,
        "peak_memory_mb": round(result.peak_memory_mb, 1),
        "state_mb": round(result.state_mb, 4),
        "n_parameters": result.n_parameters,
        "device": result.device,
        "torch_version": torch.__version__,
        "clbench_version": __version__,
        "status": "ok",
    }


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
    """The finished runs (status ok), one per (setting, learner, config, seed): the newest by
    `created_at` (on a tie, the later line). Older rows without a `setting_id` get one derived
    from their overrides, `legacy-<hash>`, so they are never merged with rows that have one.
    Returns the runs, in file order, and how many duplicates were set aside."""
    ok = frame[frame["status"].fillna("ok") == "ok"]
    legacy = ok["scenario_overrides"].fillna("{}").map(_legacy_setting_id)
    ok = ok.assign(setting_id=ok["setting_id"].fillna(legacy), learner_config=ok["learner_config"].fillna("{}"),
                   _created=pd.to_datetime(ok["created_at"], utc=True, errors="coerce", format="ISO8601"))
    newest = ok.sort_values("_created", kind="stable", na_position="first").drop_duplicates(GROUP + ["seed"], keep="last")
    return newest.sort_index().drop(columns="_created"), len(ok) - len(newest)


def _legacy_setting_id(overrides: str) -> str:
    canonical = json.dumps(json.loads(overrides), sort_keys=True)
    return "legacy-" + hashlib.sha256(canonical.encode()).hexdigest()[:8]


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Statistics over seeds per (scenario, stream fingerprint, setting, learner, config), each seed
    counted once (see `latest_runs`): for every figure and cost column its `_mean`, `_std` and
    `_ci95` (half-width of the Student-t 95% interval), the number of `seeds`, and the `rank`
    within the setting by its headline figure, `tied` where the difference from the group's best
    is not significant over seeds (`stats.rank`). `attrs["duplicates"]` holds how many rows were
    set aside as duplicates."""
    runs, duplicates = latest_runs(frame)
    runs = runs.assign(**{c: pd.to_numeric(runs[c]) if c in runs else math.nan for c in STAT_COLUMNS})
    grouped = runs.groupby(GROUP, sort=False, dropna=False)
    out = grouped.agg(protocol=("protocol", "first"), scenario_overrides=("scenario_overrides", "first"),
                      seeds=("seed", "nunique"),
                      **{f"{c}_{name}": (c, how) for c in STAT_COLUMNS for name, how in _STATISTICS.items()})
    out = out.reset_index()
    values = [dict(zip(rows["seed"], rows[_headline(rows["protocol"].iloc[0])])) for _, rows in grouped]
    out["rank"], out["tied"] = 0, False
    for _, group in out.groupby(["scenario", "scenario_fingerprint", "setting_id"], sort=False, dropna=False):
        for index, (place, tied) in zip(group.index, stats.rank([values[i] for i in group.index])):
            out.loc[index, ["rank", "tied"]] = place, tied
    out.attrs["duplicates"] = duplicates
    return out


_STATISTICS = {"mean": "mean", "std": "std", "ci95": stats.ci95}


def _headline(protocol: str) -> str:
    return next(iter(figures(protocol).values()))


RANK_NOTE = ("rank: by the headline (first figure); '=' marks learners not significantly different from the best "
             "of their group (two-sided t-test over seeds at 5%: paired on shared seeds, else Welch's); figures are "
             "mean ± std over seeds, the headline's 95% CI is Student-t")


def render(summary: pd.DataFrame, fmt: str = "text") -> str:
    """The aggregated runs as text, Markdown, HTML tables or CSV. Text, Markdown and HTML: one table
    per (scenario, stream, setting), titled with the setting, best headline first, with the rank,
    the protocol's figures (mean ± std over seeds; few-shot episodes: accuracy ± the runs' mean
    95% CI, and the std over seeds) and the headline's 95% CI over seeds. CSV: every column of
    `aggregate`, one line per (setting, learner, config)."""
    if fmt == "csv":
        return summary.to_csv(index=False, lineterminator="\n")
    from tabulate import tabulate

    if summary.empty:
        return "no finished runs in the leaderboard"
    sections = []
    for _, title, table in tables(summary):
        if fmt == "html":
            sections.append(f"<h4>{html.escape(title)}</h4>\n{table.to_html(index=False)}")
        else:
            style = "github" if fmt == "markdown" else "simple"
            body = tabulate(table, headers="keys", tablefmt=style, showindex=False, disable_numparse=True)
            sections.append(f"{'#### ' if fmt == 'markdown' else ''}{title}\n\n{body}")
    sections.extend(f"<p>{note}</p>" if fmt == "html" else note for note in notes(summary))
    return "\n\n".join(sections)


def notes(summary: pd.DataFrame) -> list[str]:
    """The lines printed under the tables: how ranks are made, and duplicates set aside."""
    duplicates = summary.attrs.get("duplicates", 0)
    return [RANK_NOTE] + ([f"{duplicates} duplicate run(s) set aside: same setting, learner, config and seed as a "
                           "newer row (each seed counts once)"] if duplicates else [])


def tables(summary: pd.DataFrame) -> list[tuple[tuple[str, str, str], str, pd.DataFrame]]:
    """(key, title, table of text cells) per key (scenario, stream fingerprint, setting), in a stable
    order; the title names the scenario and its overrides, the protocol, the stream and the setting,
    and a learner's configs are labelled by what differs among them in that table."""
    out = []
    for key, group in summary.groupby(["scenario", "scenario_fingerprint", "setting_id"], dropna=False):
        scenario, fingerprint, setting = key
        configs = config_labels(group)
        protocol = group["protocol"].iloc[0]
        headline = _headline(protocol)
        group = group.sort_values(["rank", f"{headline}_mean"], ascending=[True, False], na_position="last", kind="stable")
        ci = [f"[{m - h:.2f}, {m + h:.2f}]" if not pd.isna(h) else "-"
              for m, h in zip(group[f"{headline}_mean"], group[f"{headline}_ci95"])]
        table = pd.DataFrame({"rank": [f"={r}" if t else str(r) for r, t in zip(group["rank"], group["tied"])],
                              "learner": group["learner"], "config": configs[group.index].replace("", "-"),
                              "seeds": group["seeds"], **_figure_cells(protocol, group), "95% CI": ci,
                              "train s": group["train_seconds_mean"].round(2)})
        title = (f"{setting_label(scenario, group['scenario_overrides'].iloc[0])} · {protocol} · "
                 f"stream {str(fingerprint)[:8]} · setting {setting}")
        out.append((key, title, table))
    return out


def _figure_cells(protocol: str, group: pd.DataFrame) -> dict[str, list[str]]:
    if protocol == "episodes":
        return {"episode acc ± 95% CI": [_pm(m, ci) for m, ci in zip(group["fewshot_accuracy_mean"], group["fewshot_ci95_mean"])],
                "std over seeds": [_pm(s, math.nan) for s in group["fewshot_accuracy_std"]]}
    return {label: [_pm(m, s) for m, s in zip(group[f"{column}_mean"], group[f"{column}_std"])]
            for label, column in figures(protocol).items()}


def _pm(mean: float, spread: float) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.2f}" if pd.isna(spread) else f"{mean:.2f} ± {spread:.2f}"


def setting_label(scenario: str, overrides: Any, limit: int = 60) -> str:
    """The scenario and the settings it was run with, short: `split-digits (encoder=small_cnn)`."""
    parsed = json.loads(overrides) if isinstance(overrides, str) else {}
    if not parsed:
        return str(scenario)
    return f"{scenario} ({_shorten(', '.join(f'{k}={_text(v)}' for k, v in sorted(parsed.items())), limit)})"


def config_labels(frame: pd.DataFrame, limit: int = 40) -> pd.Series:
    """A short label of each row's `learner_config`: the hyper-parameters whose values differ
    among the frame's configs of the same learner ("" where a learner ran with one config)."""
    labels = pd.Series("", index=frame.index, dtype=object)
    for _, rows in frame.groupby("learner", sort=False):
        parsed = {c: json.loads(c) for c in rows["learner_config"].fillna("{}").unique()}
        keys = sorted({k for config in parsed.values() for k in config})
        varying = [k for k in keys if len({json.dumps(c.get(k)) for c in parsed.values()}) > 1]
        text = {c: _shorten(", ".join(f"{k}={_text(config.get(k))}" for k in varying), limit) for c, config in parsed.items()}
        labels[rows.index] = rows["learner_config"].fillna("{}").map(text)
    return labels


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
