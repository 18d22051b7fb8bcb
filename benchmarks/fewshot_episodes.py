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
  folded, channels-last).
- easyfsl, twice: with the encoder as built (as its users run it) and with clbench's inference
  copy of it (equal arithmetic: what encode-once alone buys, against its bound, the ratio of images
  encoded). Otherwise as its users run it: a `FewShotDataset` over the same arrays (`__getitem__` gives one
  normalised float image and its label; `get_labels()`), `TaskSampler(n_way=5, n_shot=5,
  n_query=15, n_tasks=N)`, a `DataLoader(batch_sampler=sampler, collate_fn=
  sampler.episodic_collate_fn)` (no worker processes: the machine's cores go to the convolutions),
  `PrototypicalNetworks` over the SAME Conv-4 (a copy of the clbench learner's encoder: same
  weights; as built: eval mode, in the default memory layout a user's module has, `in_user_layout`;
  equal arithmetic: `_common.AsClbenchRunsIt`) and easyfsl's own `evaluate` loop (eval mode, no_grad,
  `process_support_set(support)` then `model(query)`, argmax): every episode re-encodes its 25
  support and 75 query images. easyfsl is slow, so only `--easyfsl-episodes` episodes are run
  (default 100; `--quick`: 20) and the time is extrapolated linearly to `--episodes`; the table says
  so. The episodes of the two libraries differ (different samplers), so their mean accuracies agree
  only within sampling error; a cross-check (untimed) runs easyfsl on clbench's first `--check`
  episodes (with each encoder) and compares the per-episode accuracies, which must then be equal
  up to float rounding (a query at a near tie between two prototypes can flip).

