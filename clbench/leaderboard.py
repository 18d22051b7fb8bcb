"""The leaderboard CSV: its schema, safe appends, aggregation over seeds, and rendering."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from filelock import FileLock

from clbench import __version__, metrics
from clbench.errors import ClbenchError
from clbench.files import AtomicFile
from clbench.runner import RunResult
from clbench.scenario import Scenario

DEFAULT_PATH = Path("leaderboard") / "leaderboard.csv"

COLUMNS = (
    "run_id", "created_at", "scenario", "scenario_fingerprint", "scenario_overrides", "protocol",
    "learner", "learner_config", "backbone", "weights", "seed", "n_experiences",
    "final_accuracy", "average_incremental_accuracy", "forgetting", "backward_transfer", "forward_transfer",
    "fewshot_accuracy", "fewshot_ci95", "fscil_average", "fscil_drop", "base_accuracy", "novel_accuracy",
    "accuracy_matrix", "accuracy_curve", "untrained_accuracy", "client_accuracy",
    "train_seconds", "eval_seconds", "feature_seconds", "feature_cache", "samples_per_second",
    "peak_memory_mb", "state_mb", "n_parameters", "device", "torch_version", "clbench_version", "status",
)
"""The documented column order. Readers go by header name, so older files with fewer or
reordered columns still read; appending to such a file first rewrites it to this order."""

METRICS = ("final_accuracy", "average_incremental_accuracy", "forgetting", "backward_transfer", "forward_transfer")
JSON_COLUMNS = ("scenario_overrides", "learner_config", "accuracy_matrix", "accuracy_curve", "untrained_accuracy",
                "client_accuracy")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def default_path() -> Path:
    """`$CLBENCH_LEADERBOARD`, else `leaderboard/leaderboard.csv` under the current directory."""
    return Path(os.environ.get("CLBENCH_LEADERBOARD", DEFAULT_PATH))


def make_row(result: RunResult, scenario: Scenario, learner_wants: str) -> dict[str, Any]:
    """The leaderboard row of one finished run."""
    spec = scenario.spec
    return {
        "run_id": uuid.uuid4().hex[:12],
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scenario": spec.name,
        "scenario_fingerprint": scenario.fingerprint,
        "scenario_overrides": json.dumps(spec.overrides, sort_keys=True),
        "protocol": scenario.stream.protocol,
        "learner": result.learner,
        "learner_config": json.dumps(result.config, sort_keys=True),
        "backbone": spec.encoder if learner_wants == "features" else spec.backbone,
        "weights": result.weights,
        "seed": result.seed,
        "n_experiences": len(result.accuracy_matrix),
        **{k: round(v, 4) for k, v in metrics.summary(result.accuracy_matrix, result.untrained_accuracy).items()},
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
    figures = {"fewshot_accuracy": mean, "fewshot_ci95": ci}
    empty = dict.fromkeys(("fscil_average", "fscil_drop", "base_accuracy", "novel_accuracy"), math.nan)
    if scenario.stream.protocol == "fscil":
        sizes = [len(e.test_indices) for e in scenario.stream.experiences]
        return {**figures, **metrics.fscil_summary(result.accuracy_curve, result.accuracy_matrix[-1], sizes)}
    return {**figures, **empty}


def _cell(value: Any) -> str:
    """Text of one cell; strings that a spreadsheet would run as a formula are neutralised."""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return str(value)


def _lines(rows: list[dict[str, Any]], columns: tuple[str, ...], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c, "")) for c in columns])
    return buffer.getvalue()


def check_writable(path: Path) -> None:
    """Fail early, in one line, if rows could not be appended to `path`."""
    target = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    if path.exists() and path.is_dir():
        raise ClbenchError(f"leaderboard path {path} is a directory; give a .csv file path")
    if not os.access(target, os.W_OK) or (not path.exists() and not target.is_dir()):
        raise ClbenchError(f"cannot write the leaderboard at {path}: {target} is not writable")


def append_rows(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Append rows in one write under an exclusive lock (safe with several processes)."""
    path = Path(path)
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        existing = _header(path)
        if existing is not None and tuple(existing) != COLUMNS:
            _rewrite(path, existing)
        with open(path, "a", newline="", encoding="utf-8") as f:
            f.write(_lines(rows, COLUMNS, header=existing is None))
            f.flush()
            os.fsync(f.fileno())


