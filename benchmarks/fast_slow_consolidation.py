"""fast-slow: does the consolidation matter? Final accuracy of `fast-slow` with its defaults, of the same
learner without the penalty (`fast_penalty = 0`, everything else equal) and of `finetune`, over seeds.

Every cell is the mean over seeds +- the half-width of its Student-t 95% confidence interval
(`clbench.stats.ci95`); the two difference columns are paired by seed (the same seed gives every learner
the same initial network and the same data order): the mean per-seed difference +- its t interval.
The figure is the leaderboard's final accuracy: the mean over the last row of the accuracy matrix
(task-incremental: within each task's classes); for the FSCIL-like stream, the accuracy pooled over the
test images of every class (the FSCIL convention). Settings, all on scikit-learn's digits (embedded):

- split-digits-til, `til_training = masked` (the default: each sample's loss over its task's classes)
  and `single-head` (over all classes, masked at test only);
- split-digits (class-incremental) and split-digits-online (class-incremental, one pass, batches of 10,
  reduced ResNet-18);
- digits-fscil-like (defined here): classes 0-5 with all their training images, then two sessions of
  2 classes x 5 shots (the shots drawn once with NumPy seed 0); split-digits' training settings.

    python benchmarks/fast_slow_consolidation.py [--seeds 10] [--only split-digits-til,...] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import at_least_one, load_average, machine, table  # noqa: E402

from clbench import metrics, runner  # noqa: E402
from clbench.datasets import load_dataset  # noqa: E402
from clbench.learners.fast_slow import FastSlow  # noqa: E402
from clbench.learners.finetune import Finetune  # noqa: E402
from clbench.protocols.sessions import stream_from_sessions  # noqa: E402
from clbench.scenario import Scenario, build_scenario, load_spec  # noqa: E402
from clbench.stats import ci95  # noqa: E402

LEARNERS: dict[str, tuple[type, dict[str, Any]]] = {
    "finetune": (Finetune, {}),
    "fast-slow": (FastSlow, {}),
    "fast-slow, fast_penalty=0": (FastSlow, {"fast_penalty": 0.0}),
}


def digits_fscil_like() -> Scenario:
    """Base session: classes 0-5, every training image; then (6, 7) and (8, 9), 5 shots per class."""
    spec = dataclasses.replace(load_spec("split-digits"), name="digits-fscil-like", protocol="fscil", n_experiences=3,
                               description="digits: 6 base classes, then 2 sessions of 2-way 5-shot")
    dataset = load_dataset("digits")
    train, test = dataset.partition("train").labels, dataset.partition("test").labels
    rng = np.random.default_rng(0)
    shots = [np.concatenate([rng.choice(np.flatnonzero(train == c), 5, replace=False) for c in pair])
             for pair in ((6, 7), (8, 9))]
    sessions = [np.flatnonzero(train < 6), *shots]
    return Scenario(spec, dataset, stream_from_sessions(train, test, sessions))


def shipped(name: str, **settings: Any) -> Callable[[], Scenario]:
    return lambda: build_scenario(load_spec(name).with_overrides(settings))


SETTINGS: dict[str, Callable[[], Scenario]] = {
    "split-digits-til (til_training=masked)": shipped("split-digits-til", til_training="masked"),
    "split-digits-til (til_training=single-head)": shipped("split-digits-til", til_training="single-head"),
    "split-digits (class-incremental)": shipped("split-digits"),
    "split-digits-online (class-incremental)": shipped("split-digits-online"),
    "digits-fscil-like": digits_fscil_like,
}


def final_accuracy(scenario: Scenario, result: runner.RunResult) -> float:
    if scenario.spec.protocol == "fscil":
        return result.accuracy_curve[-1]
    return metrics.final_accuracy(result.accuracy_matrix)


def interval(values: list[float], signed: bool = False) -> str:
    return f"{statistics.mean(values):{'+' if signed else ''}.1f} ± {ci95(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=at_least_one, default=10,
                        help="seeds 0..N-1 (default 10; an interval needs 2)")
    parser.add_argument("--only", default="", help="comma-separated prefixes of the settings to run (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = [name for name in SETTINGS if not args.only or any(name.startswith(p) for p in args.only.split(","))]
    if not chosen:
        parser.error(f"--only {args.only!r} matches none of: {', '.join(SETTINGS)}")
    defaults = {name: hp.default for name, hp in FastSlow.hyperparameters().items()}
    print(f"# {machine()}\n# load average at the start: {load_average()} (1, 5, 15 min)")
    print(f"# fast-slow defaults: fast_penalty={defaults['fast_penalty']}, slow_rate={defaults['slow_rate']}, "
          f"fisher_samples={defaults['fisher_samples']}; finetune's lr/optimizer/momentum for all; "
          f"seeds 0-{args.seeds - 1}")
    rows = []
    for name in chosen:
        scenario = SETTINGS[name]()
        finals = {label: [] for label in LEARNERS}
        for seed in range(args.seeds):
            for label, (cls, config) in LEARNERS.items():
                result = runner.run(scenario, cls, config, seed=seed, progress=False, device="cpu")
                finals[label].append(final_accuracy(scenario, result))
            print(f"  {name} seed {seed}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in finals.items()), flush=True)
        fast, bare, finetune = finals["fast-slow"], finals["fast-slow, fast_penalty=0"], finals["finetune"]
        rows.append([name, *(interval(finals[k]) for k in LEARNERS),
                     interval([a - b for a, b in zip(fast, bare)], signed=True),
                     interval([a - b for a, b in zip(fast, finetune)], signed=True)])
    print()
    print(table(["final accuracy %, mean ± 95% CI", *LEARNERS, "penalty: defaults − fast_penalty=0 (paired)",
                 "fast-slow − finetune (paired)"], rows))
    print(f"# {args.seeds} seeds; intervals: Student t, n - 1 degrees of freedom. "
          f"Load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
