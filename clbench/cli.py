"""`clbench list | run | sweep | reproduce | data | leaderboard`: the command line."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from clbench import __version__
from clbench.errors import ClbenchError

DEFAULT_SCENARIO = "split-digits"
DEFAULT_LEARNERS = "finetune,joint,nmc"

EPILOG = """examples:
  clbench run                                   # split-digits, finetune + joint + nmc, seed 0
  clbench run --learner nmc --seed 0,1,2 --set n_experiences=10
  clbench run --learner mypkg.module:MyLearner  # a plugin, no registration needed
  clbench sweep baselines/ --filter 'split-digits*' --workers 2
  clbench leaderboard --format markdown
  clbench reproduce 4b36158de1af               # re-run one row, check it comes out the same
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clbench",
        description="Run continual and few-shot learners on standard scenarios and keep a reproducible leaderboard.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    parser.add_argument("--version", action="version", version=f"clbench {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="show the learners and scenarios", description="Show the learners and scenarios.")
    listing.add_argument("--learner", metavar="NAME", help="show one learner's hyper-parameters in full")

    run = commands.add_parser("run", help="run learners on a scenario and append leaderboard rows",
                              description="Run learners on a scenario, print a results table, append one leaderboard row per run.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--scenario", default=DEFAULT_SCENARIO, metavar="S",
                     help=f"scenario name or path to a .toml spec (default: {DEFAULT_SCENARIO}; see `clbench list`)")
    run.add_argument("--learner", default=DEFAULT_LEARNERS, metavar="L[,L2,...]",
                     help=f"learner names or package.module:ClassName, comma-separated (default: {DEFAULT_LEARNERS})")
    run.add_argument("--seed", default="0", metavar="N[,N2,...]", help="integer seeds, comma-separated (default: 0)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                     help="override a scenario setting or a learner hyper-parameter (repeatable)")
    _execution_options(run)
    run.add_argument("--no-resume", action="store_true",
                     help="start over even where an interrupted run left a checkpoint (runs save one after every "
                          "experience; the same command resumes them)")
    run.add_argument("--deterministic", action="store_true",
                     help="use PyTorch's deterministic algorithms (slower on GPU; same seed, same device, same matrix)")
    _leaderboard_option(run)

    sweep = commands.add_parser("sweep", help="run every recipe's runs that the leaderboard lacks",
                                description="Run the recipes (TOML files: scenario, settings, learner, hyper-parameters, "
                                            "seeds) under a folder or one file, appending one row per run. Runs that "
                                            "already have a row (same setting, learner, config and seed) are skipped; "
                                            "a failed run is retried once; an interrupted run resumes.")
    sweep.add_argument("recipes", type=Path, metavar="RECIPES", help="a folder of recipe .toml files (e.g. baselines/) or one file")
    sweep.add_argument("--filter", metavar="GLOB", help="only recipes whose id (path under RECIPES without .toml) matches, "
                                                         "e.g. 'split-digits*' or '*/replay'")
    sweep.add_argument("--backend", default="local", choices=("local", "ray"),
                       help="local: processes on this machine; ray: one Ray task per run (pip install 'clbench[ray]')")
    sweep.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                       help="runs at once (local processes, or the CPUs of a local Ray instance; default: 1)")
    sweep.add_argument("--address", metavar="ADDR", help="the Ray cluster to join (default: start a local instance)")
    sweep.add_argument("--gpus-per-run", type=float, default=0.0, metavar="G", help="GPUs each Ray task asks for (default: 0)")
    sweep.add_argument("--force", action="store_true", help="run again even the runs that already have a row")
    sweep.add_argument("--dry-run", action="store_true",
                       help="list the runs that would run and those skipped, with their data's state and estimated "
                            "cost (from the leaderboard's rows); run and write nothing")
    _execution_options(sweep)
    _leaderboard_option(sweep)

    again = commands.add_parser("reproduce", help="re-run one leaderboard row and check it comes out the same",
                                description="Re-run the row RUN_ID from what it records and report whether the stream "
                                            "fingerprint, the setting and the accuracy matrix match, cell by cell: "
                                            "exactly where everything that decides the arithmetic is the row's (device, "
                                            "processor, torch, clbench source, threads, deterministic "
                                            "algorithms), else within 2 test samples per cell. Appends nothing.")
    again.add_argument("run_id", metavar="RUN_ID", help="the row's run_id (a unique prefix is enough)")
    again.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"),
                       help="default: cpu for a row run on the CPU, else auto")
    again.add_argument("--data-root", metavar="DIR", help="data folder (default: $CLBENCH_DATA, else ~/.cache/clbench)")
    again.add_argument("--cache-dir", metavar="DIR", type=Path, help="where the rerun's checkpoint goes (default: the data root)")
    again.add_argument("--threads", type=_positive_int, metavar="N",
                       help="CPU threads for torch (default: the row's; as `clbench run` for a row that does not record it)")
    _precision_option(again, None, "default: the row's")
    _leaderboard_option(again)

    data = commands.add_parser("data", help="report which datasets are present, prepared, missing or corrupt",
                               description="Report each dataset's state under the data root; --prepare builds the array caches.")
    data.add_argument("--data-root", metavar="DIR", help="data folder (default: $CLBENCH_DATA, else ~/.cache/clbench)")
    data.add_argument("--prepare", nargs="*", metavar="NAME",
                      help="decode images into the prepared .npy caches (all datasets when no NAME is given)")
    data.add_argument("--cache-dir", metavar="DIR", type=Path,
                      help="where prepared caches go when the data root is read-only (default: next to the data)")

    board = commands.add_parser("leaderboard", help="show results grouped over seeds (mean ± std)",
                                description="Show leaderboard rows grouped by (scenario, stream fingerprint, setting, learner, config): "
                                            "mean ± std over seeds, each seed counted once, one table per setting.")
    _leaderboard_option(board)
    board.add_argument("--format", default="text", choices=("text", "markdown", "csv", "html"),
                       help="text, markdown or csv tables, or html: one self-contained page with the plots (default: text)")
    board.add_argument("--plot", metavar="DIR", type=Path,
                       help="also write accuracy-curve and accuracy-matrix plots (PNG) into DIR")
    board.add_argument("--write", metavar="DIR", type=Path,
                       help="write LEADERBOARD.md, leaderboard.html and plots/ into DIR instead of printing")
    return parser


