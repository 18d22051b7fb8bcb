"""Few-shot test episodes: clbench vs easyfsl 1.5.0 with a frozen Conv-4, measured side by side.

The job: 2,000 test episodes (5-way 5-shot, 15 queries per class) of prototypical networks with a
frozen, randomly initialised Conv-4 (84 x 84 px, 3 channels, 1600-d output; a frozen random
encoder does exactly the arithmetic of a meta-trained one). Data: synthetic uint8 images of
mini-ImageNet's test shape, 20 classes x 600 images x 3 x 84 x 84 (`--quick`: 100 per class), class
c a faint per-class colour under heavy noise, so that accuracies are well above chance (5-way: 20%)
but far from 100%, and mean something; both libraries get the same images and the same
normalisation ((x / 255 - mean) / std, ImageNet statistics).

- clbench: an episodic scenario (meta-train partition: 5 other classes x 10 images, unused since
  `episodes=0` means no meta-training), `runner.run(scenario, ProtoNet, {"episodes": 0,
  "backbone": "conv4"})`. The seconds are the whole run (episode sampling included) and its episode
  evaluation (`RunResult.eval_seconds`): clbench encodes every test image once, then learns and
  predicts each episode on the embeddings; its frozen encoder is an `inference_copy` (batch norms
  folded, channels-last), and the script prints that copy's throughput next to the module's.
- easyfsl, as its users run it: a `FewShotDataset` over the same arrays (`__getitem__` gives one
  normalised float image and its label; `get_labels()`), `TaskSampler(n_way=5, n_shot=5,
  n_query=15, n_tasks=N)`, a `DataLoader(batch_sampler=sampler, collate_fn=
  sampler.episodic_collate_fn)` (no worker processes: the machine's cores go to the convolutions),
  `PrototypicalNetworks` over the SAME Conv-4 (a copy of the clbench learner's encoder: same
  weights, eval mode, in the default memory layout a user's module has; `in_user_layout`) and
  easyfsl's own `evaluate` loop (eval mode, no_grad,
  `process_support_set(support)` then `model(query)`, argmax): every episode re-encodes its 25
  support and 75 query images. easyfsl is slow, so only `--easyfsl-episodes` episodes are run
  (default 100; `--quick`: 20) and the time is extrapolated linearly to `--episodes`; the table says
  so. The episodes of the two libraries differ (different samplers), so their mean accuracies agree
  only within sampling error; a cross-check (untimed) runs easyfsl on clbench's first `--check`
  episodes and compares the per-episode accuracies, which must then be equal.

Target: clbench >= 20x faster than easyfsl (whole clbench run vs easyfsl's loop).

    python benchmarks/fewshot_episodes.py [--quick] [--episodes 2000] [--easyfsl-episodes 100]
                                          [--check 5] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, table, timed, verdict  # noqa: E402

from clbench import metrics  # noqa: E402
from clbench.datasets import Dataset, LabeledArrays  # noqa: E402
from clbench.device import resolve_device, synchronize  # noqa: E402
from clbench.inference import channels_last, inference_copy  # noqa: E402
from clbench.learners.protonet import ProtoNet  # noqa: E402
from clbench.protocols.episodes import episodic_stream  # noqa: E402
from clbench.runner import run  # noqa: E402
from clbench.scenario import Scenario, ScenarioSpec  # noqa: E402

WAY, SHOT, QUERY = 5, 5, 15
SIZE = 84
N_TEST_CLASSES, N_TRAIN_CLASSES, N_TRAIN_PER_CLASS = 20, 5, 10
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
EVAL_BATCH = 256  # clbench's encoding batch (ScenarioSpec.eval_batch_size); ~the fastest on 2 CPU cores
TARGET = 20.0


# ---- data -----------------------------------------------------------------------------------------
def synthetic_miniimagenet(per_class: int, seed: int = 0) -> Dataset:
    """Train: 5 classes x 10 images (labels 0-4); test: 20 classes x `per_class` images (labels 5-24),
    uint8 3 x 84 x 84. Class c: a colour drawn in [120, 136] per channel plus uniform noise (+-112);
    with a random Conv-4, 5-way 5-shot nearest-prototype accuracy is about 70%."""
    rng = np.random.default_rng(seed)
    n_classes = N_TRAIN_CLASSES + N_TEST_CLASSES
    colours = rng.integers(120, 137, (n_classes, 3), dtype=np.int16)
    names = tuple(f"class{c:02d}" for c in range(n_classes))

    def part(classes: np.ndarray, n: int) -> LabeledArrays:
        labels = np.repeat(classes, n).astype(np.int64)
        images = np.empty((len(labels), 3, SIZE, SIZE), dtype=np.uint8)
        for start in range(0, len(labels), 1000):  # in chunks: small int16 temporaries
            stop = min(len(labels), start + 1000)
            noise = rng.integers(-112, 113, (stop - start, 3, SIZE, SIZE), dtype=np.int16)
            images[start:stop] = np.clip(colours[labels[start:stop], :, None, None] + noise, 0, 255)
        return LabeledArrays(images, labels, names)

    return Dataset("synthetic-miniimagenet-test",
                   {"train": part(np.arange(N_TRAIN_CLASSES), N_TRAIN_PER_CLASS),
                    "test": part(np.arange(N_TRAIN_CLASSES, n_classes), per_class)})


# ---- clbench ----------------------------------------------------------------------------------------
class RecordedProtoNet(ProtoNet):
    """ProtoNet unchanged, remembering its instances: easyfsl then gets the same encoder (`in_user_layout`)."""

    made: list[ProtoNet] = []

    def __init__(self, context, **config):  # type: ignore[no-untyped-def]
        super().__init__(context, **config)
        RecordedProtoNet.made.append(self)


def in_user_layout(encoder: torch.nn.Module) -> torch.nn.Module:
    """The learner's encoder (same weights) in the default memory layout, as a user's module is built:
    clbench keeps its trainable encoders channels-last, which easyfsl's users do not."""
    return copy.deepcopy(encoder).to(memory_format=torch.contiguous_format)


