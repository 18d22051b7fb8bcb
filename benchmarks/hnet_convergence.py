"""Training steps to a fixed training accuracy: hnet's standard parametrisation against MIP (Ortiz et al. 2023
claim faster convergence for magnitude-invariant hypernetworks), for both generators; for the MLP generator,
MIP with its initialisation (`mip_init_`) and with PyTorch's default one (the LSTM generator keeps PyTorch's).

Each configuration learns the split-digits task-incremental stream cut into `--tasks` tasks (by default one
10-way task: two-class tasks, 5 x 2 as shipped, reach 95% in about 14 steps, too few to tell configurations
apart), batch 32, the scenario's normalisation, hnet defaults otherwise, task after task; before each step
the batch's accuracy within the task's classes (the argmax of `predict(x, task)`: what the runner scores) is
recorded. A task "converges" at the first step where the mean accuracy of its last `--window` batches is at
least `--accuracy`; a task that never does within `--max-steps` counts as `--max-steps`. Printed: mean over
the tasks of the steps to converge, per seed, and their mean with a Student-t 95% CI over seeds. "mlp mip,
default init" is MIP with the generator's linear layers put back to PyTorch's default initialisation after
construction (the init before `mip_init_`).

    python benchmarks/hnet_convergence.py [--seeds 0,1,2,3,4] [--tasks 1] [--accuracy 95] [--window 10]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from clbench.backbones import backbone_factory
from clbench.inputs import Inputs
from clbench.learner import Context
from clbench.learners.hnet import HNet
from clbench.runner import seed_everything
from clbench.scenario import build_scenario, load_spec
from clbench.stats import ci95

CONFIGS = {"mlp standard": {}, "mlp mip": {"parametrization": "mip"},
           "mlp mip, default init": {"parametrization": "mip"}, "rnn standard": {"generator": "rnn"},
           "rnn mip": {"generator": "rnn", "parametrization": "mip"}}
PAIRS = (("mlp mip", "mlp standard"), ("mlp mip", "mlp mip, default init"), ("rnn mip", "rnn standard"))


def steps_to_accuracy(name: str, seed: int, accuracy: float, window: int, max_steps: int, tasks: int) -> list[int]:
    """Per task, the steps until the mean training-batch accuracy of the last `window` batches is >= `accuracy`."""
    scenario = build_scenario(load_spec("split-digits-til").with_overrides({"n_experiences": tasks}))
    inputs = Inputs(scenario, "images", torch.device("cpu"), seed, None)
    seed_everything(seed)
    context = Context(torch.device("cpu"), scenario.dataset.num_classes, inputs.input_shape, seed,
                      backbone_factory("mlp", inputs.image_shape), len(scenario.stream.experiences), False)
    learner = HNet(context, **CONFIGS[name])
    if name.endswith("default init"):
        for layer in learner.hnet.generator.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
    generator, steps = torch.Generator().manual_seed(seed), []
    for exp in scenario.stream.experiences:
        index, accuracies = torch.as_tensor(exp.train_indices), []

        def batches():  # epoch after epoch, reshuffled
            while True:
                yield from index[torch.randperm(len(index), generator=generator)].split(scenario.spec.batch_size)

        for batch in batches():
            x, y = inputs.batch("train", batch), inputs.y_train[batch]
            accuracies.append(100 * float((learner.predict(x, exp.index).argmax(1) == y).float().mean()))
            learner.learn(x, y, exp.index)
            converged = len(accuracies) >= window and sum(accuracies[-window:]) / window >= accuracy
            if converged or len(accuracies) >= max_steps:
                break
        steps.append(len(accuracies))
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--accuracy", type=float, default=95.0)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--tasks", type=int, default=1, help="the 10 digits cut into this many tasks (1: one 10-way)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"steps to a mean training-batch accuracy >= {args.accuracy}% over {args.window} batches "
          f"(split-digits-til as {args.tasks} task(s), batch 32, capped at {args.max_steps}); mean over the tasks; "
          f"mean and Student-t 95% CI over seeds {args.seeds}")
    results = {}
    for name in CONFIGS:
        results[name] = [statistics.mean(steps_to_accuracy(name, s, args.accuracy, args.window, args.max_steps,
                                                           args.tasks)) for s in seeds]
        print(f"{name:22s} {statistics.mean(results[name]):7.1f} +- {ci95(results[name]):5.1f}   per seed: "
              + ", ".join(f"{v:.1f}" for v in results[name]), flush=True)
    print("paired by seed (same data order), steps:")
    for a, b in PAIRS:
        difference = [x - y for x, y in zip(results[a], results[b])]
        print(f"  {a} - {b}: {statistics.mean(difference):+.1f} +- {ci95(difference):.1f}")


if __name__ == "__main__":
    main()
