"""Frozen-encoder learners: clbench vs a bare forward pass vs Avalanche 0.6, measured side by side.

Data: synthetic uint8 arrays of CIFAR-100's shape (50,000 train / 10,000 test, 3 x 32 x 32, 100
classes; `--quick`: a tenth), cut into 10 class-incremental experiences (natural class order).
Encoder: timm's ResNet-18, random init (frozen, so the arithmetic is the same as with pretrained
weights), at 32 x 32 px. clbench feeds a timm encoder at the resolution of its pretrained config
(224 px for `resnet18`), so the script registers timm's ResNet-18 architecture under the name
`resnet18_32px` with a 32-px input config; `--encoder resnet18` measures the stock 224-px one
(49x the arithmetic: a GPU job).

clbench runs a frozen encoder as its `inference_copy` (batch norms folded, channels-last; bf16 on
CUDA). Every other system runs twice: with that same copy (equal arithmetic: what encode-once
alone buys) and with the encoder as built (what a user of that library or of a plain loop gets).
Targets are judged on equal arithmetic.

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

3. `--cache-check` (no peer, no sweep): one NMC run against the floor in three ways: cold feature
   cache (fresh folder), warm (the cache the cold run wrote) and none (features in memory), plus end
   to end (the dataset loaded and the scenario built, then the cold run). With `--pickle` the data is
   first written in CIFAR-100's official python-pickle format into a temp data root and read back
   through clbench's own loader (`split-cifar100`, natural class order); the floor is then a bare
   bf16 forward pass on CUDA (fp32 elsewhere, as clbench's precision "auto"). The GPU check runs
   `--cache-check --pickle --encoder vit_base_patch16_224` (ViT-B/16, random init, at 224 px).

Every measurement is repeated (`--repeats`, interleaved), its median reported with its spread and the
load average around it (see `_common.Measurement`).

    python benchmarks/frozen_encoder.py [--quick] [--device auto|cpu|cuda] [--peer-jobs one|configs|all]
                                        [--repeats N] [--threads N] [--sizes TRAIN TEST]
    python benchmarks/frozen_encoder.py --cache-check [--pickle] [--encoder NAME] [--quick | --sizes TRAIN TEST]
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (ArrayImages, AsClbenchRunsIt, Measurement, apply_run_options, interleaved, load_note,  # noqa: E402
                     machine, marked, quiet_avalanche, run_options, synthetic_cifar100, table, timed, verdict)

from clbench.device import resolve_device  # noqa: E402
from clbench.feature_cache import FeatureCache  # noqa: E402
from clbench.learner import Context, Learner  # noqa: E402
from clbench.learners.nmc import NMC  # noqa: E402
from clbench.protocols import split_by_class  # noqa: E402
from clbench.runner import run  # noqa: E402
from clbench.scenario import Scenario, ScenarioSpec, build_scenario, load_spec  # noqa: E402

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
ENCODERS = {"equal": "clbench's inference copy", "built": "the encoder as built"}


def encoder_as(encoder_name: str, variant: str) -> tuple[nn.Module, int]:
    """The frozen encoder, as clbench runs it ("equal") or as built ("built"), and its output size."""
    model = make_encoder(encoder_name)[0]
    return (AsClbenchRunsIt(model, bf16=True) if variant == "equal" else model), int(model.num_features)


def bare_forward_pass(model: nn.Module, dim: int, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                      images: list[np.ndarray], device: torch.device) -> None:
    """One forward pass over the arrays: uint8 -> float, normalise, (resize), encode, and keep the
    features in host memory; no_grad, batches of BATCH."""
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    with torch.no_grad():
        for array in images:
            data = torch.from_numpy(array)
            out = torch.empty(len(array), dim)
            for i in range(0, len(array), BATCH):
                x = (data[i : i + BATCH].to(device).float() / 255 - mean_t) / std_t
                if x.shape[-1] != size:
                    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                out[i : i + BATCH] = model(x).float().cpu()


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


def avalanche_job(benchmark: Any, encoder_name: str, variant: str, kind: str, settings: dict[str, Any], seed: int,
                  device: torch.device) -> float:
    """Final stream accuracy % of one Avalanche job (building its encoder `variant` included): train on
    each experience, then `eval` on the full test stream, as Avalanche users run a benchmark."""
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

    torch.manual_seed(seed)
    net, dim = encoder_as(encoder_name, variant)
    encoder = Frozen(net)
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


# ---- main --------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the data (5,000 train / 1,000 test)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--encoder", default="resnet18_32px",
                        help="timm model (default: timm's resnet18 at 32 px, registered by this script)")
    parser.add_argument("--sizes", type=int, nargs=2, metavar=("TRAIN", "TEST"), help="other data sizes")
    parser.add_argument("--peer-jobs", choices=("one", "configs", "all"), default="configs",
                        help="Avalanche sweep jobs really run, per encoder (default: configs)")
    parser.add_argument("--cache-check", action="store_true",
                        help="only NMC vs the floor: cold / warm / no feature cache and end to end (no peer, no sweep)")
    parser.add_argument("--pickle", action="store_true",
                        help="with --cache-check: write the data in CIFAR-100's python-pickle format and load it "
                             "through clbench's loader")
    run_options(parser)
    args = parser.parse_args()
    repeats = apply_run_options(args)
    device = resolve_device(args.device)
    register_resnet18_32px()

    n_train, n_test = args.sizes or ((5_000, 1_000) if args.quick else (50_000, 10_000))
    dataset = synthetic_cifar100(n_train, n_test)
    if args.cache_check:
        cache_check(args, dataset, device, repeats)
        return
    quiet_avalanche()
    train, test = dataset.partition("train"), dataset.partition("test")
    stream = split_by_class(train.labels, test.labels, tuple(range(100)), N_EXPERIENCES)
    spec = ScenarioSpec(name="bench-frozen", dataset=dataset.name, n_experiences=N_EXPERIENCES, encoder=args.encoder,
                        batch_size=BATCH, eval_batch_size=BATCH, epochs=1)
    scenario = Scenario(spec, dataset, stream)
    _, size, mean, std = make_encoder(args.encoder)
    print(f"# frozen encoder: {n_train:,} train + {n_test:,} test images 3x32x32, 100 classes, "
          f"{N_EXPERIENCES} experiences; encoder {args.encoder} (timm, random init) at {size} px; batch {BATCH}; "
          f"device {device}\n# {machine()}", flush=True)

    # the floor, both ways; its models are built outside the timing
    floors = {v: Measurement(f"floor, {ENCODERS[v]}") for v in ENCODERS}
    floor_jobs = []
    for variant, floor in floors.items():
        model, dim = encoder_as(args.encoder, variant)
        floor_jobs.append((floor, lambda model=model, dim=dim: bare_forward_pass(
            model, dim, size, mean, std, [train.images, test.images], device)))

    # clbench: a cold run into a fresh cache, then the 14 other sweep runs reading that cache
    folders: list[tempfile.TemporaryDirectory] = []

    def cold_run() -> Any:
        folders.append(tempfile.TemporaryDirectory(prefix="clbench-bench-cache-"))
        return run(scenario, NMC, {}, seed=0, device=device, progress=False,
                   feature_cache=FeatureCache(Path(folders[-1].name)))

    def cached_runs() -> dict[str, list[tuple[float, float, str]]]:
        """(seconds, final accuracy %, cache status) of each sweep run but the cold one, by learner."""
        cache, out = FeatureCache(Path(folders[-1].name)), {label: [] for label, *_ in SWEEP}
        for seed in SEEDS:
            for label, learner, config, *_ in SWEEP:
                if (label, seed) != ("nmc", 0):
                    seconds, result = timed(lambda: run(scenario, learner, config, seed=seed, device=device,
                                                        progress=False, feature_cache=cache), device)
                    out[label].append((seconds, result.accuracy_curve[-1], result.feature_cache))
        return out

    cold, cached = Measurement("clbench cold run (nmc)"), Measurement("clbench 14 cached sweep runs")

    # Avalanche: the jobs of `--peer-jobs`, each with both encoders
    build_seconds, benchmark = timed(lambda: avalanche_benchmark(dataset, size, mean, std), device)
    runs = [(label, kind, settings, seed) for seed in SEEDS for label, _, _, kind, settings in SWEEP]
    runs = runs[: {"one": 1, "configs": len(SWEEP), "all": len(runs)}[args.peer_jobs]]
    peer = {(label, seed, v): Measurement(f"Avalanche {label} seed {seed}, {ENCODERS[v]}")
            for label, _, _, seed in runs for v in ENCODERS}
    peer_jobs = [(peer[label, seed, v], lambda k=kind, s=settings, seed=seed, v=v: avalanche_job(
        benchmark, args.encoder, v, k, s, seed, device)) for label, kind, settings, seed in runs for v in ENCODERS]
    try:
        interleaved(floor_jobs + [(cold, cold_run), (cached, cached_runs)] + peer_jobs, repeats, device)
    finally:
        for folder in folders:
            folder.cleanup()
    statuses = [status for runs_ in cached.results for rows in runs_.values() for *_, status in rows]
    assert all(r.feature_cache == "miss" for r in cold.results) and set(statuses) == {"hit"}, "cache not as planned"
    report(args, n_train, n_test, floors, cold, cached, peer, repeats, build_seconds)


def write_cifar100_pickles(dataset: Any, root: Path) -> None:
    """The arrays as CIFAR-100's official "python version" files: `<root>/cifar-100-python/{train,test,meta}`,
    pickled dicts with bytes keys (`data`: N x 3072 uint8 rows of R, G, B planes; `fine_labels`)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test"):
        part = dataset.partition(name)
        entry = {b"batch_label": name.encode(), b"data": part.images.reshape(len(part), -1),
                 b"fine_labels": part.labels.tolist(), b"coarse_labels": (part.labels // 5).tolist(),
                 b"filenames": [f"{i}.png".encode() for i in range(len(part))]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"class{c:02d}" for c in range(100)],
                     b"coarse_label_names": [f"super{c:02d}" for c in range(20)]}, f, protocol=2)