def _execution_options(parser: argparse.ArgumentParser) -> None:
    """How runs are carried out: device, data and cache folders, threads, progress (run and sweep)."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="auto picks CUDA, then MPS, then CPU (default: auto)")
    parser.add_argument("--data-root", metavar="DIR", help="data folder (default: $CLBENCH_DATA, else ~/.cache/clbench)")
    parser.add_argument("--cache-dir", metavar="DIR", type=Path,
                        help="where prepared image caches, frozen-encoder features and run checkpoints go "
                             "(default: next to the data, DATA_ROOT/features and DATA_ROOT/checkpoints)")
    parser.add_argument("--no-feature-cache", action="store_true", help="compute frozen-encoder features in memory only")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars and the per-experience log lines")
    parser.add_argument("--threads", type=_positive_int, metavar="N",
                        help="CPU threads for torch (default: 1 for images of at most 32x32 pixels on the CPU, "
                             "where a thread pool only adds overhead; else one per core)")
    _precision_option(parser, "auto", "auto: bf16 on a CUDA GPU, fp32 elsewhere (default: auto)")
    parser.add_argument("--log", nargs=2, metavar=("KIND", "DIR"),
                        help="also log each run as it goes: `tensorboard DIR` writes per-epoch training loss and "
                             "accuracy, per-experience accuracies and the final figures into one TensorBoard run "
                             "directory per run under DIR (pip install 'clbench[tensorboard]')")


def _precision_option(parser: argparse.ArgumentParser, default: str | None, default_help: str) -> None:
    # the choices are clbench.precision.PRECISIONS, not imported here: that module loads torch
    parser.add_argument("--precision", default=default, choices=("auto", "bf16", "fp32"),
                        help="arithmetic of learn/predict and the frozen encoder: bf16 autocast or fp32, recorded in "
                             f"the row and its setting; a scenario's own precision setting wins; {default_help}")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got '{text}'")
    return int(text)


def _leaderboard_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--leaderboard", metavar="PATH", type=Path,
                        help="leaderboard CSV (default: $CLBENCH_LEADERBOARD, else ./leaderboard/leaderboard.csv)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `clbench` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if not args.debug:
        warnings.formatwarning = lambda message, *_, **__: f"clbench: warning: {message}\n"
    try:
        commands = {"list": _list, "run": _run, "sweep": _sweep, "reproduce": _reproduce, "data": _data,
                    "leaderboard": _leaderboard}
        return commands[args.command](args)
    except ClbenchError as exc:
        if args.debug:
            raise
        hint = " (rerun with --debug for the traceback)" if exc.__cause__ is not None else ""
        print(f"clbench: error: {exc}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = " (finished experiences are saved: the same command resumes)" if args.command in ("run", "sweep") else ""
        print(f"clbench: interrupted{resume}", file=sys.stderr)
        return 130


def _list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from clbench.learner import available_learners, get_learner
    from clbench.scenario import available_scenarios

    if args.learner:
        cls = get_learner(args.learner)
        print(f"{cls.name}: {cls.summary()}")
        print(f"  wants={cls.wants} online={cls.online} needs_task_ids={cls.needs_task_ids} mergeable={cls.mergeable}")
        rows = [(hp.name, repr(hp.default), hp.accepts())
                for hp in cls.hyperparameters().values()]
        print(tabulate(rows, headers=("hyper-parameter", "default", "accepts")) if rows else "  no hyper-parameters")
        return 0
    learners = [get_learner(name) for name in available_learners()]
    print("Learners (clbench list --learner NAME for details):")
    print(tabulate([(c.name, c.wants, _yes(c.online), _yes(c.mergeable), ", ".join(hp.describe() for hp in c.hyperparameters().values()))
                    for c in learners], headers=("name", "wants", "online", "mergeable", "hyper-parameters")))
    print("\nScenarios:")
    print(tabulate([(s.name, s.dataset, _protocol(s), s.n_experiences, s.description) for s in available_scenarios().values()],
                   headers=("name", "dataset", "protocol", "experiences", "description")))
    return 0


def _protocol(spec: Any) -> str:
    """The spec's protocol; a task-incremental one with how it trains (`til_training`)."""
    return f"{spec.protocol} ({spec.til_training})" if spec.protocol == "task-incremental" else spec.protocol