def run_clbench(dataset: Dataset, episodes: int, device: torch.device):  # type: ignore[no-untyped-def]
    """(total seconds, RunResult, Scenario) of one clbench run over `episodes` test episodes."""
    spec = ScenarioSpec(name="fewshot-episodes-bench", dataset=dataset.name, protocol="episodes", n_experiences=1,
                        backbone="conv4", mean=MEAN, std=STD, eval_batch_size=EVAL_BATCH,
                        way=WAY, shot=SHOT, query=QUERY, test_episodes=episodes)

    def job():  # type: ignore[no-untyped-def]
        stream = episodic_stream(dataset.partition("train").labels, dataset.partition("test").labels,
                                 WAY, SHOT, QUERY, episodes, seed=spec.episode_seed)
        scenario = Scenario(spec, dataset, stream)
        return scenario, run(scenario, RecordedProtoNet, {"episodes": 0, "backbone": "conv4"}, seed=0,
                             device=device, progress=False)

    seconds, (scenario, result) = timed(job, device)
    return seconds, result, scenario


# ---- easyfsl ----------------------------------------------------------------------------------------
def let_samplers_take_data_source() -> None:
    """easyfsl 1.5.0's TaskSampler calls `super().__init__(data_source=None)`; current torch's
    `Sampler` has no `__init__` of its own any more (object's takes no argument), so that raises a
    TypeError. Patched here, in this process only: `Sampler.__init__` accepts `data_source` and
    ignores it (which is all older torch did with it)."""
    sampler = torch.utils.data.Sampler
    original = sampler.__init__
    if getattr(original, "_ignores_data_source", False):
        return

    def __init__(self, *args, data_source=None, **kwargs):  # type: ignore[no-untyped-def]
        original(self, *args, **kwargs)

    __init__._ignores_data_source = True  # type: ignore[attr-defined]
    sampler.__init__ = __init__  # type: ignore[method-assign]


def easyfsl_dataset(images: np.ndarray, labels: np.ndarray):  # type: ignore[no-untyped-def]
    """An easyfsl `FewShotDataset` over the arrays: one normalised float image and its int label."""
    from easyfsl.datasets import FewShotDataset

    class ArrayFewShotDataset(FewShotDataset):
        def __init__(self) -> None:
            self.images, self.labels = images, [int(y) for y in labels]
            self.mean = torch.tensor(MEAN).view(3, 1, 1)
            self.std = torch.tensor(STD).view(3, 1, 1)

        def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
            return normalise(self.images[item], self.mean, self.std), self.labels[item]

        def __len__(self) -> int:
            return len(self.labels)

        def get_labels(self) -> list[int]:
            return self.labels

    return ArrayFewShotDataset()


