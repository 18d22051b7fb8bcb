"""`clbench sweep`: run every recipe's runs that the leaderboard lacks, on this machine's processes
(`local`) or as Ray tasks (`ray`), retrying a failed run once. Workers only run (through
`orchestration.run_and_store`) and return the row; the driver alone appends rows."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from clbench import leaderboard
from clbench.errors import ClbenchError
from clbench.guard import one_line
from clbench.recipes import Job, run_key
from clbench.run_log import LogTarget

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class Worker:
    """What a worker needs to carry out a job, wherever it runs (plain values: it is pickled)."""

    device: str = "auto"
    data_root: str | None = None
    cache_dir: str | None = None
    cache_root: str = "."
    feature_cache: bool = True
    threads: int | None = None
    progress: bool = False
    log: LogTarget | None = None
    """`--log KIND DIR` (`clbench.run_log`): each run logged as it goes."""


@dataclass(frozen=True)
class Outcome:
    job: Job
    row: dict[str, Any] | None
    error: str = ""


@dataclass
class Summary:
    done: list[Outcome]
    skipped: int
    failed: list[Outcome]


def execute(job: Job, worker: Worker) -> Outcome:
    """Carry out one job (resuming its checkpoint) and return its row, or the one-line reason it failed."""
    from clbench.device import resolve_device
    from clbench.feature_cache import FeatureCache
    from clbench.learner import get_learner
    from clbench.orchestration import RunOptions, configure_torch, run_and_store
    from clbench.scenario import build_scenario, load_spec

    try:
        spec = load_spec(job.scenario).with_overrides(job.settings)
        scenario = build_scenario(spec, worker.data_root, worker.cache_dir, job.seed)
        device = resolve_device(worker.device)
        configure_torch(scenario, device, worker.threads)
        root = Path(worker.cache_root)
        options = RunOptions(device, root / "checkpoints", None,
                             FeatureCache(root / "features") if worker.feature_cache else None,
                             progress=worker.progress, precision=job.precision, log=worker.log)
        return Outcome(job, run_and_store(scenario, get_learner(job.learner), job.config, job.seed, options))
    except ClbenchError as exc:
        return Outcome(job, None, str(exc))
    except Exception as exc:  # a learner or a library may fail in any way: that run fails, the sweep goes on
        return Outcome(job, None, one_line(exc))


def runs_device(device: str, backend: str, gpus_per_run: float) -> str:
    """The device type the sweep's runs will use, as the driver can tell before any starts (what "auto"
    precision resolves with): `device` itself unless "auto"; else this machine's (local backend), or
    cuda for Ray tasks given GPUs and cpu for Ray tasks given none."""
    if device != "auto":
        return device
    if backend == "ray":
        return "cuda" if gpus_per_run > 0 else "cpu"
    from clbench.device import resolve_device

    return resolve_device("auto").type


def finished_runs(path: Path) -> pd.DataFrame | None:
    """The finished runs at `path`, one per seed (`leaderboard.latest_runs`); None when there are none."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    return leaderboard.latest_runs(leaderboard.read(path))[0]


def run_keys(runs: pd.DataFrame | None) -> set[tuple]:
    """The identity (`recipes.run_key`) of every run in `runs`."""
    if runs is None:
        return set()
    return {run_key(*values) for values in
            runs[["scenario", "setting_id", "learner", "learner_config", "seed"]].itertuples(index=False)}


def pending(jobs: list[Job], path: Path, force: bool) -> list[Job]:
    """The jobs whose (setting, learner, config, seed) has no finished row at `path` (all with `force`)."""
    done = set() if force else run_keys(finished_runs(path))
    return [job for job in jobs if job.key not in done]


def sweep(jobs: list[Job], path: Path, worker: Worker, backend: str = "local", workers: int = 1, force: bool = False,
          address: str | None = None, gpus_per_run: float = 0.0,
          report: Callable[[str], None] = print) -> Summary:
    """Run the `jobs` that `path` lacks (all with `force`), appending each row as it arrives; a
    failed run is retried once after the others. `report` gets one line per finished or failed run."""
    if backend not in BACKENDS:
        raise ClbenchError(f"unknown backend '{backend}' (accepted: {', '.join(BACKENDS)})")
    leaderboard.check_writable(path)
    todo = pending(jobs, path, force)
    summary = Summary([], len(jobs) - len(todo), [])
    for attempt in (1, 2):
        failed = []
        for outcome in _carry_out(todo, worker, backend, workers, address, gpus_per_run):
            if outcome.row is None:
                failed.append(outcome)
                report(f"FAILED {outcome.job.label}: {outcome.error}" + (" (retried after the others)" if attempt == 1 else ""))
                continue
            leaderboard.append_rows(path, [outcome.row])
            summary.done.append(outcome)
            report(f"ok     {outcome.job.label}: {_headline(outcome.row)}")
        todo = [outcome.job for outcome in failed]
        summary.failed = failed
    return summary


def _headline(row: dict[str, Any]) -> str:
    label, column = next(iter(leaderboard.figures(row["protocol"]).items()))
    return f"{label} {row[column]:.2f}, {row['train_seconds']:.1f} s"


def _carry_out(jobs: list[Job], worker: Worker, backend: str, workers: int, address: str | None,
               gpus: float) -> Iterator[Outcome]:
    if not jobs:
        return iter(())
    if backend == "ray":
        return _ray(jobs, worker, workers, address, gpus)
    return _local(jobs, worker, workers)


def _local(jobs: list[Job], worker: Worker, workers: int) -> Iterator[Outcome]:
    """In this process (one worker), else in `workers` fresh processes, each run on a share of the cores."""
    if workers == 1:
        for job in jobs:
            yield execute(job, worker)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    share = replace(worker, threads=worker.threads or max(1, (os.cpu_count() or 1) // workers), progress=False)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(execute, job, share): job for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool as exc:  # a worker died (killed, out of memory)
                yield Outcome(futures[future], None, f"the worker process died ({one_line(exc)})")


def _ray(jobs: list[Job], worker: Worker, workers: int, address: str | None, gpus: float) -> Iterator[Outcome]:
    """One Ray task per job (1 CPU and `gpus` GPUs each) on the cluster at `address`, else on a local
    instance of `workers` CPUs; outcomes in the order they finish."""
    try:
        import ray
    except ImportError:
        raise ClbenchError("the ray backend needs Ray: pip install 'clbench[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(execute)
        share = replace(worker, threads=worker.threads or 1, progress=False)
        refs = {task.remote(job, share): job for job in jobs}
        while refs:
            [ready], _ = ray.wait(list(refs), num_returns=1)
            job = refs.pop(ready)
            try:
                yield ray.get(ready)
            except Exception as exc:  # the task's process died, or Ray could not run it
                yield Outcome(job, None, f"the Ray task failed ({one_line(exc)})")
    finally:
        if started:
            ray.shutdown()