def _yes(flag: bool) -> str:
    return "yes" if flag else ""


def _run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from clbench import leaderboard
    from clbench.device import resolve_device
    from clbench.feature_cache import FeatureCache
    from clbench.learner import get_learner
    from clbench.orchestration import RunOptions, configure_torch, run_and_store
    from clbench.overrides import parse_seeds, parse_settings, route_settings
    from clbench.precision import with_precision
    from clbench.run_log import log_target
    from clbench.scenario import ScenarioSpec, build_scenario, load_spec

    path = args.leaderboard or leaderboard.default_path()
    leaderboard.check_writable(path)
    log = log_target(*args.log) if args.log else None
    cache_root = _cache_root(args)
    seeds = parse_seeds(args.seed)
    names = [name.strip() for name in args.learner.split(",") if name.strip()]
    if not names or not seeds:
        raise ClbenchError("give at least one learner and one seed")
    learners = [get_learner(name) for name in names]
    repeated = sorted({c.name for c in learners if sum(o.name == c.name for o in learners) > 1})
    if repeated:
        raise ClbenchError(f"--learner names {', '.join(repeated)} more than once: give each learner once")
    spec = load_spec(args.scenario)
    overrides, configs = route_settings(parse_settings(args.settings), learners, ScenarioSpec.fields())
    spec = spec.with_overrides(overrides)
    device = resolve_device(args.device)
    scenario = with_precision(build_scenario(spec, args.data_root, args.cache_dir, seeds[0]), device, args.precision)
    cache = None if args.no_feature_cache else FeatureCache(cache_root / "features")
    configure_torch(scenario, device, args.threads, args.deterministic)

    options = RunOptions(device, cache_root / "checkpoints", path, cache, resume=not args.no_resume,
                         progress=not args.no_progress, log=log)
    table, columns = [], {**leaderboard.figures(scenario.stream.protocol), **_other_scoring(scenario.stream.protocol)}
    for cls in learners:
        for seed in seeds:
            row = run_and_store(scenario, cls, configs[cls], seed, options)
            table.append([row["learner"], seed, *(_fmt(row[c]) for c in columns.values()),
                          f"{row['train_seconds']:.2f}", f"{row['eval_seconds']:.2f}", _features(row)])
    print(f"{_describe(scenario)} on {device} in {scenario.spec.precision}")
    print(tabulate(table, headers=("learner", "seed", *columns, "train s", "eval s", "features"), disable_numparse=True))
    print(f"\n{len(table)} row(s) appended to {path}")
    return 0


def _other_scoring(protocol: str) -> dict[str, str]:
    """The results table's column for the scoring a protocol records beside its own (`evaluation.SCORINGS`):
    a class-incremental run's Task-IL accuracy (its scores masked to each task; predict had no task id),
    a task-incremental run's Class-IL accuracy (predict without the task id)."""
    from clbench.evaluation import SCORINGS

    labels = {"task_il": ("task-IL acc (no task id)", "final_task_il_accuracy"),
              "class_il": ("class-IL acc", "final_class_il_accuracy")}
    return dict([labels[SCORINGS[protocol][1]]]) if protocol in SCORINGS else {}


def _features(row: dict) -> str:
    """Which frozen encoder fed a feature-level learner and how: cache hit / miss (with seconds) or
    computed in memory; "-" for learners that take images."""
    if row["feature_cache"] in ("hit", "miss"):
        return f"{row['backbone']}: cache {row['feature_cache']} {row['feature_seconds']:.2f}s"
    return f"{row['backbone']}: computed {row['feature_seconds']:.2f}s" if row["feature_seconds"] else "-"


