"""Do two leaderboards of the same runs agree? CPU vs CUDA, or fp32 vs bf16, learner by learner.

`recipes DIR` writes the recipes the GPU check sweeps on both sides: every registered learner with its
defaults on split-digits and (online learners) split-digits-online, seeds 0, 1, 2 (`--seeds`), except
protonet's meta-training cut to 200 episodes of its default 2,000 (to keep the check short)
and adab2n on split-digits (its norm needs a backbone with BatchNorm2d; the MLP has none).

`compare A.csv B.csv` reads both leaderboards (one row per seed, `leaderboard.latest_runs`) and prints,
per (scenario, settings changed, learner, config), the final accuracy mean ± std over seeds on each side, the
difference B - A, and a flag where |difference| exceeds the seed spread, the larger of the two
standard deviations (with a single seed on a side there is no spread: any difference is flagged).
A flagged learner is a difference to explain: a device- or precision-dependent path, or a bug.
Runs are matched by scenario, overrides, learner and config only, so that the two sides' device and
precision (which make their setting ids differ) are what is compared; the header says which.

    python benchmarks/agreement.py recipes /tmp/recipes [--seeds 0,1,2] [--scenarios split-digits]
    python benchmarks/agreement.py compare cpu.csv cuda.csv
    python benchmarks/agreement.py table cpu.csv             # one side alone (no GPU)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table  # noqa: E402

from clbench import leaderboard  # noqa: E402
from clbench.learner import available_learners, get_learner  # noqa: E402

SCENARIOS = ("split-digits", "split-digits-online")
FASTER = {"protonet": {"episodes": 200}}
"""Hyper-parameters changed from the defaults so that the CPU side fits the check's time."""
SKIP = {("adab2n", "split-digits"): "its norm needs a backbone with BatchNorm2d (the MLP has none)"}
KEY = ["scenario", "scenario_overrides", "learner", "learner_config"]


def write_recipes(folder: Path, seeds: list[int], scenarios: list[str], learners: list[str]) -> list[str]:
    """One recipe per (scenario, learner) that can run there, under `folder/<scenario>/<learner>.toml`;
    returns what was left out and why."""
    skipped = []
    for scenario in scenarios:
        online = scenario.endswith("-online")
        for name in learners:
            offline_only = online and not get_learner(name).online
            why = SKIP.get((name, scenario)) or ("not online-capable" if offline_only else "")
            if why:
                skipped.append(f"{scenario}/{name}: {why}")
                continue
            lines = [f'scenario = "{scenario}"', f'learner = "{name}"', f"seeds = {seeds}"]
            if name in FASTER:
                lines += ["[hyperparameters]", *(f"{k} = {v}" for k, v in FASTER[name].items())]
            path = folder / scenario / f"{name}.toml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
    return skipped


def final_accuracy(path: Path) -> pd.DataFrame:
    """Per (scenario, overrides, learner, config, device, precision): mean, std and count of final
    accuracy over seeds (a row without a precision ran in fp32)."""
    runs, _ = leaderboard.latest_runs(leaderboard.read(path))
    runs = runs.assign(precision=runs["precision"].fillna("fp32") if "precision" in runs else "fp32")
    grouped = runs.groupby([*KEY, "device", "precision"], sort=False)
    return grouped.agg(mean=("final_accuracy", "mean"), std=("final_accuracy", "std"),
                       seeds=("seed", "nunique")).reset_index()


def spread_exceeded(difference: float, std_a: float, std_b: float) -> bool:
    """|difference| above the larger standard deviation over seeds (NaN, one seed: no spread, so any
    nonzero difference)."""
    spread = max((s for s in (std_a, std_b) if not math.isnan(s)), default=0.0)
    return abs(difference) > spread


def compare(a: Path, b: Path) -> int:
    """Print the comparison table; returns the number of flagged learners."""
    left, right = final_accuracy(a), final_accuracy(b)
    both = left.merge(right, on=KEY, suffixes=("_a", "_b"), how="outer", indicator="side")
    rows, flagged = [], 0
    several = both.duplicated(["scenario", "learner"], keep=False)  # settings shown where a learner has several
    for r, show in zip(both.itertuples(index=False), several):
        config = f" {r.scenario_overrides} {r.learner_config}" if show else ""
        if r.side != "both":
            rows.append([r.scenario, f"{r.learner}{config}", *(["missing"] * 2), "", "only on one side"])
            continue
        difference = r.mean_b - r.mean_a
        flag = spread_exceeded(difference, r.std_a, r.std_b)
        flagged += flag
        rows.append([r.scenario, f"{r.learner}{config}", _cell(r.mean_a, r.std_a, r.seeds_a),
                     _cell(r.mean_b, r.std_b, r.seeds_b), f"{difference:+.2f}",
                     "EXCEEDS the seed spread" if flag else ""])
    for name, path, frame in (("A", a, left), ("B", b, right)):
        print(f"# {name} = {path}: device {', '.join(sorted(set(frame['device'])))}; "
              f"precision {', '.join(sorted(set(frame['precision'])))}")
    print(table(["scenario", "learner", "A: final acc, mean ± std (seeds)", "B: final acc, mean ± std (seeds)",
                 "B - A (points)", ""], rows))
    print(f"\n{flagged} of {len(both)} learner(s) differ by more than their seed spread (the larger std of the two)")
    return flagged


def show(path: Path) -> None:
    """Print one leaderboard's final accuracy per learner (a side with nothing to compare against)."""
    frame = final_accuracy(path)
    print(f"# {path}")
    print(table(["scenario", "learner", "device", "precision", "final acc, mean ± std (seeds)"],
                [[r.scenario, r.learner, r.device, r.precision, _cell(r.mean, r.std, r.seeds)]
                 for r in frame.itertuples(index=False)]))
    print(f"\n{len(frame)} learner(s)")


def _cell(mean: float, std: float, seeds: int) -> str:
    return f"{mean:.2f} ± {std:.2f} ({seeds})" if not math.isnan(std) else f"{mean:.2f} ({seeds})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    recipes = commands.add_parser("recipes", help="write the recipes of the comparison")
    recipes.add_argument("folder", type=Path)
    recipes.add_argument("--seeds", default="0,1,2", help="comma-separated (default 0,1,2)")
    recipes.add_argument("--scenarios", default=",".join(SCENARIOS),
                         help=f"comma-separated (default {','.join(SCENARIOS)})")
    recipes.add_argument("--learners", help="comma-separated (default: every registered learner)")
    check = commands.add_parser("compare", help="compare two leaderboards")
    check.add_argument("a", type=Path)
    check.add_argument("b", type=Path)
    commands.add_parser("table", help="one leaderboard's final accuracies").add_argument("path", type=Path)
    args = parser.parse_args()
    if args.command == "recipes":
        learners = args.learners.split(",") if args.learners else list(available_learners())
        skipped = write_recipes(args.folder, [int(s) for s in args.seeds.split(",")], args.scenarios.split(","),
                                learners)
        print(f"recipes written to {args.folder}; left out: {'; '.join(skipped) or 'none'}")
    elif args.command == "table":
        show(args.path)
    else:
        compare(args.a, args.b)


if __name__ == "__main__":
    main()
