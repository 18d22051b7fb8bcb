"""One learner x one seed on one scenario -> a checkpointed run -> a leaderboard row.

`clbench run`, `clbench sweep` (in-process, in worker processes or as Ray tasks) and `clbench
reproduce` all go through `run_and_store`, so resuming, locking, row-making and appending happen
the same way everywhere.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clbench import leaderboard, runner
from clbench.checkpoint import Checkpoint, run_key
from clbench.device import cpu_threads, set_deterministic
from clbench.feature_cache import FeatureCache
from clbench.learner import Learner
from clbench.precision import with_precision
from clbench.run_log import LogTarget, open_log
from clbench.scenario import Scenario


@dataclass(frozen=True)
class RunOptions:
    """How runs are carried out (not what they compute)."""

    device: torch.device
    checkpoints: Path
    leaderboard: Path | None
    """Where the row is appended; None: the caller stores it (a sweep's driver, a reproduction)."""
    feature_cache: FeatureCache | None = None
    resume: bool = True
    progress: bool = True
    log: LogTarget | None = None
    """`--log KIND DIR`: where each run is followed as it goes (`clbench.run_log`); None: nowhere."""
    precision: str = "auto"
    """`--precision`: applies where the scenario leaves its precision "auto" (`clbench.precision.with_precision`)."""


def configure_torch(scenario: Scenario, device: torch.device, threads: int | None = None,
                    deterministic: bool = False) -> None:
    """Set torch up for runs on `scenario`, whatever an earlier run in this process set: the CPU
    thread count (`device.cpu_threads`) and deterministic algorithms on or off. Rows record both
    (`leaderboard.make_row`), and `clbench reproduce` sets them again from a row."""
    set_deterministic(deterministic)
    side = scenario.spec.image_size or scenario.dataset.partition("train").images.shape[-1]
    torch.set_num_threads(cpu_threads(threads, (side, side), device))


def run_and_store(scenario: Scenario, learner_cls: type[Learner], config: dict[str, Any], seed: int,
                  options: RunOptions) -> dict[str, Any]:
    """Run `learner_cls(**config)` with `seed` (resuming its checkpoint unless told not to), append its
    row to `options.leaderboard` (if given), remove the checkpoint, and return the row; the run's lock
    is held throughout, so no identical run can resume or replay its checkpoint meanwhile. With
    `options.log`, the run is logged as it goes under its row's run_id."""
    scenario = with_precision(scenario.for_seed(seed), options.device, options.precision)
    checkpoint = Checkpoint(options.checkpoints, run_key(scenario, learner_cls, config, seed, options.device))
    with checkpoint.claim():  # an identical run started meanwhile stops at once, naming this one
        if not options.resume:
            checkpoint.remove()
        run_id = leaderboard.new_run_id()
        log = open_log(options.log, scenario.spec.name, learner_cls, config, seed, run_id)
        with contextlib.closing(log):
            result = runner.run(scenario, learner_cls, config, seed=seed, device=options.device,
                                progress=options.progress, feature_cache=options.feature_cache, checkpoint=checkpoint,
                                observer=log)
            row = leaderboard.make_row(result, scenario, learner_cls.wants, run_id)
            log.on_end(row)
        if options.leaderboard is not None:
            leaderboard.append_rows(options.leaderboard, [row])
        checkpoint.remove()
    return row