def _cache_root(args: argparse.Namespace) -> Path:
    """Where a run writes its checkpoints and features, checked up front (one line if unusable)."""
    from clbench.datasets import resolve_data_root
    from clbench.files import usable_folder

    root = resolve_data_root(args.data_root)
    if args.cache_dir:
        usable_folder(args.cache_dir, "--cache-dir", write=True)
    cache_root = args.cache_dir or root
    for sub in ("checkpoints", "features"):
        usable_folder(cache_root / sub, f"the {sub} folder")
    return cache_root


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _describe(scenario: Any) -> str:
    """The results header: scenario (with its overrides), protocol, size, stream fingerprint (one per
    seed for a "seeded" class order) and setting."""
    from clbench.setting import is_seeded, setting_identity

    spec, stream = scenario.spec, scenario.stream
    size = _plural(len(stream.episodes), "test episode") if stream.episodes else \
        _plural(len(stream.experiences), "experience")
    changed = f" [{', '.join(f'{k}={v}' for k, v in spec.overrides.items())}]" if spec.overrides else ""
    setting = setting_identity(spec)
    fingerprint = "one per seed" if is_seeded(setting) else scenario.fingerprint[:8]
    return (f"{spec.display_name}{changed} ({stream.protocol}, {size}, fingerprint {fingerprint}, "
            f"setting {setting if is_seeded(setting) else setting[:8]})")


def _fmt(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"


def _data(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from clbench.datasets import resolve_data_root, status
    from clbench.files import usable_folder

    root = resolve_data_root(args.data_root)
    if args.cache_dir:
        usable_folder(args.cache_dir, "--cache-dir", write=args.prepare is not None)
    if args.prepare is not None:
        entries = status.prepare(root, args.prepare or None, args.cache_dir)
    else:
        entries = status.report(root, None, args.cache_dir)
    print(f"data root: {root}")
    print(tabulate([(e["name"], e["state"], e["path"], e["detail"]) for e in entries],
                   headers=("dataset", "state", "path", "detail")))
    return 1 if status.failed(entries, required=bool(args.prepare)) else 0


def _sweep(args: argparse.Namespace) -> int:
    from clbench import leaderboard
    from clbench.recipes import load_jobs
    from clbench.run_log import log_target
    from clbench.sweep import Worker, runs_device, sweep

    path = args.leaderboard or leaderboard.default_path()
    jobs = load_jobs(args.recipes, args.filter, args.precision,
                     runs_device(args.device, args.backend, args.gpus_per_run))
    if args.dry_run:
        from clbench.datasets import resolve_data_root
        from clbench.sweep_plan import describe, plan

        print("\n".join(describe(plan(jobs, path, resolve_data_root(args.data_root), args.cache_dir, args.force), path)))
        return 0
    worker = Worker(device=args.device, data_root=args.data_root, cache_dir=args.cache_dir and str(args.cache_dir),
                    cache_root=str(_cache_root(args)), feature_cache=not args.no_feature_cache, threads=args.threads,
                    progress=not args.no_progress and args.workers == 1 and args.backend == "local",
                    log=log_target(*args.log) if args.log else None)
    summary = sweep(jobs, path, worker, args.backend, args.workers, args.force, args.address, args.gpus_per_run,
                    report=lambda line: print(line, flush=True))
    print(f"\n{len(jobs)} run(s) in the recipes: {len(summary.done)} done, {summary.skipped} skipped (already in "
          f"{path}), {len(summary.failed)} failed")
    for outcome in summary.failed:
        print(f"  failed twice: {outcome.job.label}: {outcome.error}")
    return 1 if summary.failed else 0


def _reproduce(args: argparse.Namespace) -> int:
    from clbench import leaderboard
    from clbench.reproduce import describe, find_row, reproduce

    row = find_row(args.leaderboard or leaderboard.default_path(), args.run_id)
    check = reproduce(row, args.data_root, _cache_root(args), args.device, args.threads, args.precision)
    print("\n".join(describe(check)))
    return 0 if check.ok else 1


def _leaderboard(args: argparse.Namespace) -> int:
    from clbench import leaderboard

    path = args.leaderboard or leaderboard.default_path()
    if args.write:
        from clbench.report import write_site

        written = write_site(path, args.write)
        print(f"{len(written)} file(s) written to {args.write}")
        return 0
    frame = leaderboard.read(path)
    if args.format == "html":
        from clbench.report import html_page

        print(html_page(frame), end="")
    else:
        from clbench.leaderboard_tables import render

        print(render(leaderboard.aggregate(frame), args.format), end="\n" if args.format != "csv" else "")
    if args.plot:
        from clbench.plots import plot_leaderboard

        written = plot_leaderboard(frame, args.plot)
        print(f"\n{len(written)} plot(s) written to {args.plot}")
    return 0


def entry() -> None:
    """Console-script wrapper; a reader that stops early (`clbench list | head -1`) ends it quietly."""
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more can reach the reader
        status = 0
    sys.exit(status)