def cache_check(args: argparse.Namespace, dataset: Any, device: torch.device, repeats: int) -> None:
    """NMC, one run, against the floor (a bare forward pass of clbench's inference copy, bf16 on CUDA):
    cold / warm / no feature cache, and end to end (load + build + cold run). Prints one table."""
    train, test = dataset.partition("train"), dataset.partition("test")
    folders: list[tempfile.TemporaryDirectory] = []

    def fresh() -> Path:
        folders.append(tempfile.TemporaryDirectory(prefix="clbench-bench-"))
        return Path(folders[-1].name)

    overrides = {"encoder": args.encoder, "class_order": "natural", "batch_size": BATCH, "eval_batch_size": BATCH}
    if args.pickle:
        root = fresh()
        write_cifar100_pickles(dataset, root)
        build = lambda: build_scenario(load_spec("split-cifar100").with_overrides(overrides), root)  # noqa: E731
    else:
        stream = split_by_class(train.labels, test.labels, tuple(range(100)), N_EXPERIENCES)
        spec = ScenarioSpec(name="bench-frozen", dataset=dataset.name, n_experiences=N_EXPERIENCES, **overrides)
        build = lambda: Scenario(spec, dataset, stream)  # noqa: E731
    scenario = build()
    built, size, mean, std = make_encoder(args.encoder)
    source = "CIFAR-100 pickle files, clbench loader" if args.pickle else "in memory"
    print(f"# cache check: {len(train):,} + {len(test):,} images 3x32x32 ({source}); "
          f"encoder {args.encoder} (timm, random init) at {size} px; batch {BATCH}; device {device}\n# {machine()}",
          flush=True)
    model, dim = AsClbenchRunsIt(built, bf16=True), int(built.num_features)  # encoder_as's "equal", built once
    cache: list[Path] = []

    def nmc(feature_cache: FeatureCache | None, on: Scenario | None = None) -> Any:
        return run(on or scenario, NMC, {}, seed=0, device=device, progress=False, feature_cache=feature_cache)

    def cold() -> Any:
        cache.append(fresh())
        return nmc(FeatureCache(cache[-1]))

    floor, measured = Measurement("floor: bare forward pass"), {
        "cold": Measurement("clbench, cold feature cache"), "warm": Measurement("clbench, warm feature cache"),
        "off": Measurement("clbench, no feature cache"), "end": Measurement("clbench end to end: load + cold run")}
    try:
        images = [train.images, test.images]
        interleaved([(floor, lambda: bare_forward_pass(model, dim, size, mean, std, images, device)),
                     (measured["cold"], cold), (measured["warm"], lambda: nmc(FeatureCache(cache[-1]))),
                     (measured["off"], lambda: nmc(None)),
                     (measured["end"], lambda: nmc(FeatureCache(fresh()), build()))], repeats, device)
    finally:
        for folder in folders:
            folder.cleanup()
    statuses = {k: {r.feature_cache for r in m.results} for k, m in measured.items()}
    assert statuses == {"cold": {"miss"}, "warm": {"hit"}, "off": {"off"}, "end": {"miss"}}, statuses
    result = measured["cold"].median_result
    full_gpu = device.type == "cuda" and len(train) + len(test) == 60_000  # where the end-to-end target applies
    targets = {"cold": ("<= 1.2x the floor", verdict(measured["cold"].median <= 1.2 * floor.median)),
               "end": ("< 15 s (GPU, full size)", verdict(measured["end"].median < 15) if full_gpu else "n/a here")}
    print(table(["one run: NMC, 10 experiences", "seconds, median [spread]", "vs floor", "final accuracy %",
                 "precision", "target", ""],
                [[f"floor, bare pass over {len(train) + len(test):,} images", floor.cell(), "1.00x", "", "", "", ""]]
                + [[m.label, m.cell(), marked(f"{m.median / floor.median:.2f}x", m, floor),
                    f"{m.median_result.accuracy_curve[-1]:.1f}", m.median_result.precision,
                    *(targets.get(k, ("", "")))]
                   for k, m in measured.items()]))
    print(f"\nclbench's cold run (median repeat): features {result.feature_seconds:.2f} s, train "
          f"{result.train_seconds:.2f} s, eval {result.eval_seconds:.2f} s.")
    ratio = {k: marked(f"{m.median / floor.median:.2f}x", m, floor) for k, m in measured.items()}
    print(f"summary: cold / floor {ratio['cold']} (target <= 1.2x: {targets['cold'][1]}), warm / floor "
          f"{ratio['warm']}, no cache / floor {ratio['off']}; end to end {measured['end'].median:.2f} s (target "
          f"< 15 s on a GPU at full size: {targets['end'][1]}); floor {floor.median:.2f} s\n{load_note(repeats)}")


