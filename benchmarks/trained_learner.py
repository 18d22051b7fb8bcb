"""Trained learners: clbench vs a bare PyTorch loop vs Avalanche 0.6, throughput side by side.

finetune and replay (reservoir buffer of 500, replay batch = stream batch), online (batch 10) and
offline (batch 128, 1 epoch), on GEM's reduced ResNet-18 (nf 20) + a 100-way linear head, SGD
(lr 0.05, momentum 0.9), random crop (zero padding 4) + horizontal flip on every training image.

Data: synthetic uint8 arrays of CIFAR-100's shape (50,000 train / 10,000 test, 3 x 32 x 32, 100
classes). Training every system on all of it does not fit the time budget of a CPU, so all three
train on the same subset: two experiences (classes 0-9, then 10-19) of the first `--per-exp`
training samples of their classes (online 500, offline 1,280; `--quick`: 100 / 256). Two experiences,
because Avalanche's offline `Replay` fills its buffer only at the end of an experience.

- bare: a plain PyTorch loop doing the same steps: same model, SGD and batch sizes, uint8 images
  indexed on the device, crop + flip and normalisation done on the batch tensors in the loop; for
  replay the same reservoir buffer and the concatenated batch. The bare buffer keeps normalised,
  augmented float inputs; clbench's shared buffer keeps uint8 (4x less memory) and decodes replayed
  samples on the fly, a small cost on clbench's side of the replay ratio (figures in
  benchmarks/README.md taken before that change are marked so).
- clbench: `runner.run` (a `Scenario` built from the in-memory arrays); throughput from the run's
  `train_seconds` (the training loop, evaluation excluded).
- Avalanche: `Naive` and replay as its users run them: `nc_benchmark` over a torchvision-style
  dataset with torchvision transforms (`RandomCrop(32, padding=4)`, `RandomHorizontalFlip`,
  `ToTensor`, `Normalize`) applied per sample by the DataLoader; offline: `Naive` / `Replay(mem_size=500)`
  trained on each experience; online: the stream cut by `split_online_stream(experience_size=10)`
  and `Naive` (+ `ReplayPlugin(mem_size=500, storage_policy=ReservoirSamplingBuffer(500))`) trained on
  each mini-experience (Avalanche's online idiom). Timed: the `train` calls (no evaluation).

Throughput counts processed samples (stream + replayed): identical work for the three systems except
Avalanche's offline Replay, which replays nothing during the first experience. A second table gives
online training steps per second (one step: a stream batch of 10 + a replayed batch of 10) of the bare
ER loop and of clbench's replay with ER and ER-ACE and of adab2n (its own defaults but the buffer of
500): on a GPU such steps are launch-bound, and a step that waits for the device (a host sync) shows
there. Targets: clbench >= 0.95x bare everywhere; clbench vs Avalanche: >= 2x online on a GPU (on a CPU
compute dominates: close). No frozen encoder here, so no inference copy: the three do the same
arithmetic. Every measurement is repeated (`--repeats`, interleaved), its median reported with its
spread and the load average around it.

    python benchmarks/trained_learner.py [--quick] [--device auto|cpu|cuda] [--per-exp ONLINE OFFLINE]
                                         [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (CIFAR_MEAN, CIFAR_STD, ArrayImages, Measurement, apply_run_options, interleaved,  # noqa: E402
                     load_note, machine, marked, quiet_avalanche, run_options, synthetic_cifar100, table, timed,
                     verdict)

from clbench.device import resolve_device  # noqa: E402
from clbench.learner import Learner  # noqa: E402
from clbench.learners.adab2n import AdaB2N  # noqa: E402
from clbench.learners.finetune import Finetune  # noqa: E402
from clbench.learners.replay import Replay  # noqa: E402
from clbench.nets.reduced_resnet18 import reduced_resnet18  # noqa: E402
from clbench.protocols import split_by_class  # noqa: E402
from clbench.runner import batches, run  # noqa: E402
from clbench.scenario import Scenario, ScenarioSpec  # noqa: E402

LR, MOMENTUM, MEMORY, PADDING, N_CLASSES = 0.05, 0.9, 500, 4, 100
EVAL_PER_EXP = 100  # test samples per experience (evaluation is not timed; kept small)


def make_model(device: torch.device) -> nn.Module:
    """Reduced ResNet-18 (nf 20) + a linear head over all classes, seeded: the same for all three."""
    torch.manual_seed(0)
    backbone = reduced_resnet18(3)
    return nn.Sequential(backbone, nn.Linear(backbone.out_dim, N_CLASSES)).to(device)


# ---- the subset: two experiences of the 10-split, the first `per_exp` samples of each -----------------
def subset_scenario(dataset: Any, per_exp: int, batch: int) -> tuple[Scenario, list[np.ndarray], list[np.ndarray]]:
    train, test = dataset.partition("train"), dataset.partition("test")
    stream = split_by_class(train.labels, test.labels, tuple(range(N_CLASSES)), 10)
    experiences = tuple(dataclasses.replace(e, train_indices=e.train_indices[:per_exp],
                                            test_indices=e.test_indices[:EVAL_PER_EXP])
                        for e in stream.experiences[:2])
    stream = dataclasses.replace(stream, experiences=experiences)
    spec = ScenarioSpec(name="bench-trained", dataset=dataset.name, n_experiences=2, backbone="reduced_resnet18",
                        augment="crop-flip", crop_padding=PADDING, batch_size=batch, online=batch == 10, epochs=1,
                        mean=CIFAR_MEAN, std=CIFAR_STD, eval_batch_size=256)
    return (Scenario(spec, dataset, stream), [e.train_indices for e in experiences],
            [e.test_indices for e in experiences])


# ---- bare PyTorch ------------------------------------------------------------------------------------
def crop_flip(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding + horizontal flip of half the batch, on uint8 N x C x H x W."""
    n, c, h, w = x.shape
    dev = x.device
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=gen).to(dev)
    flip = (torch.rand(n, generator=gen) < 0.5).to(dev)
    padded = F.pad(x, (padding,) * 4)
    rows = (offsets[0, :, None] + torch.arange(h, device=dev))[:, None, :, None].expand(n, c, h, w + 2 * padding)
    cols = (offsets[1, :, None] + torch.arange(w, device=dev))[:, None, None, :].expand(n, c, h, w)
    out = padded.gather(2, rows).gather(3, cols)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def bare(images: torch.Tensor, labels: torch.Tensor, experiences: list[np.ndarray], batch: int, replay: bool,
         device: torch.device) -> tuple[float, tuple[int, int]]:
    """(seconds, (stream samples, processed samples)) of the bare loop (building the model not timed)."""
    model = make_model(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    gen = torch.Generator().manual_seed(1)
    mean = torch.tensor(CIFAR_MEAN, device=device).view(1, -1, 1, 1) * 255
    std = torch.tensor(CIFAR_STD, device=device).view(1, -1, 1, 1) * 255
    buffer_x = torch.zeros(MEMORY, 3, 32, 32, device=device)
    buffer_y = torch.zeros(MEMORY, dtype=torch.int64, device=device)
    seen = processed = 0

    def loop() -> None:
        nonlocal seen, processed
        model.train()
        for indices in experiences:
            index = torch.as_tensor(indices, device=device)
            for b in index[torch.randperm(len(index), generator=gen).to(device)].split(batch):
                x = (crop_flip(images[b], PADDING, gen).float() - mean) / std
                y = labels[b]
                xs, ys = x, y
                filled = min(seen, MEMORY)
                if replay and filled:
                    pick = torch.randperm(filled, generator=gen)[: len(b)].to(device)
                    xs, ys = torch.cat([x, buffer_x[pick]]), torch.cat([y, buffer_y[pick]])
                loss = F.cross_entropy(model(xs), ys)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                processed += len(ys)
                if replay:  # reservoir sampling (algorithm R), one batch at a time
                    n = torch.arange(seen + 1, seen + len(b) + 1)
                    j = torch.randint(0, 2**62, (len(b),), generator=gen) % n
                    slot = torch.where(n <= MEMORY, n - 1, torch.where(j < MEMORY, j, -1))
                    keep = slot >= 0
                    if keep.any():
                        slot, keep = slot[keep].to(device), keep.to(device)
                        buffer_x[slot], buffer_y[slot] = x[keep], y[keep]
                seen += len(b)

    seconds, _ = timed(loop, device)
    return seconds, (seen, processed)


# ---- clbench -------------------------------------------------------------------------------------------
def clbench(scenario: Scenario, replay: bool, device: torch.device) -> tuple[float, tuple[int, int]]:
    """(seconds of the training loop, (stream samples, processed samples)) of one clbench run."""
    learner, config = (Replay, {"buffer_size": MEMORY}) if replay else (Finetune, {})
    result = run(scenario, learner, {"lr": LR, "momentum": MOMENTUM, **config}, seed=0, device=device, progress=False)
    # processed samples: the stream batch, plus min(batch, buffered) replayed ones once the buffer holds any
    batch, seen, processed = scenario.spec.batch_size, 0, 0
    for exp in scenario.stream.experiences:
        for start in range(0, len(exp.train_indices), batch):
            n = min(batch, len(exp.train_indices) - start)
            processed += n + (min(n, seen, MEMORY) if replay else 0)
            seen += n
    assert seen == result.samples_seen
    return result.train_seconds, (seen, processed)


def steps(scenario: Scenario) -> int:
    """Training steps (learn calls) of one pass over the scenario, batched as the runner batches."""
    size = scenario.spec.batch_size
    return sum(len(batches(torch.arange(len(e.train_indices)), size)) for e in scenario.stream.experiences)


def clbench_seconds(scenario: Scenario, learner: type[Learner], config: dict[str, Any],
                    device: torch.device) -> tuple[float, int]:
    """(seconds of the training loop, training steps) of one clbench run."""
    return run(scenario, learner, config, seed=0, device=device, progress=False).train_seconds, steps(scenario)


def online_steps(scenario: Scenario, train_sets: list[np.ndarray], images: torch.Tensor, labels: torch.Tensor,
                 repeats: int, device: torch.device) -> str:
    """The table of online steps per second: the bare ER loop, clbench's ER, ER-ACE and AdaB²N."""
    bare_steps = sum(-(-len(indices) // 10) for indices in train_sets)
    systems = {
        "bare ER": lambda: (bare(images, labels, train_sets, 10, True, device)[0], bare_steps),
        "clbench replay (ER)": lambda: clbench_seconds(scenario, Replay, {"buffer_size": MEMORY, "lr": LR,
                                                                          "momentum": MOMENTUM}, device),
        "clbench replay (ER-ACE)": lambda: clbench_seconds(scenario, Replay, {"buffer_size": MEMORY, "lr": LR,
                                                                              "momentum": MOMENTUM, "loss": "er-ace"},
                                                           device),
        "clbench adab2n": lambda: clbench_seconds(scenario, AdaB2N, {"buffer_size": MEMORY}, device),
    }
    measured = {name: Measurement(f"online steps {name}") for name in systems}
    interleaved([(measured[name], fn) for name, fn in systems.items()], repeats, None)
    rows = [[name, m.median_result, m.cell(lambda s, n=m.median_result: n / s, 1)] for name, m in measured.items()]
    return table(["online, batch 10 + replay 10", "steps", "steps/s [spread]"], rows)


# ---- Avalanche -----------------------------------------------------------------------------------------
def avalanche(dataset: Any, train_sets: list[np.ndarray], test_sets: list[np.ndarray], batch: int, replay: bool,
              device: torch.device) -> tuple[float, tuple[int, int]]:
    """(seconds of the `train` calls, (stream samples, processed samples)) of one Avalanche run."""
    from avalanche.benchmarks import nc_benchmark, split_online_stream
    from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
    from avalanche.training import Naive
    from avalanche.training import Replay as AvalancheReplay
    from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin, SupervisedPlugin
    from avalanche.training.storage_policy import ReservoirSamplingBuffer
    from torchvision import transforms

    class Count(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.processed = 0

        def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
            self.processed += len(strategy.mb_y)

    train, test = dataset.partition("train"), dataset.partition("test")
    tr, te = np.concatenate(train_sets), np.concatenate(test_sets)
    first = np.unique(train.labels[train_sets[0]]).tolist()  # experience 0's classes (all 10 unless tiny)
    order = first + np.unique(train.labels[train_sets[1]]).tolist()
    train_transform = transforms.Compose([transforms.RandomCrop(32, padding=PADDING), transforms.RandomHorizontalFlip(),
                                          transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    eval_transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    benchmark = nc_benchmark(ArrayImages(train.images[tr], train.labels[tr]), ArrayImages(test.images[te], test.labels[te]),
                             n_experiences=2, task_labels=False, fixed_class_order=order,
                             per_exp_classes={0: len(first)},
                             train_transform=train_transform, eval_transform=eval_transform)
    model = make_model(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    count = Count()
    # the default evaluator (accuracy + loss, epoch / experience / stream), without printing
    evaluator = EvaluationPlugin(accuracy_metrics(epoch=True, experience=True, stream=True),
                                 loss_metrics(epoch=True, experience=True, stream=True), loggers=[])
    common = dict(model=model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), train_mb_size=batch,
                  train_epochs=1, eval_mb_size=256, device=device, evaluator=evaluator)
    online = batch == 10
    if online:
        plugins = [count] + ([ReplayPlugin(mem_size=MEMORY, storage_policy=ReservoirSamplingBuffer(MEMORY))]
                             if replay else [])
        strategy = Naive(plugins=plugins, **common)
    elif replay:
        strategy = AvalancheReplay(mem_size=MEMORY, plugins=[count], **common)
    else:
        strategy = Naive(plugins=[count], **common)

    def train() -> None:
        stream = benchmark.train_stream
        if online:
            stream = split_online_stream(stream, experience_size=batch, shuffle=True)
        for experience in stream:
            strategy.train(experience)

    seconds, _ = timed(train, device)
    return seconds, (sum(len(s) for s in train_sets), count.processed)


def warm_up(images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> None:
    """A few untimed steps of every configuration, so that no system pays for first calls (kernel
    selection, allocator growth)."""
    index = np.arange(256)
    for batch in (10, 128):
        for replay in (False, True):
            bare(images, labels, [index[: 3 * batch]], batch, replay, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller subsets (100 / 256 samples per experience)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--per-exp", type=int, nargs=2, metavar=("ONLINE", "OFFLINE"),
                        help="training samples per experience (default 500 1280; --quick 100 256)")
    run_options(parser)
    args = parser.parse_args()
    repeats = apply_run_options(args)
    device = resolve_device(args.device)
    quiet_avalanche()
    per_online, per_offline = args.per_exp or ((100, 256) if args.quick else (500, 1280))

    dataset = synthetic_cifar100()
    train = dataset.partition("train")
    images = torch.from_numpy(train.images).to(device)
    labels = torch.from_numpy(train.labels).to(device)
    print(f"# trained learners: data {len(train):,} train images 3x32x32, 100 classes; trained on 2 experiences x "
          f"{per_online} (online, batch 10) / {per_offline} (offline, batch 128) samples; reduced ResNet-18 nf 20, "
          f"crop+flip; device {device}\n# {machine()}", flush=True)
    warm_up(images, labels, device)

    rows, ratios = [], []
    for mode, batch, per_exp in (("online", 10, per_online), ("offline", 128, per_offline)):
        scenario, train_sets, test_sets = subset_scenario(dataset, per_exp, batch)
        for replay in (False, True):
            name = f"{'replay' if replay else 'finetune'} {mode} (batch {batch})"
            systems = {
                "bare": lambda: bare(images, labels, train_sets, batch, replay, device),
                "clbench": lambda: clbench(scenario, replay, device),
                "avalanche": lambda: avalanche(dataset, train_sets, test_sets, batch, replay, device),
            }
            measured = {k: Measurement(f"{name} {k}") for k in systems}
            interleaved([(measured[k], fn) for k, fn in systems.items()], repeats, None)
            counts = {k: m.median_result for k, m in measured.items()}  # (stream, processed) samples
            rate = {k: counts[k][1] / m.median for k, m in measured.items()}
            vs_bare, vs_peer = rate["clbench"] / rate["bare"], rate["clbench"] / rate["avalanche"]
            rows.append([name] + [marked(f"{counts[k][0] / m.median:.1f} / {rate[k]:.1f} [{100 * m.spread:.0f}%]", m)
                                  for k, m in measured.items()]
                        + [marked(f"{vs_bare:.2f}x", measured["clbench"], measured["bare"]), verdict(vs_bare >= 0.95),
                           marked(f"{vs_peer:.2f}x", measured["clbench"], measured["avalanche"])])
            ratios.append((name, vs_bare, vs_peer))
    online_scenario, online_sets, _ = subset_scenario(dataset, per_online, 10)
    steps_table = online_steps(online_scenario, online_sets, images, labels, repeats, device)

    print("\n## Throughput, samples/s: stream / processed (= stream + replayed) [spread]\n")
    print(table(["learner", "bare", "clbench", "Avalanche", "clbench / bare", ">= 0.95x", "clbench / Avalanche"], rows))
    gpu = device.type == "cuda"
    online_peer = min(r[2] for r in ratios if "online" in r[0])
    print(f"\nclbench / Avalanche online: {online_peer:.2f}x at worst"
          + (f" (target on a GPU >= 2x: {verdict(online_peer >= 2)})" if gpu else
             " (the >= 2x target is for a GPU; on a CPU compute dominates and they should be close)"))
    print("Ratios are of processed samples/s (the same as of stream samples/s where the work is the same).")
    print("\n## Online training steps per second (one step: 10 stream + 10 replayed samples)\n")
    print(steps_table)
    print(load_note(repeats))


if __name__ == "__main__":
    main()
