"""Training steps to a fixed training loss: hnet's standard parametrisation against MIP (Ortiz et al. 2023
claim faster convergence for magnitude-invariant hypernetworks), for both generators.

Each configuration learns the split-digits task-incremental stream (5 tasks x 2 classes, batch 32, the
scenario's normalisation, hnet defaults otherwise) task after task; before each step the batch's
training loss (the cross-entropy within the task's classes, read from `predict(x, task)`: the same
number `learn` minimises, for an MLP target) is recorded. A task "converges" at the first step where
the mean loss of its last `--window` batches is at most `--loss`; a task that never does within
`--max-steps` counts as `--max-steps`. Printed: mean over tasks of steps to converge, per seed, and
the mean and standard deviation over seeds.

    python benchmarks/hnet_convergence.py [--seeds 0,1,2] [--loss 0.1] [--window 10] [--max-steps 600]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from clbench.backbones import backbone_factory
from clbench.inputs import Inputs
from clbench.learner import Context
from clbench.learners.hnet import HNet
from clbench.runner import seed_everything
from clbench.scenario import build_scenario, load_spec

CONFIGS = {"mlp standard": {}, "mlp mip": {"parametrization": "mip"}, "rnn standard": {"generator": "rnn"},
           "rnn mip": {"generator": "rnn", "parametrization": "mip"}}


def steps_to_loss(config: dict, seed: int, loss: float, window: int, max_steps: int) -> list[int]:
    """Per task, the steps until the mean training loss of the last `window` batches is <= `loss`."""
    scenario = build_scenario(load_spec("split-digits-til"))
    inputs = Inputs(scenario, "images", torch.device("cpu"), seed, None)
    seed_everything(seed)
    context = Context(torch.device("cpu"), scenario.dataset.num_classes, inputs.input_shape, seed,
                      backbone_factory("mlp", inputs.image_shape), len(scenario.stream.experiences), False)
    learner = HNet(context, **config)
    generator, steps = torch.Generator().manual_seed(seed), []
    for exp in scenario.stream.experiences:
        index, losses = torch.as_tensor(exp.train_indices), []

        def batches():  # epoch after epoch, reshuffled
            while True:
                yield from index[torch.randperm(len(index), generator=generator)].split(scenario.spec.batch_size)

        for batch in batches():
            x, y = inputs.batch("train", batch), inputs.y_train[batch]
            losses.append(float(F.nll_loss(learner.predict(x, exp.index), y)))
            learner.learn(x, y, exp.index)
            converged = len(losses) >= window and sum(losses[-window:]) / window <= loss
            if converged or len(losses) >= max_steps:
                break
        steps.append(len(losses))
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--loss", type=float, default=0.1)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"steps to a mean training loss <= {args.loss} over {args.window} batches (split-digits-til, "
          f"batch 32, capped at {args.max_steps}); mean over the 5 tasks")
    for name, config in CONFIGS.items():
        per_seed = [statistics.mean(steps_to_loss(config, s, args.loss, args.window, args.max_steps)) for s in seeds]
        spread = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
        print(f"{name:14s} {statistics.mean(per_seed):7.1f} +- {spread:5.1f}   per seed: "
              + ", ".join(f"{v:.1f}" for v in per_seed), flush=True)


if __name__ == "__main__":
    main()