Target: clbench >= 20x faster than easyfsl (whole clbench run vs easyfsl's loop), judged on equal
arithmetic. Every measurement is repeated (`--repeats`, interleaved; an untimed clbench run warms up
first), its median reported with its spread and the load average around it.

    python benchmarks/fewshot_episodes.py [--quick] [--episodes 2000] [--easyfsl-episodes 100]
                                          [--check 5] [--device auto|cpu|cuda] [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (AsClbenchRunsIt, Measurement, apply_run_options, interleaved, load_note, machine,  # noqa: E402
                     marked, run_options, table, verdict)

from clbench import metrics  # noqa: E402
from clbench.datasets import Dataset, LabeledArrays  # noqa: E402
from clbench.device import resolve_device  # noqa: E402
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
    """(Scenario, RunResult) of one clbench run over `episodes` test episodes."""
    spec = ScenarioSpec(name="fewshot-episodes-bench", dataset=dataset.name, protocol="episodes", n_experiences=1,
                        backbone="conv4", mean=MEAN, std=STD, eval_batch_size=EVAL_BATCH,
                        way=WAY, shot=SHOT, query=QUERY, test_episodes=episodes)

    stream = episodic_stream(dataset.partition("train").labels, dataset.partition("test").labels,
                             WAY, SHOT, QUERY, episodes, seed=spec.episode_seed)
    scenario = Scenario(spec, dataset, stream)
    return scenario, run(scenario, RecordedProtoNet, {"episodes": 0, "backbone": "conv4"}, seed=0,
                         device=device, progress=False)


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


def run_easyfsl(dataset, encoder: torch.nn.Module, tasks: int, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    """Mean accuracy % of easyfsl's evaluation loop over `tasks` episodes (the same episodes every call)."""
    from easyfsl.methods import PrototypicalNetworks
    from easyfsl.samplers import TaskSampler
    from easyfsl.utils import evaluate

    random.seed(0)  # TaskSampler draws with Python's `random`
    sampler = TaskSampler(dataset, n_way=WAY, n_shot=SHOT, n_query=QUERY, n_tasks=tasks)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=sampler.episodic_collate_fn)
    model = PrototypicalNetworks(encoder).to(device)
    return 100.0 * evaluate(model, loader, device=str(device), use_tqdm=False)


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
    run_options(parser)
    args = parser.parse_args()
    repeats = apply_run_options(args)

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

    # an untimed clbench run: warms up, gives the learner's (seeded) encoder and the cross-check episodes
    k = max(args.check, 1)
    scenario, result = run_clbench(dataset, k, device)
    learner_encoder = RecordedProtoNet.made[-1].encoder
    encoders = {"equal": AsClbenchRunsIt(learner_encoder), "built": in_user_layout(learner_encoder)}
    names = {"equal": "clbench's inference copy of the encoder", "built": "the encoder as built"}
    for v, encoder in encoders.items() if args.check > 0 else ():
        equal, worst = cross_check(scenario, result, encoder, k, device)
        print(f"cross-check, {names[v]}: easyfsl on clbench's {k} episodes: {equal} per-episode accuracies "
              f"equal, largest difference {worst:.2f} points", flush=True)

    few = easyfsl_dataset(test.images, test.labels)
    clbench = Measurement(f"clbench, {n:,} episodes")
    easyfsl = {v: Measurement(f"easyfsl, {m:,} episodes, {names[v]}") for v in encoders}
    interleaved([(clbench, lambda: run_clbench(dataset, n, device))]
                + [(easyfsl[v], lambda e=e: run_easyfsl(few, e, m, device)) for v, e in encoders.items()],
                repeats, device)

    scenario, result = clbench.median_result
    clbench_mean, clbench_ci = metrics.fewshot_summary(result.episode_accuracies)
    scale = n / m  # easyfsl's seconds, extrapolated linearly from m to n episodes
    note = f", extrapolated from {m:,} episodes" if m < n else ""
    print(f"\n## {n:,} test episodes, {WAY}-way {SHOT}-shot {QUERY}-query, frozen Conv-4 at {SIZE} px\n")
    print(table(["", "seconds, median [spread]", "episodes/s", "mean accuracy %"], [
        ["clbench, whole run", clbench.cell(), f"{n / clbench.median:.1f}", f"{clbench_mean:.2f} +- {clbench_ci:.2f}"],
        ["clbench, its episode evaluation (in the median run)", f"{result.eval_seconds:.2f}", f"{n / result.eval_seconds:.1f}", ""],
        *[[f"easyfsl 1.5.0, {names[v]}{note}", easyfsl[v].cell(lambda s: s * scale, 1), f"{m / easyfsl[v].median:.2f}",
           f"{easyfsl[v].results[0]:.2f} (over {m:,} episodes)"] for v in encoders],
    ]))
    used = len(np.unique(np.concatenate([np.concatenate([e.support, e.query]) for e in scenario.stream.episodes])))
    per_episode = WAY * (SHOT + QUERY)
    bound = per_episode * n / used
    ratio = {v: easyfsl[v].median * scale / clbench.median for v in encoders}
    print("\n## easyfsl / clbench (whole run)\n")
    print(table(["equal arithmetic", "as experienced", "encode-once bound (images encoded)", "target", ""], [
        [*[marked(f"{ratio[v]:.1f}x", clbench, easyfsl[v]) for v in encoders],
         f"{bound:.1f}x ({per_episode * n:,} / {used:,})", f">= {TARGET:.0f}x (equal)", verdict(ratio["equal"] >= TARGET)],
    ]))
    print(f"\nEqual arithmetic: easyfsl given clbench's inference copy of the encoder (batch norms folded, "
          f"channels-last): what encoding each test image once alone buys; its bound is the ratio of images encoded "
          f"(easyfsl {per_episode} per episode, clbench each image the episodes use, once). As experienced: easyfsl "
          f"with the encoder as built. Accuracies: the two libraries draw different episodes, so their means agree "
          f"only within sampling error (5-way chance: 20%); the cross-check above compares the same episodes."
          + (f" easyfsl's seconds are extrapolated linearly from {m:,} of {n:,} episodes." if m < n else ""))
    print(load_note(repeats))


if __name__ == "__main__":
    main()
