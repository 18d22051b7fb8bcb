"""Avalanche interoperability, both ways (clbench.interop.avalanche): tiny split-digits, 2 experiences, CPU."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("avalanche", reason="avalanche-lib is in the dev extra; this is only a fallback")

from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark  # noqa: E402
from avalanche.evaluation.metrics import Forgetting, accuracy_metrics, forgetting_metrics  # noqa: E402
from avalanche.training import Naive  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402
from torch import nn  # noqa: E402

from clbench import leaderboard, metrics, runner  # noqa: E402
from clbench.backbones import backbone_factory  # noqa: E402
from clbench.cli import main  # noqa: E402
from clbench.datasets import load_dataset  # noqa: E402
from clbench.errors import ClbenchError  # noqa: E402
from clbench.interop.avalanche import (LearnerStrategy, avalanche_context, avalanche_forgetting,  # noqa: E402
                                       scenario_from_benchmark)
from clbench.learner import Context, get_learner  # noqa: E402
from clbench.testing import check_learner  # noqa: E402

CLASSES = [0, 1, 2, 3]


def _tensors(part: str) -> torch.utils.data.TensorDataset:
    """Digits 0-3 of clbench's digits dataset as floats in [0, 1], with the `targets` Avalanche reads."""
    arrays = load_dataset("digits").partition(part)
    keep = np.isin(arrays.labels, CLASSES)
    data = torch.utils.data.TensorDataset(torch.as_tensor(arrays.images[keep]).float() / 255,
                                          torch.as_tensor(arrays.labels[keep]))
    data.targets = data.tensors[1]
    return data


@pytest.fixture(scope="module")
def benchmark():
    """Split digits 0-3 into two class-incremental experiences, built by Avalanche's own generator."""
    return nc_benchmark(_tensors("train"), _tensors("test"), n_experiences=2, task_labels=False, shuffle=False,
                        fixed_class_order=CLASSES)