def normalise(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (... x) 3 x H x W -> float (x / 255 - mean) / std, what torchvision's ToTensor + Normalize give."""
    return (torch.from_numpy(np.ascontiguousarray(images)).float().div(255) - mean) / std


def run_easyfsl(dataset, encoder: torch.nn.Module, tasks: int, device: torch.device):  # type: ignore[no-untyped-def]
    """(seconds, mean accuracy %) of easyfsl's evaluation loop over `tasks` episodes."""
    from easyfsl.methods import PrototypicalNetworks
    from easyfsl.samplers import TaskSampler
    from easyfsl.utils import evaluate

    random.seed(0)  # TaskSampler draws with Python's `random`

    def job() -> float:
        sampler = TaskSampler(dataset, n_way=WAY, n_shot=SHOT, n_query=QUERY, n_tasks=tasks)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=sampler.episodic_collate_fn)
        model = PrototypicalNetworks(encoder).to(device)
        return 100.0 * evaluate(model, loader, device=str(device), use_tqdm=False)

    return timed(job, device)


def cross_check(scenario: Scenario, result, encoder: torch.nn.Module, k: int,  # type: ignore[no-untyped-def]
                device: torch.device) -> tuple[int, float]:
    """easyfsl on clbench's first k episodes (same images, same encoder): how many per-episode
    accuracies are equal, and the largest difference (percentage points)."""
    from easyfsl.methods import PrototypicalNetworks
    from easyfsl.utils import evaluate_on_one_task

    test = scenario.dataset.partition("test")
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    model = PrototypicalNetworks(encoder).to(device).eval()
    equal, worst = 0, 0.0
    with torch.no_grad():
        for episode, theirs in zip(scenario.stream.episodes[:k], result.episode_accuracies[:k]):
            local = {c: i for i, c in enumerate(episode.classes)}
            relabel = lambda rows: torch.tensor([local[int(c)] for c in test.labels[rows]], device=device)  # noqa: E731
            correct, total = evaluate_on_one_task(
                model, normalise(test.images[episode.support], mean, std).to(device), relabel(episode.support),
                normalise(test.images[episode.query], mean, std).to(device), relabel(episode.query))
            ours = 100.0 * correct / total
            equal += abs(ours - theirs) < 1e-3  # clbench averages hits in float32
            worst = max(worst, abs(ours - theirs))
    return equal, worst


def encoder_throughput(encoder: torch.nn.Module, device: torch.device, batch: int = EVAL_BATCH,
                       seconds: float = 3.0) -> tuple[float, float]:
    """Images/s of the encoder as built (what easyfsl runs) and of clbench's `inference_copy` of it
    (batch norms folded, channels-last), side by side on the same random batch."""
    x = torch.randn(batch, 3, SIZE, SIZE, device=device)

    def rate(model: torch.nn.Module, inputs: torch.Tensor) -> float:
        with torch.inference_mode():
            model(inputs)
            synchronize(device)
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                model(inputs)
                n += batch
            synchronize(device)
            return n / (time.perf_counter() - start)

    return rate(encoder.eval(), x), rate(inference_copy(encoder), channels_last(x))


