"""The `fast-slow` learner: the exact finetune identity, the penalty, the slow interpolation and the
adaptation from it, the importance estimate by hand, state round trips, episodes, conformance."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
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
from clbench.scenario import Scenario, ScenarioSpec
from clbench.testing import check_learner
from synthetic import make_scenario

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


def _experience(learner, index: int, classes, passes: int = 2, n: int = 12, batch: int = 5) -> None:
    x, y = _batches(classes, n, seed=index)
    info = ExperienceInfo(index, tuple(classes), None, n, 3)
    learner.begin_experience(info)
    for _ in range(passes):
        for xb, yb in zip(x.split(batch), y.split(batch)):
            learner.learn(xb, yb, None)
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
def test_penalty_is_zero_at_the_anchor_and_grows_quadratically_away_from_it():
    learner = _make(FastSlow, fast_penalty=7.0)
    assert learner.penalty().item() == 0.0  # nothing consolidated yet
    _experience(learner, 0, [0, 1])
    c = learner.consolidation
    assert learner.penalty().item() == 0.0  # the fast weights are the anchor
    direction = {name: torch.randn(p.shape, generator=torch.Generator().manual_seed(1))
                 for name, p in learner.net.named_parameters()}
    by_hand = 0.5 * 7.0 * sum(float((c.importance[n] * d.double() ** 2).sum()) for n, d in direction.items())
    assert by_hand > 0
    for t in (0.5, 1.0, 3.0):
        with torch.no_grad():
            for name, p in learner.net.named_parameters():
                p.copy_(c.anchor[name] + t * direction[name])
        assert learner.penalty().item() == pytest.approx(t * t * by_hand, rel=1e-4)


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


# ---- the importance estimate -----------------------------------------------------------------------------
class _Flat(nn.Flatten):
    out_dim = 3


def _by_hand(w, b, batches, lr, penalty=None):
    """SGD (no momentum) on a linear softmax layer, each step followed by the penalty's proximal step;
    returns the final (w, b) and the sum of B * g^2 over `batches` (g: the cross-entropy's gradient)."""
    fisher_w, fisher_b = torch.zeros_like(w), torch.zeros_like(b)
    for x, y in batches:
        p = torch.softmax(x @ w.T + b, dim=1)
        err = (p - torch.nn.functional.one_hot(y, len(b)).double()) / len(y)
        g_w, g_b = err.T @ x, err.sum(0)
        fisher_w, fisher_b = fisher_w + len(y) * g_w ** 2, fisher_b + len(y) * g_b ** 2
        w, b = w - lr * g_w, b - lr * g_b
        if penalty is not None:  # argmin of lam/2 F (theta - a)^2 + (theta - theta_sgd)^2 / (2 lr)
            lam, (f_w, f_b), (a_w, a_b) = penalty
            w, b = (w + lr * lam * f_w * a_w) / (1 + lr * lam * f_w), (b + lr * lam * f_b * a_b) / (1 + lr * lam * f_b)
    return w, b, fisher_w, fisher_b


def test_importance_and_penalty_step_match_a_hand_computation_on_a_one_layer_network():
    context = _context(num_classes=3, backbone=lambda name=None: _Flat())
    learner = _make(FastSlow, context, fast_penalty=2.0, lr=0.5, momentum=0.0)
    w, b = (t.detach().double().clone() for t in (learner.net[1].weight, learner.net[1].bias))
    g = torch.Generator().manual_seed(4)
    x1, y1 = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    x2, y2 = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.tensor([2, 2, 1, 0])
    plan = [((x1[:3], y1[:3]), (x1[3:], y1[3:])), ((x2[:1], y2[:1]), (x2[1:], y2[1:]))]  # batches of 3+2, 1+3
    lam, f, anchor = 2.0, None, None
    for index, batches in enumerate(plan):
        info = ExperienceInfo(index, (0, 1, 2), None, sum(len(y) for _, y in batches), 2)
        learner.begin_experience(info)
        for _ in range(3):  # three passes: only the last one counts
            for x, y in batches:
                learner.learn(x.float(), y, None)
        learner.end_experience(info)
        penalty = None if f is None else (lam, f, anchor)  # from the second experience on
        w, b, _, _ = _by_hand(w, b, batches * 2, 0.5, penalty)
        w, b, f_w, f_b = _by_hand(w, b, batches, 0.5, penalty)
        new = (f_w / len(batches), f_b / len(batches))
        f = new if f is None else (f[0] + new[0], f[1] + new[1])  # online: F <- F + F_t
        anchor = (w, b)
        c = learner.consolidation
        torch.testing.assert_close(c.importance["1.weight"].double(), f[0], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(c.importance["1.bias"].double(), f[1], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(c.anchor["1.weight"].double(), w, rtol=1e-4, atol=1e-6)


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
    learner.learn(x[:5], y[:5], None)  # mid-experience: a Fisher sum in progress, momentum, a done reset
    fresh = _reloaded(learner)
    for trained in (learner, fresh):
        trained.learn(x[5:], y[5:], None)
        trained.end_experience(info)
    assert all(torch.equal(v, _weights(fresh)[k]) for k, v in _weights(learner).items())
    for part in ("slow", "anchor", "importance"):
        mine, theirs = getattr(learner.consolidation, part), getattr(fresh.consolidation, part)
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_episodic_state_shares_the_consolidation_and_restores_an_episode():
    learner = _make(FastSlow, fast_penalty=3.0, slow_rate=0.4)
    _experience(learner, 0, [0, 1])
    _experience(learner, 1, [2, 3])
    x, _ = _batches([0, 1, 2, 3], 8, seed=6)
    before = learner.predict(x, None)
    snapshot = copy.deepcopy(learner.episodic_state())
    assert snapshot["consolidation"] is learner.consolidation  # no slow weights, anchor or Fisher copied
    support, labels = _batches([2, 3], 4, seed=7)
    learner.learn(support, labels, None)  # an episode: outside any experience, adapted from the slow weights
    assert not torch.equal(before, learner.predict(x, None))
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
                                        ({"fast_penalty": float("inf")}, "fast_penalty")])
def test_out_of_domain_values_are_one_line_errors(given, name):
    with pytest.raises(ClbenchError, match=f"'{name}'"):
        FastSlow(_context(), **given)