def _accuracies(results: dict, n: int) -> list[float]:
    """Avalanche's per-experience test accuracies (fractions) of one evaluation, as percentages."""
    return [100 * results[f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"] for j in range(n)]


# ---- Avalanche -> clbench: strategies as learners ---------------------------------------------------
@pytest.mark.parametrize("name,hyperparameters", [("Naive", {}), ("Replay", {"mem_size": 20})])
def test_avalanche_strategies_pass_the_learner_conformance_checks(name, hyperparameters, single_thread):
    check_learner(get_learner(f"avalanche:{name}"), **hyperparameters)


def test_strategy_arguments_are_hyperparameters_with_one_line_errors():
    replay, ewc, lwf = (get_learner(f"avalanche:{n}") for n in ("Replay", "EWC", "LwF"))
    assert replay.name == "avalanche:Replay"
    assert {"lr", "optimizer", "mem_size"} <= set(replay.hyperparameters())
    assert lwf.hyperparameters()["alpha"].type is float  # Union[float, Sequence[float]]: the plain member
    context = Context(torch.device("cpu"), num_classes=4, input_shape=(1, 8, 8), seed=0,
                      backbone=backbone_factory("mlp", (1, 8, 8)))
    with pytest.raises(ClbenchError, match=r"'mem_size' got 'many'; accepted: int"):
        replay(context, mem_size="many")
    with pytest.raises(ClbenchError, match=r"no hyper-parameter 'nope'"):
        replay(context, nope=1)
    with pytest.raises(ClbenchError, match=r"EWC needs ewc_lambda \(no default\); give it with --set ewc_lambda="):
        ewc(context)
    with pytest.raises(ClbenchError, match=r"unknown Avalanche strategy 'Nope' \(known: .*Naive.*Replay"):
        get_learner("avalanche:Nope")
    with pytest.raises(ClbenchError, match=r"'avalanche:ER_AML' is not supported: its argument 'feature_extractor'"):
        get_learner("avalanche:ER_AML")


def test_a_missing_avalanche_install_is_one_line_naming_the_extra(monkeypatch):
    for module in [m for m in sys.modules if m.startswith("clbench.interop.avalanche")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "avalanche", None)  # what an absent package imports as
    with pytest.raises(ClbenchError, match=r"needs avalanche-lib.*pip install 'clbench\[avalanche\]'") as error:
        get_learner("avalanche:Naive")
    assert "\n" not in str(error.value)


def test_cli_puts_an_avalanche_strategy_and_a_clbench_learner_in_one_table(capsys, leaderboard_path, single_thread):
    assert main(["run", "--no-progress", "--leaderboard", str(leaderboard_path), "--learner", "avalanche:Naive,finetune",
                 "--set", "n_experiences=2", "--set", "epochs=1", "--set", "avalanche:Naive.lr=0.1"]) == 0
    table = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.split()[1:2] == ["0"]]
    assert table == ["avalanche:Naive", "finetune"]  # one results table, one row each (seed 0)
    assert set(leaderboard.read(leaderboard_path)["learner"]) == {"avalanche:Naive", "finetune"}


def test_task_free_batches_are_experiences_of_their_own(benchmark, single_thread):
    """Without boundaries (task-free, online) each batch is trained at once, as in Avalanche's online streams."""
    scenario = scenario_from_benchmark(benchmark, online=True, task_boundaries=False, batch_size=64)
    result = runner.run(scenario, get_learner("avalanche:Naive"), {"lr": 0.1}, seed=0, device="cpu", progress=False)
    assert result.samples_seen == len(scenario.dataset.partition("train"))
    assert result.accuracy_matrix[0][0] > 80  # chance: 50


# ---- Avalanche benchmarks as clbench scenarios -----------------------------------------------------
def test_a_benchmark_is_a_scenario_with_a_fingerprint(benchmark):
    scenario = scenario_from_benchmark(benchmark, name="digits-0-3")
    assert [e.classes for e in scenario.stream.experiences] == [(0, 1), (2, 3)]
    assert scenario.stream.mask == "seen" and scenario.dataset.num_classes == 4
    train = scenario.dataset.partition("train")
    assert train.images.dtype == np.uint8 and len(train) == sum(len(e.dataset) for e in benchmark.train_stream)
    assert train.images.shape[1:] == (1, 8, 8)
    again = scenario_from_benchmark(nc_benchmark(_tensors("train"), _tensors("test"), n_experiences=2,
                                                 task_labels=False, shuffle=False, fixed_class_order=CLASSES))
    reordered = scenario_from_benchmark(nc_benchmark(_tensors("train"), _tensors("test"), n_experiences=2,
                                                     task_labels=False, shuffle=False, fixed_class_order=[2, 3, 0, 1]))
    assert again.fingerprint == scenario.fingerprint != reordered.fingerprint


# ---- clbench -> Avalanche, and the cross-check ---------------------------------------------------------
def test_a_clbench_learner_trains_in_avalanches_loop_and_agrees_with_clbenchs_matrix(benchmark, single_thread):
    """NMC is order-independent and scores unseen classes lowest: Avalanche's loop and evaluation and
    clbench's runner give the same accuracy matrix, every entry (j > i included)."""
    nmc = get_learner("nmc")
    scenario = scenario_from_benchmark(benchmark, mean=(0.0,), std=(1.0,), encoder="flatten")
    expected = runner.run(scenario, nmc, seed=0, device="cpu", progress=False).accuracy_matrix
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    strategy = LearnerStrategy(learner=nmc(avalanche_context(benchmark, wants="features")), train_mb_size=16,
                               evaluator=evaluator)
    rows = []
    for experience in benchmark.train_stream:
        strategy.train(experience)
        rows.append(_accuracies(strategy.eval(benchmark.test_stream), 2))
    np.testing.assert_allclose(rows, expected, atol=1e-9)
    assert rows[0][0] > 90 and rows[0][1] == 0


def test_avalanche_naive_agrees_under_clbench_and_in_avalanche(benchmark, single_thread):
    """The same strategy (Avalanche's Naive), seed and scenario: clbench's accuracy matrix and Avalanche's
    own per-experience accuracies of the experiences trained so far agree, and Avalanche's stream
    forgetting is `avalanche_forgetting` of clbench's matrix. Full-batch training (one batch per epoch),
    so the two loops' shuffles cannot make them differ."""
    settings = {"mean": (0.0,), "std": (1.0,), "batch_size": 1024, "epochs": 5}
    scenario = scenario_from_benchmark(benchmark, **settings)
    naive = get_learner("avalanche:Naive")
    matrix = runner.run(scenario, naive, {"lr": 0.1}, seed=0, device="cpu", progress=False).accuracy_matrix

    runner.seed_everything(0)
    backbone = backbone_factory("mlp", (1, 8, 8), "", ((0.0,), (1.0,)))()
    model = nn.Sequential(backbone, nn.Linear(backbone.out_dim, 4))
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=1024, train_epochs=5,
                     evaluator=EvaluationPlugin(accuracy_metrics(experience=True),
                                                forgetting_metrics(stream=True), loggers=[]))
    for i, experience in enumerate(benchmark.train_stream):
        strategy.train(experience, pin_memory=False)
        results = strategy.eval(benchmark.test_stream[: i + 1])
        np.testing.assert_allclose(_accuracies(results, i + 1), matrix[i][: i + 1], atol=1e-9)
    assert matrix[1][0] < matrix[0][0]  # forgetting happened: the comparison below means something
    avalanche = 100 * results["StreamForgetting/eval_phase/test_stream"]
    assert avalanche == pytest.approx(avalanche_forgetting(matrix))
    assert avalanche == pytest.approx(metrics.forgetting(matrix))  # T = 2: the two definitions coincide