# ---- main -------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 test images per class instead of 600")
    parser.add_argument("--episodes", type=int, default=2000, help="test episodes (default 2000)")
    parser.add_argument("--easyfsl-episodes", type=int, default=None,
                        help="episodes easyfsl really runs, extrapolated to --episodes (default 100, --quick 20; "
                             "0: all of them)")
    parser.add_argument("--check", type=int, default=5,
                        help="clbench episodes re-run through easyfsl to compare accuracies (untimed; default 5)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = parser.parse_args()

    let_samplers_take_data_source()
    import easyfsl.utils  # noqa: F401  (imports pandas, matplotlib, torchvision: kept out of the timings)

    device = resolve_device(args.device)
    per_class = 100 if args.quick else 600
    n = args.episodes
    m = args.easyfsl_episodes if args.easyfsl_episodes is not None else (20 if args.quick else 100)
    m = n if m <= 0 else min(m, n)
    dataset = synthetic_miniimagenet(per_class)
    test = dataset.partition("test")
    print(f"# few-shot episodes: {n:,} test episodes, {WAY}-way {SHOT}-shot {QUERY} queries, frozen random Conv-4 "
          f"({SIZE} px); test set {N_TEST_CLASSES} classes x {per_class} images 3x{SIZE}x{SIZE} (synthetic)")
    print(f"# machine: {machine()}; device {device}", flush=True)

    total, result, scenario = run_clbench(dataset, n, device)
    clbench_mean, clbench_ci = metrics.fewshot_summary(result.episode_accuracies)
    encoder = in_user_layout(RecordedProtoNet.made[-1].encoder)
    print(f"clbench: {total:.1f} s in all, {result.eval_seconds:.1f} s episode evaluation "
          f"(training {result.train_seconds:.2f} s); accuracy {clbench_mean:.2f} +- {clbench_ci:.2f} %", flush=True)

    equal, worst = cross_check(scenario, result, encoder, min(args.check, n), device) if args.check > 0 else (0, 0.0)
    if args.check > 0:
        print(f"cross-check: easyfsl on clbench's first {min(args.check, n)} episodes: {equal} per-episode "
              f"accuracies equal, largest difference {worst:.2f} points", flush=True)

    measured, easyfsl_acc = run_easyfsl(easyfsl_dataset(test.images, test.labels), encoder, m, device)
    easyfsl_seconds = measured * n / m
    extrapolated = m < n
    print(f"easyfsl: {measured:.1f} s for {m:,} episodes ({m / measured:.2f} episodes/s); accuracy "
          f"{easyfsl_acc:.2f} %", flush=True)

    note = f" (extrapolated from {m:,} episodes)" if extrapolated else ""
    ratio, eval_ratio = easyfsl_seconds / total, easyfsl_seconds / result.eval_seconds
    print(f"\n## {n:,} test episodes, {WAY}-way {SHOT}-shot {QUERY}-query, frozen Conv-4 at {SIZE} px\n")
    print(table(["", "seconds", "episodes/s", "easyfsl / this", "mean accuracy %"], [
        ["clbench, whole run", f"{total:.1f}", f"{n / total:.1f}", f"{ratio:.1f}x",
         f"{clbench_mean:.2f} +- {clbench_ci:.2f}"],
        ["clbench, episode evaluation", f"{result.eval_seconds:.1f}", f"{n / result.eval_seconds:.1f}",
         f"{eval_ratio:.1f}x", ""],
        [f"easyfsl 1.5.0{note}", f"{easyfsl_seconds:.1f}", f"{m / measured:.2f}", "1.0x",
         f"{easyfsl_acc:.2f} (over {m:,} episodes)"],
    ]))
    print(f"\nTarget: clbench >= {TARGET:.0f}x faster than easyfsl (whole run): {ratio:.1f}x, "
          f"{verdict(ratio >= TARGET)}."
          + (f" easyfsl's time is extrapolated linearly from {m:,} of {n:,} episodes." if extrapolated else ""))
    as_built, folded = encoder_throughput(encoder, device)
    print(f"Encoder throughput (batch {EVAL_BATCH}): as built {as_built:.0f} images/s (what easyfsl runs); clbench's "
          f"frozen copy (batch norms folded, channels-last) {folded:.0f} images/s: {folded / as_built:.2f}x.")
    used = len(np.unique(np.concatenate([np.concatenate([e.support, e.query]) for e in scenario.stream.episodes])))
    per_episode = WAY * (SHOT + QUERY)
    print(f"Images encoded: clbench {used:,} (each test image an episode uses, once); easyfsl {per_episode} per "
          f"episode, {per_episode * n:,} for {n:,} episodes: {per_episode * n / used:.1f}x as many.")
    same = (f"; on the same {min(args.check, n)} episodes (cross-check) their per-episode accuracies are "
            f"{'equal' if equal == min(args.check, n) else 'NOT all equal'}") if args.check > 0 else ""
    print("Accuracies: the two libraries draw different episodes, so their means agree only within sampling "
          f"error (5-way chance: 20%){same}.")


if __name__ == "__main__":
    main()
