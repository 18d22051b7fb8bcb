"""`--log KIND DIR` (`clbench run`, `clbench sweep`): follow each run as it goes, beside the leaderboard
CSV (which is written as always). `tensorboard`: one TensorBoard run directory per run,
DIR/<scenario>/<learner>-<config hash>-seed<seed>-<run_id> (the run_id of its leaderboard row), holding

- per epoch (x: epochs trained so far in the run): `train/loss` and `train/accuracy` (what `learn`
  reported, `clbench.training_log.EpochRecord`; absent for a learner that reports none), `train/seconds`;
- per experience (x: experiences trained): `eval/experience_<j>` = A[i][j] for every experience j
  trained so far, `eval/average` (their mean), `eval/seen_pooled` (accuracy on all their test samples
  pooled: `accuracy_curve`), and where the protocol has both scorings `eval/class_il_average` and
  `eval/task_il_average`;
- at the end (x: the number of experiences): `final/<column>` for the row's figures (its protocol's,
  the Class-IL and Task-IL final accuracies, the costs) and the row's config as text.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clbench.errors import ClbenchError
from clbench.files import usable_folder
from clbench.learner import Learner, validate
from clbench.observer import Evaluation, RunObserver
from clbench.training_log import EpochRecord

LOG_KINDS = ("tensorboard",)


@dataclass(frozen=True)
class LogTarget:
    """Where runs are logged, and how (plain values: a sweep pickles it into its workers)."""

    kind: str
    folder: str


def log_target(kind: str, folder: str) -> LogTarget:
    """The `--log KIND DIR` asked for, checked before anything runs: a known kind whose package is
    installed and a folder that can be written; else one clear line."""
    if kind not in LOG_KINDS:
        raise ClbenchError(f"unknown --log kind '{kind}'; known: {', '.join(LOG_KINDS)} (e.g. --log tensorboard runs/)")
    _summary_writer()
    usable_folder(folder, "the --log folder", write=True)
    return LogTarget(kind, str(folder))


def open_log(target: LogTarget | None, scenario: str, learner_cls: type[Learner], config: dict[str, Any], seed: int,
             run_id: str) -> RunObserver:
    """The observer of one run (`run_id`): a TensorBoard writer into its own run directory (named by the
    learner's full config, defaults filled in), or, without a target, one that records nothing. The
    caller closes it."""
    if target is None:
        return RunObserver()
    full = validate(learner_cls, config)
    return TensorBoardLog(run_directory(Path(target.folder), scenario, learner_cls.name, full, seed, run_id))


def run_directory(folder: Path, scenario: str, learner: str, config: dict[str, Any], seed: int, run_id: str) -> Path:
    """`folder/<scenario>/<learner>-<config hash>-seed<seed>-<run_id>`: one directory per run, the hash
    telling a learner's configs apart."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return folder / _component(scenario) / f"{_component(learner)}-{digest}-seed{seed}-{run_id}"


def _component(name: str) -> str:
    """`name` as one path component: characters other than letters, digits, `.`, `_` and `-` become `_`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "_"


def _summary_writer() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ClbenchError("--log tensorboard needs the tensorboard package: "
                           "pip install 'clbench[tensorboard]'") from None
    return SummaryWriter


class TensorBoardLog(RunObserver):
    """Writes a run's epochs, evaluations and final figures as TensorBoard scalars (see the module)."""

    def __init__(self, directory: Path) -> None:
        self.writer = _summary_writer()(log_dir=str(directory))
        self.epochs = 0
        self.experiences = 0

    def on_epoch(self, record: EpochRecord) -> None:
        self.epochs += 1
        for tag, value in (("loss", record.loss), ("accuracy", record.accuracy), ("seconds", record.seconds)):
            if value is not None:
                self.writer.add_scalar(f"train/{tag}", value, self.epochs)

    def on_experience(self, evaluation: Evaluation) -> None:
        step, seen = evaluation.index + 1, slice(0, evaluation.index + 1)
        self.experiences = step
        width = len(str(len(evaluation.accuracies) - 1))
        for j, accuracy in enumerate(evaluation.accuracies[seen]):
            self.writer.add_scalar(f"eval/experience_{j:0{width}d}", accuracy, step)
        self.writer.add_scalar("eval/average", float(np.mean(evaluation.accuracies[seen])), step)
        self.writer.add_scalar("eval/seen_pooled", evaluation.seen_accuracy, step)
        for name, row in (("class_il", evaluation.class_il), ("task_il", evaluation.task_il)):
            if row is not None:
                self.writer.add_scalar(f"eval/{name}_average", float(np.mean(row[seen])), step)

    def on_end(self, row: Mapping[str, Any]) -> None:
        from clbench.leaderboard import COST_COLUMNS, figures

        columns = [*figures(row["protocol"]).values(), "final_class_il_accuracy", "final_task_il_accuracy",
                   *COST_COLUMNS]
        step = max(self.experiences, 1)
        for column in dict.fromkeys(columns):
            value = row.get(column)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"final/{column}", value, step)
        self.writer.add_text("run", f"run_id {row['run_id']}, learner {row['learner']}, config "
                                    f"{row['learner_config']}, scenario {row['scenario']} {row['scenario_overrides']}")

    def close(self) -> None:
        self.writer.close()