def _header(path: Path) -> list[str] | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), None)


def _rewrite(path: Path, existing: list[str]) -> None:
    """Bring an older file to the current column order (extra old columns are kept at the end)."""
    old = pd.read_csv(path, dtype=str, keep_default_na=False)
    columns = COLUMNS + tuple(c for c in existing if c not in COLUMNS)
    with AtomicFile(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write(_lines([], columns, header=True))
        old.reindex(columns=list(columns), fill_value="").to_csv(f, header=False, index=False, lineterminator="\n")


def read(path: str | os.PathLike) -> pd.DataFrame:
    """All rows, by header name; JSON cells stay strings (see `matrix`)."""
    path = Path(path)
    if not path.exists():
        raise ClbenchError(f"no leaderboard at {path} (run `clbench run` first, or pass --leaderboard PATH)")
    try:
        frame = pd.read_csv(path, dtype={c: str for c in JSON_COLUMNS + ("run_id", "scenario_fingerprint")})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ClbenchError(f"cannot read the leaderboard {path}: {exc}") from None
    return frame.reindex(columns=list(COLUMNS) + [c for c in frame.columns if c not in COLUMNS])


def recompute_metrics(row: pd.Series) -> dict[str, float]:
    """The metrics of a row, recomputed from its accuracy_matrix and untrained_accuracy cells."""
    untrained = row.get("untrained_accuracy")
    return metrics.summary(json.loads(row["accuracy_matrix"]), json.loads(untrained) if isinstance(untrained, str) else None)


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds, grouped by (scenario fingerprint, learner, config)."""
    keys = ["scenario", "scenario_fingerprint", "learner", "learner_config"]
    ok = frame[frame["status"].fillna("ok") == "ok"].fillna({"learner_config": "{}"})
    grouped = ok.groupby(keys, sort=False, dropna=False)
    out = grouped.agg(seeds=("seed", "nunique"), **{f"{m}_mean": (m, "mean") for m in METRICS},
                      **{f"{m}_std": (m, "std") for m in METRICS}, train_seconds=("train_seconds", "mean"))
    return out.reset_index()


def render(summary: pd.DataFrame, fmt: str = "text") -> str:
    """The aggregated table as aligned text, Markdown or HTML, best final accuracy first."""
    from tabulate import tabulate

    table = pd.DataFrame({
        "scenario": summary["scenario"],
        "fingerprint": summary["scenario_fingerprint"].str[:8],
        "learner": summary["learner"],
        "config": summary["learner_config"].map(_short_config),
        "seeds": summary["seeds"],
        **{label: [_pm(m, s) for m, s in zip(summary[f"{col}_mean"], summary[f"{col}_std"])]
           for label, col in (("final acc", "final_accuracy"), ("avg inc acc", "average_incremental_accuracy"),
                              ("forgetting", "forgetting"), ("BWT", "backward_transfer"), ("FWT", "forward_transfer"))},
        "train s": summary["train_seconds"].round(2),
    })
    order = summary.sort_values(["scenario", "final_accuracy_mean"], ascending=[True, False]).index
    table = table.loc[order]
    if fmt == "html":
        return table.to_html(index=False)
    return tabulate(table, headers="keys", tablefmt="github" if fmt == "markdown" else "simple", showindex=False)


def _pm(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def _short_config(config: str) -> str:
    parsed = json.loads(config) if config else {}
    return ", ".join(f"{k}={v}" for k, v in parsed.items())
