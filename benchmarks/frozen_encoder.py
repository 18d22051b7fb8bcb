"""Frozen-encoder learners: clbench vs a bare forward pass vs Avalanche 0.6, measured side by side.

Data: synthetic uint8 arrays of CIFAR-100's shape (50,000 train / 10,000 test, 3 x 32 x 32, 100
classes; `--quick`: a tenth), cut into 10 class-incremental experiences (natural class order).
Encoder: timm's ResNet-18, random init (frozen, so the arithmetic is the same as with pretrained
weights), at 32 x 32 px. clbench feeds a timm encoder at the resolution of its pretrained config
(224 px for `resnet18`), so the script registers timm's ResNet-18 architecture under the name
`resnet18_32px` with a 32-px input config; `--encoder resnet18` measures the stock 224-px one
(49x the arithmetic: a GPU job).

1. One run, NMC: the floor is one bare forward pass of the encoder over train + test (plain PyTorch
   loop, eval mode, no_grad, the same batch size); clbench is `runner.run` with a fresh
   `FeatureCache` (cold: it includes encoding and writing the cache); the peer is Avalanche doing the
   same job as its users do: `nc_benchmark` (10 experiences, fixed class order) over a
   torchvision-style dataset, a frozen encoder + `NCMClassifier` whose class means come from the
   `CurrentDataNCMUpdate` plugin (one encoding pass over each experience; no gradient steps), and
   `eval` on the full test stream after every experience. Target: clbench <= 1.2x the floor.
2. A sweep, 5 feature-level learners x 3 seeds on the same encoder: clbench's `nmc` (l2_normalize
   false / true) and two learners defined here as plugins (`slda`: streaming LDA; `linear-probe`:
   an online softmax probe, lr 0.1 / 0.01); clbench runs 2..15 read the cached features. Avalanche:
   the same 15 jobs, each re-encoding as it normally does (NCM as above, `StreamingLDA`, `Naive`
   over a frozen encoder + linear head). Target: the sweep >= 20x faster than Avalanche's.
   Avalanche's jobs are slow here, so `--peer-jobs` says how many are really run: `configs` (the
   default: one job per learner config, seed 0, counted 3 times: a job's cost does not depend on the
   seed), `one` (the NCM job, seed 0, taken as the cost of every job) or `all` (all 15); anything but
   `all` is an extrapolation, and the table says so.

    python benchmarks/frozen_encoder.py [--quick] [--device auto|cpu|cuda] [--peer-jobs one|configs|all]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ArrayImages, machine, quiet_avalanche, synthetic_cifar100, table, timed, verdict  # noqa: E402

from clbench.device import resolve_device  # noqa: E402
from clbench.feature_cache import FeatureCache  # noqa: E402
from clbench.inference import channels_last, inference_copy  # noqa: E402
from clbench.learner import Context, Learner  # noqa: E402
from clbench.learners.nmc import NMC  # noqa: E402
from clbench.protocols import split_by_class  # noqa: E402
from clbench.runner import run  # noqa: E402
from clbench.scenario import Scenario, ScenarioSpec  # noqa: E402

N_EXPERIENCES = 10
BATCH = 256  # encoder / evaluation batch of all three, and the training batch of the feature learners
SEEDS = (0, 1, 2)


# ---- the encoder: timm's ResNet-18 with a 32-px input config -------------------------------------
default_cfgs: dict[str, Any] = {}  # read by timm's register_model from this module


def register_resnet18_32px() -> None:
    """Register `resnet18_32px`: timm's `resnet18` architecture, unchanged, whose pretrained config
    says 32 x 32 inputs (so clbench's frozen encoder does not upsample CIFAR-sized images to 224)."""
    import timm
    from timm.models import register_model
    from timm.models.resnet import BasicBlock, _cfg, _create_resnet

    if timm.is_model("resnet18_32px"):
        return
    default_cfgs["resnet18_32px"] = _cfg(input_size=(3, 32, 32), pool_size=(1, 1))

    def resnet18_32px(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _create_resnet("resnet18_32px", pretrained, **dict(block=BasicBlock, layers=(2, 2, 2, 2), **kwargs))

    resnet18_32px.__module__ = __name__
    register_model(resnet18_32px)


def make_encoder(name: str) -> tuple[nn.Module, int, tuple[float, ...], tuple[float, ...]]:
    """The random-init timm encoder (seed 0, as clbench builds it), its input size, mean and std."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, num_classes=0)
    cfg = timm.data.resolve_model_data_config(model)
    return model.eval().requires_grad_(False), int(cfg["input_size"][-1]), tuple(cfg["mean"]), tuple(cfg["std"])


# ---- the floor -------------------------------------------------------------------------------------
def bare_forward_pass(encoder_name: str, images: list[np.ndarray], device: torch.device) -> float:
    """Seconds of one forward pass over the arrays: uint8 -> float, normalise, (resize), encode, and
    keep the features in host memory; no_grad, batches of BATCH. The same arithmetic as clbench's frozen
    encoder: its `inference_copy` of the network (eval, batch norms folded, channels-last) and, on
    CUDA, bf16 autocast."""
    model, size, mean, std = make_encoder(encoder_name)
    model = inference_copy(model.to(device))
    cuda = device.type == "cuda"
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)

    def go() -> None:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            for array in images:
                data = torch.from_numpy(array)
                out = torch.empty(len(array), model.num_features)
                for i in range(0, len(array), BATCH):
                    x = (data[i : i + BATCH].to(device).float() / 255 - mean_t) / std_t
                    if x.shape[-1] != size:
                        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                    out[i : i + BATCH] = model(channels_last(x)).float().cpu()

    return timed(go, device)[0]


# ---- two more feature-level learners, as plugins (benchmark-local; not part of clbench) ------------
class StreamingLDA(Learner):
    """Streaming LDA on frozen features (Hayes & Kanan 2020): class means and one shared covariance,
    updated per batch; scores x W - c with W = ((1 - s) Sigma + s I)^-1 M^T (benchmark-local plugin)."""

    name = "slda"
    wants = "features"
    online = True

    def __init__(self, context: Context, *, shrinkage: float = 1e-4) -> None:
        super().__init__(context)
        d, c, dev = context.feature_dim, context.num_classes, context.device
        self.shrinkage = shrinkage
        self.sums = torch.zeros(c, d, dtype=torch.float64, device=dev)
        self.counts = torch.zeros(c, dtype=torch.float64, device=dev)
        self.second = torch.zeros(d, d, dtype=torch.float64, device=dev)
        self._weights: tuple[torch.Tensor, torch.Tensor] | None = None

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> None:
        x = x.double()
        self.sums.index_add_(0, y, x)
        self.counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
        self.second += x.T @ x
        self._weights = None

    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        if self._weights is None:
            seen = self.counts > 0
            means = self.sums / self.counts.clamp(min=1).unsqueeze(1)
            within = self.second - self.sums[seen].T @ means[seen]  # pooled within-class scatter
            sigma = within / self.counts.sum().clamp(min=1)
            eye = torch.eye(len(sigma), dtype=sigma.dtype, device=sigma.device)
            w = torch.linalg.pinv((1 - self.shrinkage) * sigma + self.shrinkage * eye) @ means.T
            self._weights = (w.float(), (0.5 * (means.T * w).sum(0)).float())
        w, c = self._weights
        scores = x.float() @ w - c
        return scores.masked_fill(self.counts == 0, torch.finfo(scores.dtype).min)

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self.sums, "counts": self.counts, "second": self.second}


class LinearProbe(Learner):
    """An online softmax probe on frozen features: a linear layer trained by SGD (momentum 0.9) on
    each batch (benchmark-local plugin)."""

    name = "linear-probe"
    wants = "features"
    online = True

    def __init__(self, context: Context, *, lr: float = 0.1) -> None:
        super().__init__(context)
        self.head = nn.Linear(context.feature_dim, context.num_classes).to(context.device)
        self.optimizer = torch.optim.SGD(self.head.parameters(), lr=lr, momentum=0.9)

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> None:
        loss = F.cross_entropy(self.head(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def predict(self, x: torch.Tensor, task: int | None) -> torch.Tensor:
        return self.head(x)


# (label, clbench learner, its config, Avalanche kind, Avalanche settings)
SWEEP: list[tuple[str, type[Learner], dict[str, Any], str, dict[str, Any]]] = [
    ("nmc", NMC, {}, "ncm", {"normalize": False}),
    ("nmc l2_normalize", NMC, {"l2_normalize": True}, "ncm", {"normalize": True}),
    ("slda shrinkage 1e-4", StreamingLDA, {"shrinkage": 1e-4}, "slda", {"shrinkage": 1e-4}),
    ("linear-probe lr 0.1", LinearProbe, {"lr": 0.1}, "linear", {"lr": 0.1}),
    ("linear-probe lr 0.01", LinearProbe, {"lr": 0.01}, "linear", {"lr": 0.01}),
]


# ---- the peer: Avalanche 0.6 -----------------------------------------------------------------------
class Frozen(nn.Module):
    """A frozen feature extractor as an Avalanche user wraps one: always in eval mode, no autograd."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "Frozen":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x)


def avalanche_benchmark(dataset: Any, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """Avalanche's classic benchmark over torchvision-style datasets: 10 experiences, classes in order."""
    from avalanche.benchmarks import nc_benchmark
    from torchvision import transforms

    steps = ([transforms.Resize(size)] if size != 32 else []) + [transforms.ToTensor(), transforms.Normalize(mean, std)]
    transform = transforms.Compose(steps)
    train, test = dataset.partition("train"), dataset.partition("test")
    return nc_benchmark(ArrayImages(train.images, train.labels), ArrayImages(test.images, test.labels),
                        n_experiences=N_EXPERIENCES, task_labels=False, fixed_class_order=list(range(100)),
                        train_transform=transform, eval_transform=transform)


def avalanche_job(benchmark: Any, encoder_name: str, kind: str, settings: dict[str, Any], seed: int,
                  device: torch.device) -> tuple[float, float]:
    """(seconds, final stream accuracy %) of one Avalanche job: train on each experience, then `eval`
    on the full test stream, as Avalanche users run a benchmark."""
    from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
    from avalanche.models import NCMClassifier, TrainEvalModel
    from avalanche.training import Naive
    from avalanche.training import StreamingLDA as AvalancheSLDA
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.plugins.update_ncm import CurrentDataNCMUpdate
    from avalanche.training.templates import SupervisedTemplate

    class FrozenNCM(SupervisedTemplate):
        """Nearest class mean on a frozen encoder: no gradient steps; the `CurrentDataNCMUpdate`
        plugin computes the experience's class means (one encoding pass) after each experience."""

        def training_epoch(self, **kwargs: Any) -> None:
            pass

        def make_optimizer(self, **kwargs: Any) -> None:
            pass

    def job() -> float:
        torch.manual_seed(seed)
        encoder = Frozen(make_encoder(encoder_name)[0])
        dim = encoder.model.num_features
        # the default evaluator (accuracy + loss, epoch / experience / stream), without printing
        evaluator = EvaluationPlugin(accuracy_metrics(epoch=True, experience=True, stream=True),
                                     loss_metrics(epoch=True, experience=True, stream=True), loggers=[])
        common = dict(criterion=nn.CrossEntropyLoss(), train_mb_size=BATCH, eval_mb_size=BATCH, device=device,
                      evaluator=evaluator)
        if kind == "ncm":
            model = TrainEvalModel(encoder, nn.Identity(), NCMClassifier(normalize=settings["normalize"]))
            strategy = FrozenNCM(model=model, optimizer=None, train_epochs=1, plugins=[CurrentDataNCMUpdate()],
                                 **common)
        elif kind == "slda":
            strategy = AvalancheSLDA(slda_model=encoder, input_size=dim, num_classes=100,
                                     shrinkage_param=settings["shrinkage"], **common)
        else:
            model = nn.Sequential(encoder, nn.Linear(dim, 100))
            optimizer = torch.optim.SGD(model[1].parameters(), lr=settings["lr"], momentum=0.9)
            strategy = Naive(model=model, optimizer=optimizer, train_epochs=1, **common)
        metrics: dict[str, Any] = {}
        for experience in benchmark.train_stream:
            strategy.train(experience)
            metrics = strategy.eval(benchmark.test_stream)
        return next(100.0 * v for k, v in metrics.items() if k.startswith("Top1_Acc_Stream/eval_phase/test_stream"))

    return timed(job, device)


# ---- main --------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the data (5,000 train / 1,000 test)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--encoder", default="resnet18_32px",
                        help="timm model (default: timm's resnet18 at 32 px, registered by this script)")
    parser.add_argument("--sizes", type=int, nargs=2, metavar=("TRAIN", "TEST"), help="other data sizes")
    parser.add_argument("--peer-jobs", choices=("one", "configs", "all"), default=None,
                        help="Avalanche sweep jobs really run (default: configs)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="alternating repeats of the floor and the cold clbench run; the fastest counts (default 2)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    peer_jobs = args.peer_jobs or "configs"
    device = resolve_device(args.device)
    quiet_avalanche()
    register_resnet18_32px()

    n_train, n_test = args.sizes or ((5_000, 1_000) if args.quick else (50_000, 10_000))
    dataset = synthetic_cifar100(n_train, n_test)
    train, test = dataset.partition("train"), dataset.partition("test")
    stream = split_by_class(train.labels, test.labels, tuple(range(100)), N_EXPERIENCES)
    spec = ScenarioSpec(name="bench-frozen", dataset=dataset.name, n_experiences=N_EXPERIENCES, encoder=args.encoder,
                        batch_size=BATCH, eval_batch_size=BATCH, epochs=1)
    scenario = Scenario(spec, dataset, stream)
    _, size, mean, std = make_encoder(args.encoder)
    print(f"# frozen encoder: {n_train:,} train + {n_test:,} test images 3x32x32, 100 classes, "
          f"{N_EXPERIENCES} experiences; encoder {args.encoder} (timm, random init) at {size} px; batch {BATCH}; "
          f"device {device}\n# {machine()}", flush=True)

    # the one-run comparison: floor and cold clbench run alternate `--repeats` times; the fastest counts
    floors, colds = [], []
    folders = [tempfile.TemporaryDirectory(prefix="clbench-bench-cache-") for _ in range(args.repeats)]
    for folder in folders:
        floors.append(bare_forward_pass(args.encoder, [train.images, test.images], device))
        seconds, result = timed(lambda: run(scenario, NMC, {}, seed=0, device=device, progress=False,
                                            feature_cache=FeatureCache(Path(folder.name))), device)
        colds.append((seconds, result))
        print(f"floor (bare forward pass): {floors[-1]:.1f} s; clbench cold run (nmc): {seconds:.1f} s "
              f"(features {result.feature_seconds:.1f} s, train {result.train_seconds:.2f} s, "
              f"eval {result.eval_seconds:.2f} s, cache {result.feature_cache})", flush=True)
    floor = min(floors)
    cold, cold_result = min(colds, key=lambda c: c[0])

    # the sweep: the cold run above, then 14 runs reading the features it cached
    cache = FeatureCache(Path(folders[-1].name))
    clbench_times: dict[str, list[float]] = {label: [] for label, *_ in SWEEP}
    clbench_acc: dict[str, list[float]] = {label: [] for label, *_ in SWEEP}
    statuses = ["miss"]
    clbench_times["nmc"].append(cold)
    clbench_acc["nmc"].append(cold_result.accuracy_curve[-1])
    for seed in SEEDS:
        for label, learner, config, *_ in SWEEP:
            if (label, seed) == ("nmc", 0):
                continue
            seconds, result = timed(lambda: run(scenario, learner, config, seed=seed, device=device,
                                                progress=False, feature_cache=cache), device)
            clbench_times[label].append(seconds)
            clbench_acc[label].append(result.accuracy_curve[-1])
            statuses.append(result.feature_cache)
    for folder in folders:
        folder.cleanup()
    sweep_clbench = sum(sum(v) for v in clbench_times.values())
    print(f"clbench sweep: {sweep_clbench:.1f} s, cache {statuses.count('miss')} miss / {statuses.count('hit')} hit",
          flush=True)

    build_seconds, benchmark = timed(lambda: avalanche_benchmark(dataset, size, mean, std), device)
    peer_times: dict[str, list[float]] = {label: [] for label, *_ in SWEEP}
    peer_acc: dict[str, list[float]] = {label: [] for label, *_ in SWEEP}
    runs = [(label, kind, settings, seed) for seed in SEEDS for label, _, _, kind, settings in SWEEP]
    if peer_jobs == "one":  # the NCM job of seed 0 stands for every job
        runs = runs[:1]
    elif peer_jobs == "configs":
        runs = runs[: len(SWEEP)]
    for label, kind, settings, seed in runs:
        seconds, acc = avalanche_job(benchmark, args.encoder, kind, settings, seed, device)
        peer_times[label].append(seconds)
        peer_acc[label].append(acc)
        print(f"avalanche {label} seed {seed}: {seconds:.1f} s", flush=True)
    one_job = peer_times["nmc"][0]

    def per_job(label: str) -> float:
        return float(np.mean(peer_times[label])) if peer_times[label] else one_job

    sweep_peer = sum(per_job(label) * len(SEEDS) for label, *_ in SWEEP)
    measured = sum(len(v) for v in peer_times.values())

    # ---- tables ----
    print("\n## One run: NMC, 10 experiences, evaluated after each\n")
    print(table(["", "seconds", "vs floor", "target", ""], [
        [f"floor: bare forward pass over {n_train + n_test:,} images", f"{floor:.1f}", "1.00x", "", ""],
        ["clbench: runner.run, cold feature cache", f"{cold:.1f}", f"{cold / floor:.2f}x", "<= 1.2x",
         verdict(cold / floor <= 1.2)],
        ["Avalanche: NCM job (CurrentDataNCMUpdate, eval after each exp.)", f"{one_job:.1f}",
         f"{one_job / floor:.2f}x", "", ""],
    ]))
    print(f"\nclbench is {one_job / cold:.1f}x faster than Avalanche on one run. Final accuracy: "
          f"clbench nmc {cold_result.accuracy_curve[-1]:.1f} %, Avalanche NCM {peer_acc['nmc'][0]:.1f} %. "
          f"(Avalanche's nc_benchmark, built once and not counted: {build_seconds:.1f} s)")

    print(f"\n## Sweep: {len(SWEEP)} feature-level learners x {len(SEEDS)} seeds\n")
    rows = []
    for label, *_ in SWEEP:
        peer = (f"{per_job(label):.1f}" + ("" if peer_times[label] else " (est.)"))
        acc = f"{np.mean(peer_acc[label]):.1f}" if peer_acc[label] else "-"
        rows.append([label, f"{np.mean(clbench_times[label]):.2f}", f"{np.mean(clbench_acc[label]):.1f}", peer, acc])
    print(table(["learner", "clbench s/run (mean of 3)", "clbench acc %", "Avalanche s/job", "Avalanche acc %"], rows))
    note = "all measured" if measured == len(SEEDS) * len(SWEEP) else \
        f"{measured} measured, {len(SEEDS) * len(SWEEP) - measured} extrapolated"
    print()
    # whatever the learner, an Avalanche job encodes every training image once and the whole test set
    # after each experience: at the floor's speed, that alone takes this long
    bound = len(SEEDS) * len(SWEEP) * floor * (n_train + N_EXPERIENCES * n_test) / (n_train + n_test)
    print(table(["", "seconds", "ratio", "target", ""], [
        [f"clbench: 15 runs (1 cold, then {statuses.count('hit')} cache hits)", f"{sweep_clbench:.1f}", "1.00x", "", ""],
        [f"Avalanche: 15 jobs ({note})", f"{sweep_peer:.1f}", f"{sweep_peer / sweep_clbench:.1f}x slower",
         ">= 20x", verdict(sweep_peer / sweep_clbench >= 20)],
        ["Avalanche lower bound: its 15 jobs' encoder passes at the floor's speed", f"{bound:.1f}",
         f"{bound / sweep_clbench:.1f}x slower", "(a bound)", ""],
    ]))
    print(f"\n# load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(at the start: {load_start}); --peer-jobs {peer_jobs}, --repeats {args.repeats}")


if __name__ == "__main__":
    main()