def report(args: argparse.Namespace, n_train: int, n_test: int, floors: dict[str, Measurement], cold: Measurement,
           cached: Measurement, peer: dict[tuple[str, int, str], Measurement], repeats: int,
           build_seconds: float) -> None:
    """Print the tables: equal-arithmetic and as-experienced ratios side by side, targets on the former."""
    equal, built = floors["equal"], floors["built"]
    cold_result = cold.median_result
    ncm = {v: peer["nmc", 0, v] for v in ENCODERS}
    print("\n## One run: NMC, 10 experiences, evaluated after each\n")
    print(table(["", "seconds, median [spread]", "vs floor, equal arithmetic", "vs floor as built", "target", ""], [
        [f"floor, {ENCODERS['equal']}: bare pass over {n_train + n_test:,} images", equal.cell(), "1.00x",
         marked(f"{equal.median / built.median:.2f}x", equal, built), "", ""],
        [f"floor, {ENCODERS['built']}", built.cell(), marked(f"{built.median / equal.median:.2f}x", equal, built),
         "1.00x", "", ""],
        ["clbench: runner.run, cold feature cache", cold.cell(), marked(f"{cold.median / equal.median:.2f}x", cold, equal),
         marked(f"{cold.median / built.median:.2f}x", cold, built), "<= 1.2x (equal)",
         verdict(cold.median / equal.median <= 1.2)],
        *[[f"Avalanche NCM job, {ENCODERS[v]}", ncm[v].cell(), marked(f"{ncm[v].median / equal.median:.2f}x", ncm[v], equal),
           marked(f"{ncm[v].median / built.median:.2f}x", ncm[v], built), "", ""] for v in ENCODERS],
    ]))
    print(f"\nclbench's cold run (median repeat): features {cold_result.feature_seconds:.2f} s, train "
          f"{cold_result.train_seconds:.2f} s, eval {cold_result.eval_seconds:.2f} s. Final accuracy: clbench nmc "
          f"{cold_result.accuracy_curve[-1]:.1f} %, Avalanche NCM {ncm['equal'].results[0]:.1f} % (same encoder) / "
          f"{ncm['built'].results[0]:.1f} % (as built). Avalanche's nc_benchmark, built once, not counted: "
          f"{build_seconds:.1f} s.")

    labels = [label for label, *_ in SWEEP]
    clbench_runs = {label: list(rows) for label, rows in cached.median_result.items()}
    clbench_runs["nmc"].insert(0, (cold.median, cold_result.accuracy_curve[-1], "miss"))
    measured = {v: {label: [m for (lab, _, var), m in peer.items() if (lab, var) == (label, v)] for label in labels}
                for v in ENCODERS}

    def per_job(label: str, v: str) -> float:  # a config never run costs what the NCM job of seed 0 cost
        return float(np.mean([m.median for m in measured[v][label]])) if measured[v][label] else ncm[v].median

    print(f"\n## Sweep: {len(SWEEP)} feature-level learners x {len(SEEDS)} seeds\n")
    rows = []
    for label in labels:
        runs = clbench_runs[label]
        accs = [f"{np.mean([m.results[0] for m in measured[v][label]]):.1f}" if measured[v][label] else "-"
                for v in ENCODERS]
        rows.append([label, f"{np.mean([r[0] for r in runs]):.2f}", f"{np.mean([r[1] for r in runs]):.1f}",
                     *[f"{per_job(label, v):.1f}" + ("" if measured[v][label] else " (est.)") for v in ENCODERS],
                     " / ".join(accs)])
    print(table(["learner", "clbench s/run", "clbench acc %", "Avalanche s/job, equal arithmetic",
                 "Avalanche s/job, as built", "Avalanche acc % (equal / as built)"], rows))

    n_jobs = len(SEEDS) * len(SWEEP)
    sweep_clbench = cold.median + cached.median
    sweep_peer = {v: sum(per_job(label, v) * len(SEEDS) for label in labels) for v in ENCODERS}
    ran = len(peer) // len(ENCODERS)
    note = "all measured" if ran == n_jobs else f"{ran} measured, {n_jobs - ran} extrapolated"
    per_run, per_avalanche_job = n_train + n_test, n_train + N_EXPERIENCES * n_test
    one_bound, sweep_bound = per_avalanche_job / per_run, n_jobs * per_avalanche_job / per_run
    all_peers = list(peer.values())
    ratio = {v: sweep_peer[v] / sweep_clbench for v in ENCODERS}
    print(f"\n## Avalanche / clbench (Avalanche's 15 jobs: {note}; clbench: 1 cold run + 14 cached)\n")
    print(table(["", "equal arithmetic", "as experienced", "encode-once bound (images encoded)", "target", ""], [
        ["one run: NMC job vs cold run", *[marked(f"{ncm[v].median / cold.median:.2f}x", ncm[v], cold) for v in ENCODERS],
         f"{one_bound:.1f}x ({per_avalanche_job:,} / {per_run:,})", "", ""],
        [f"sweep: {sweep_peer['equal']:,.1f} / {sweep_peer['built']:,.1f} s vs {sweep_clbench:.1f} s",
         *[marked(f"{ratio[v]:.1f}x", cold, cached, *all_peers) for v in ENCODERS],
         f"{sweep_bound:.1f}x ({n_jobs} x {per_avalanche_job:,} / {per_run:,})", ">= 20x (equal)",
         verdict(ratio["equal"] >= 20)],
    ]))
    print("\nEqual arithmetic: Avalanche given clbench's inference copy of the encoder (what encode-once alone "
          "buys; the bound is the ratio of images encoded). As experienced: Avalanche with the encoder as built.")
    print(f"# --peer-jobs {args.peer_jobs}\n{load_note(repeats)}")


if __name__ == "__main__":
    main()
