"""The `fast-slow` learner: the exact finetune identity, the per-sample Fisher and the penalty anchored at
the slow weights (by hand), the slow interpolation and the adaptation from it, the consolidation
mattering on real data, state round trips and resume, episodes, conformance."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clbench import runner
from clbench.backbones import backbone_factory
from clbench.datasets import Dataset, LabeledArrays
from clbench.errors import ClbenchError
from clbench.learner import Context, ExperienceInfo, get_learner
from clbench.learners.fast_slow import FastSlow
from clbench.learners.finetune import Finetune
from clbench.protocols.episodes import episodic_stream
from clbench.protocols.sessions import stream_from_sessions
from clbench.scenario import Scenario, ScenarioSpec, build_scenario, load_spec
from clbench.testing import check_learner
from synthetic import make_scenario
from test_resume import whole_and_resumed

pytestmark = pytest.mark.usefixtures("single_thread")

SHAPE = (1, 4, 4)
IDENTITY = {"fast_penalty": 0.0, "slow_rate": 1.0}


def _context(num_classes: int = 4, backbone=None) -> Context:
    return Context(torch.device("cpu"), num_classes=num_classes, input_shape=SHAPE, seed=0,
                   backbone=backbone or backbone_factory("mlp", SHAPE))


def _make(cls, context: Context | None = None, **hp):
    runner.seed_everything(0)
    return cls(context or _context(), **hp)


def _batches(classes, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.as_tensor(classes)[torch.randint(len(classes), (n,), generator=g)]
    return y.float().view(-1, 1, 1, 1) + 0.3 * torch.randn(n, *SHAPE, generator=g), y


def _experience(learner, index: int, classes, passes: int = 2, n: int = 12, batch: int = 5, end: bool = True) -> None:
    x, y = _batches(classes, n, seed=index)
    info = ExperienceInfo(index, tuple(classes), None, n, 3)
    learner.begin_experience(info)
    for _ in range(passes):
        for xb, yb in zip(x.split(batch), y.split(batch)):
            learner.learn(xb, yb, None)
    if end:
        learner.end_experience(info)


def _weights(learner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in learner.net.state_dict().items()}


def _fscil() -> Scenario:
    """4 base classes, then 2 sessions of 2 classes x 2 shots; 3 test images per class."""
    rng = np.random.default_rng(0)

    def part(labels: np.ndarray) -> LabeledArrays:
        images = (labels[:, None, None, None] * 30 + rng.integers(0, 8, (len(labels), *SHAPE))).astype(np.uint8)
        return LabeledArrays(images, labels, tuple(f"c{c}" for c in range(8)))

    train = np.concatenate([np.repeat(np.arange(4), 6), np.repeat(np.arange(4, 8), 2)])
    dataset = Dataset("synthetic", {"train": part(train), "test": part(np.repeat(np.arange(8), 3))})
    sessions = [np.flatnonzero(np.isin(train, c)) for c in (range(4), (4, 5), (6, 7))]
    spec = ScenarioSpec(name="fscil-synthetic", dataset="synthetic", protocol="fscil", n_experiences=3, epochs=3,
                        batch_size=4)
    return Scenario(spec, dataset, stream_from_sessions(train, dataset.partition("test").labels, sessions))


def _episodes(n_episodes: int = 6) -> Scenario:
    rng = np.random.default_rng(0)
    labels = {"train": np.repeat(np.arange(4), 10), "test": np.repeat(np.arange(4, 8), 10)}
    parts = {k: LabeledArrays((v[:, None, None, None] * 30 + rng.integers(0, 8, (len(v), *SHAPE))).astype(np.uint8),
                              v, tuple(f"c{i}" for i in range(8))) for k, v in labels.items()}
    spec = ScenarioSpec(name="toy-episodes", dataset="toy", protocol="episodes", n_experiences=1, epochs=3,
                        batch_size=8, way=3, shot=2, query=3, test_episodes=n_episodes,
                        backbone="small_cnn")  # mlp fails on the evaluator's empty batch (no test images here)
    return Scenario(spec, Dataset("toy", parts), episodic_stream(labels["train"], labels["test"], 3, 2, 3, n_episodes))


SCENARIOS = {"class-incremental": lambda: make_scenario(n_classes=6, n_experiences=3, epochs=3),
             "task-incremental": lambda: make_scenario(n_classes=6, n_experiences=3, epochs=3, task_incremental=True),
             "fscil": _fscil, "episodes": _episodes}


# ---- the finetune identity -----------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", SCENARIOS)
@pytest.mark.parametrize("shared", [{}, {"optimizer": "adam", "lr": 0.01, "weight_decay": 1e-3}])
def test_no_penalty_and_slow_rate_1_give_finetunes_accuracy_matrix(protocol, shared):
    scenario = SCENARIOS[protocol]()
    results = [runner.run(scenario, cls, config, seed=3, progress=False, device="cpu")
               for cls, config in ((Finetune, shared), (FastSlow, {**IDENTITY, **shared}))]
    assert results[0].accuracy_matrix == results[1].accuracy_matrix
    assert results[0].episode_accuracies == results[1].episode_accuracies


def test_the_identity_holds_weight_for_weight_and_breaks_as_soon_as_the_slow_rate_is_below_1():
    finetune, same, slower = _make(Finetune), _make(FastSlow, **IDENTITY), _make(FastSlow, fast_penalty=0.0,
                                                                                  slow_rate=0.5)
    for index, classes in enumerate(([0, 1], [2, 3], [1, 2])):
        for learner in (finetune, same, slower):
            _experience(learner, index, classes)
    expected = _weights(finetune)
    assert all(torch.equal(expected[k], v) for k, v in _weights(same).items())
    assert not all(torch.equal(expected[k], v) for k, v in _weights(slower).items())


# ---- the penalty -----------------------------------------------------------------------------------------
def test_the_default_penalty_measurably_reduces_forgetting_on_split_digits_til():
    """The consolidation is not inert: on the real digits, task-incremental (masked, the default), the
    defaults end well above the same learner without the penalty (seed 0: about 99 against 91; the
    benchmark benchmarks/fast_slow_consolidation.py measures it over seeds)."""
    scenario = build_scenario(load_spec("split-digits-til"))
    final = {penalty: np.mean(runner.run(scenario, FastSlow, config, seed=0, progress=False,
                                         device="cpu").accuracy_matrix[-1])
             for penalty, config in (("default", {}), ("none", {"fast_penalty": 0.0}))}
    assert final["default"] >= final["none"] + 3


# ---- the slow weights ------------------------------------------------------------------------------------
def test_slow_weights_are_the_fast_ones_then_the_interpolation_toward_them():
    learner = _make(FastSlow, fast_penalty=1.0, slow_rate=0.3)
    _experience(learner, 0, [0, 1])
    first = _weights(learner)
    floats = [k for k, v in first.items() if v.is_floating_point()]
    assert all(torch.equal(learner.consolidation.slow[k], first[k]) for k in floats)
    _experience(learner, 1, [2, 3])
    second = _weights(learner)
    for k in floats:  # phi <- phi + 0.3 (theta - phi), phi being the first experience's fast weights
        torch.testing.assert_close(learner.consolidation.slow[k], first[k] + 0.3 * (second[k] - first[k]))
    assert not torch.equal(first["1.weight"], second["1.weight"])


def test_predictions_use_the_fast_weights_and_the_next_learn_adapts_from_the_slow_ones():
    learner = _make(FastSlow, fast_penalty=0.0, slow_rate=0.5, momentum=0.0)
    _experience(learner, 0, [0, 1])
    _experience(learner, 1, [2, 3])
    x, y = _batches([0, 1, 2], 6, seed=9)
    fast_scores = learner.predict(x, None)
    reference = _make(Finetune, momentum=0.0)
    reference.net.load_state_dict(learner.net.state_dict())
    torch.testing.assert_close(fast_scores, reference.predict(x, None), rtol=0, atol=0)
    for name, t in reference.net.state_dict().items():  # a plain SGD step from the slow weights
        if t.is_floating_point():
            t.copy_(learner.consolidation.slow[name])
    learner.learn(x, y, None)
    reference.learn(x, y, None)
    assert all(torch.equal(v, _weights(reference)[k]) for k, v in _weights(learner).items())


# ---- the Fisher and the anchor, by hand on a linear softmax layer ------------------------------------------
class _Flat(nn.Flatten):
    out_dim = 3


LR, LAM, RATE = 0.5, 2.0, 0.5


def _linear_learner(**hp) -> FastSlow:
    context = _context(num_classes=3, backbone=lambda name=None: _Flat())
    return _make(FastSlow, context, fast_penalty=LAM, slow_rate=RATE, lr=LR, momentum=0.0, **hp)


def _per_sample_gradients(w, b, x, y):
    """d log softmax(x w^T + b)_y / d(w, b) for each sample: (onehot(y) - p) x^T and onehot(y) - p."""
    e = F.one_hot(y, len(b)).double() - torch.softmax(x @ w.T + b, dim=1)
    return e[:, :, None] * x[:, None, :], e


def _fisher(w, b, x, y):
    """The per-sample empirical Fisher: the MEAN over the samples of the SQUARED per-sample gradients."""
    g_w, g_b = _per_sample_gradients(w, b, x, y)
    return (g_w ** 2).mean(0), (g_b ** 2).mean(0)


def _sgd_then_prox(w, b, x, y, anchor=None, fisher=None):
    """One SGD step on the batch's mean cross-entropy, then the penalty's proximal step toward `anchor`."""
    g_w, g_b = _per_sample_gradients(w, b, x, y)
    w, b = w + LR * g_w.mean(0), b + LR * g_b.mean(0)  # descent on -log p
    if anchor is not None:
        w = anchor[0] + (w - anchor[0]) / (1 + LR * LAM * fisher[0])
        b = anchor[1] + (b - anchor[1]) / (1 + LR * LAM * fisher[1])
    return w, b


def _data(seed: int, n: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(3, (n,), generator=g)


def _one_batch_experience(learner, index: int, x, y) -> None:
    info = ExperienceInfo(index, (0, 1, 2), None, len(y), 3)
    learner.begin_experience(info)
    learner.learn(x.float(), y, None)
    learner.end_experience(info)


def _as_double(learner, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = getattr(learner.consolidation, part)
    return tensors["1.weight"].double(), tensors["1.bias"].double()


def test_the_importance_is_the_per_sample_empirical_fisher_at_the_slow_weights():
    learner = _linear_learner()
    (x1, y1), (x2, y2) = _data(4, 2), _data(5, 3)
    w, b = (t.detach().double().clone() for t in (learner.net[1].weight, learner.net[1].bias))
    _one_batch_experience(learner, 0, x1, y1)
    phi1 = _sgd_then_prox(w, b, x1, y1)  # the first slow weights are the fast ones
    fisher1 = _fisher(*phi1, x1, y1)
    importance = _as_double(learner, "importance")
    torch.testing.assert_close(importance, fisher1, rtol=1e-5, atol=1e-8)
    g_w, g_b = _per_sample_gradients(*phi1, x1, y1)  # not B x (mean gradient)^2, the mini-batch estimate
    assert not torch.allclose(importance[0], 2 * g_w.mean(0) ** 2, rtol=0.1)

    _one_batch_experience(learner, 1, x2, y2)
    theta2 = _sgd_then_prox(*phi1, x2, y2, anchor=phi1, fisher=fisher1)
    phi2 = tuple(p + RATE * (t - p) for p, t in zip(phi1, theta2))
    torch.testing.assert_close(_as_double(learner, "slow"), phi2, rtol=1e-5, atol=1e-7)
    fisher2 = _fisher(*phi2, x2, y2)  # measured at the new slow weights, added online
    torch.testing.assert_close(_as_double(learner, "importance"), tuple(a + c for a, c in zip(fisher1, fisher2)),
                               rtol=1e-5, atol=1e-8)


def test_the_fast_weights_restart_from_the_slow_weights_and_are_pulled_back_to_them():
    """The reset point and the penalty's anchor are one point, the slow weights, also when they differ
    from the last fast weights (slow_rate < 1): a step after a consolidation is SGD from phi followed
    by theta <- phi + (theta - phi) / (1 + lr * fast_penalty * F)."""
    learner = _linear_learner()
    for index, seed in enumerate((4, 5)):
        _one_batch_experience(learner, index, *_data(seed, 3))
    last_fast = _weights(learner)["1.weight"].double()
    phi, fisher = _as_double(learner, "slow"), _as_double(learner, "importance")
    assert not torch.allclose(phi[0], last_fast)  # the two candidate anchors differ
    x, y = _data(6, 4)
    learner.learn(x.float(), y, None)
    expected = _sgd_then_prox(*phi, x, y, anchor=phi, fisher=fisher)
    torch.testing.assert_close((learner.net[1].weight.double(), learner.net[1].bias.double()), expected,
                               rtol=1e-5, atol=1e-7)


def test_only_the_first_fisher_samples_of_the_experience_are_kept_and_none_without_a_penalty():
    capped, full = _linear_learner(fisher_samples=2), _linear_learner()
    x, y = _data(4, 5)
    x2, y2 = _data(7, 5)
    for learner in (capped, full):
        info = ExperienceInfo(0, (0, 1, 2), None, 5, 3)
        learner.begin_experience(info)
        learner.learn(x[:3].float(), y[:3], None)  # capped keeps 2 of these
        learner.learn(x[3:].float(), y[3:], None)
        learner.learn(x2.float(), y2, None)  # a second pass: not kept
        learner.end_experience(info)
    phi = _as_double(full, "slow")
    torch.testing.assert_close(_as_double(capped, "importance"), _fisher(*phi, x[:2], y[:2]), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(_as_double(full, "importance"), _fisher(*phi, x, y), rtol=1e-5, atol=1e-8)
    free = _make(FastSlow, fast_penalty=0.0)
    _experience(free, 0, [0, 1], end=False)
    assert free.kept == [] and free.room == 0


# ---- the Fisher function ------------------------------------------------------------------------------------
def test_empirical_fisher_matches_a_per_sample_loop_in_eval_mode_with_batch_norm_and_a_task_mask(monkeypatch):
    from clbench.learners import fisher
    from clbench.learners.task_heads import TaskMask

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 4))
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    weights = {name: t + 0.1 * torch.randn_like(t) for name, t in net.state_dict().items() if t.is_floating_point()}
    own = copy.deepcopy(net.state_dict())
    context = Context(torch.device("cpu"), num_classes=4, input_shape=(3,), seed=0, backbone=lambda name=None: None,
                      til_training="masked", task_classes=((0, 1), (2, 3)))
    mask = TaskMask(context)
    x, y = torch.randn(7, 3), torch.tensor([0, 1, 2, 3, 1, 2, 0])

    reference = copy.deepcopy(net)
    reference.load_state_dict({**own, **weights})
    reference.eval()
    expected = {name: torch.zeros_like(p) for name, p in reference.named_parameters()}
    for k in range(len(y)):  # the definition, one sample at a time
        reference.zero_grad()
        F.log_softmax(mask(reference(x[k:k + 1]), y[k:k + 1]), dim=1)[0, y[k]].backward()
        for name, p in reference.named_parameters():
            expected[name] += p.grad ** 2 / len(y)

    monkeypatch.setattr(fisher, "GRADIENT_BUDGET", 2 * sum(p.numel() for p in net.parameters()))  # chunks of 2
    net.train()
    got = fisher.empirical_fisher(net, weights, x, y, mask)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7)
    assert got["3.weight"][0:2, :].abs().sum() > 0 and got["3.weight"][2:, :].abs().sum() > 0
    assert net.training and all(torch.equal(v, own[k]) for k, v in net.state_dict().items())  # unchanged


# ---- state ------------------------------------------------------------------------------------------------
def _reloaded(learner) -> FastSlow:
    buffer = io.BytesIO()
    torch.save(learner.state_dict(), buffer)
    buffer.seek(0)
    fresh = _make(FastSlow, fast_penalty=3.0, slow_rate=0.4)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


def test_state_round_trips_mid_experience_and_training_continues_identically():
    learner = _make(FastSlow, fast_penalty=3.0, slow_rate=0.4)
    _experience(learner, 0, [0, 1])
    x, y = _batches([2, 3], 10, seed=5)
    info = ExperienceInfo(1, (2, 3), None, 10, 3)
    learner.begin_experience(info)
    learner.learn(x[:5], y[:5], None)  # mid-experience: samples kept for the Fisher, momentum, a done reset
    fresh = _reloaded(learner)
    for trained in (learner, fresh):
        trained.learn(x[5:], y[5:], None)
        trained.end_experience(info)
    assert all(torch.equal(v, _weights(fresh)[k]) for k, v in _weights(learner).items())
    for part in ("slow", "importance"):
        mine, theirs = getattr(learner.consolidation, part), getattr(fresh.consolidation, part)
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_run_resumed_from_its_checkpoint_gives_the_uninterrupted_result(tmp_path):
    scenario = make_scenario(n_classes=6, n_experiences=3, epochs=2, task_incremental=True)
    config = {"fast_penalty": 50.0, "slow_rate": 0.5}
    whole, resumed = whole_and_resumed(tmp_path, scenario, FastSlow, config, seed=2, at=2)
    assert resumed.accuracy_matrix == whole.accuracy_matrix


def test_episodic_state_shares_the_consolidation_and_restores_an_episode():
    learner = _make(FastSlow, fast_penalty=3.0, slow_rate=0.4)
    _experience(learner, 0, [0, 1])
    _experience(learner, 1, [2, 3])
    x, _ = _batches([0, 1, 2, 3], 8, seed=6)
    before = learner.predict(x, None)
    snapshot = copy.deepcopy(learner.episodic_state())
    assert snapshot["consolidation"] is learner.consolidation  # no slow weights or Fisher copied
    support, labels = _batches([2, 3], 4, seed=7)
    learner.learn(support, labels, None)  # an episode: outside any experience, adapted from the slow weights
    assert not torch.equal(before, learner.predict(x, None)) and learner.kept == []
    learner.load_episodic_state(copy.deepcopy(snapshot))
    assert torch.equal(before, learner.predict(x, None)) and learner.reset_pending


# ---- protocols, conformance, hyper-parameters --------------------------------------------------------------
@pytest.mark.parametrize("protocol", SCENARIOS)
def test_runs_in_every_protocol_with_finite_accuracies(protocol):
    result = runner.run(SCENARIOS[protocol](), get_learner("fast-slow"), {"fast_penalty": 10.0}, progress=False,
                        device="cpu")
    assert np.isfinite(np.array(result.accuracy_matrix)).all()


@pytest.mark.parametrize("hp", [{}, IDENTITY, {"fast_penalty": 1000.0, "slow_rate": 0.0}])
def test_conforms(hp):
    check_learner(FastSlow, **hp)


@pytest.mark.parametrize("given,name", [({"slow_rate": 1.5}, "slow_rate"), ({"slow_rate": -0.1}, "slow_rate"),
                                        ({"fast_penalty": -1.0}, "fast_penalty"),
                                        ({"fast_penalty": float("inf")}, "fast_penalty"),
                                        ({"fisher_samples": 0}, "fisher_samples")])
def test_out_of_domain_values_are_one_line_errors(given, name):
    with pytest.raises(ClbenchError, match=f"'{name}'"):
        FastSlow(_context(), **given)