def test_forgetting_first_minus_last_versus_max_minus_last():
    """Avalanche: A[j][j] - A[T-1][j]; clbench (Chaudhry et al.): max over l in j..T-2 of A[l][j] - A[T-1][j]."""
    a = [[50.0, 0.0, 0.0],
         [80.0, 70.0, 0.0],
         [40.0, 60.0, 90.0]]
    assert avalanche_forgetting(a) == pytest.approx(((50 - 40) + (70 - 60)) / 2)  # 10
    assert metrics.forgetting(a) == pytest.approx(((80 - 40) + (70 - 60)) / 2)  # 25
    theirs = Forgetting()  # Avalanche's own metric, fed the matrix as its evaluations would
    for i, row in enumerate(a):
        for j in range(i + 1):
            theirs.update(j, row[j], initial=i == j)
    assert np.mean([theirs.result_key(j) for j in range(2)]) == pytest.approx(avalanche_forgetting(a))


@pytest.mark.parametrize("failure", [RuntimeError("operator torchvision::nms does not exist"),
                                     ImportError("/venv/torchvision/_C.so: undefined symbol: _ZN3c1017RegisterOperators")])
def test_a_torchvision_built_for_another_torch_is_named_as_the_cause_in_one_line(monkeypatch, failure):
    import builtins
    from importlib import metadata

    for module in [m for m in sys.modules if m.startswith("clbench.interop.avalanche")]:
        monkeypatch.delitem(sys.modules, module)
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "avalanche.training":  # what avalanche's `import torchvision` raises with a mismatched pair
            raise failure
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    with pytest.raises(ClbenchError) as error:
        get_learner("avalanche:Naive")
    release = torch.__version__.split("+")[0]
    assert str(error.value) == (
        f"the Avalanche bridge imports torchvision, and torchvision {metadata.version('torchvision')} was built for "
        f"another torch than this torch {torch.__version__} ({type(failure).__name__}: {failure}); install the "
        f"matching pair from one package index: pip install torch=={release} torchvision (torchvision pins the torch "
        "it was built for)")
