"""The discrete key-value bottleneck (issue 13) and the initialisation set every `initialise` learner gets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clbench import runner
from clbench.checkpoint import Checkpoint, run_key
from clbench.cli import main
from clbench.datasets import SOURCES, Dataset, LabeledArrays
from clbench.errors import ClbenchError
from clbench.learner import Context, get_learner
from clbench.learners.kv_bottleneck import LAPLACE_EPS, KVBottleneck, ema_step
from clbench.scenario import ScenarioSpec, build_scenario
from clbench.testing import check_learner
from synthetic import make_scenario

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"codebooks": 3, "keys": 8, "key_dim": 2}


def learner(dim: int = 5, classes: int = 3, seed: int = 0, **hp) -> KVBottleneck:
    context = Context(device=torch.device("cpu"), num_classes=classes, input_shape=(dim,), seed=seed,
                      backbone=lambda *a, **k: None)
    return KVBottleneck(context, **{**SMALL, **hp})


def nearest_by_brute_force(kvb: KVBottleneck, x: torch.Tensor) -> torch.Tensor:
    """N x C: each codebook's nearest key to each sample, by explicit distances (no shared code)."""
    b = kvb.bottleneck
    out = torch.empty(len(x), b.keys.shape[0], dtype=torch.long)
    for c in range(b.keys.shape[0]):
        z = x @ b.projection[c]
        out[:, c] = torch.cdist(z, b.keys[c]).argmin(1)
    return out


@pytest.mark.parametrize("hp", [{}, {"decoder": "linear", "topk": 2, "key_init": "kmeans"}])
def test_check_learner_passes(hp):
    check_learner(KVBottleneck, key_dim=1, codebooks=32, keys=16, **hp)


def test_one_step_changes_only_the_fetched_values():
    kvb = learner()
    x, y = torch.randn(4, 5, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0])
    before = {k: v.clone() for k, v in kvb.bottleneck.state_dict().items()}
    kvb.learn(x, y, None)
    after = kvb.bottleneck.state_dict()
    fetched = torch.zeros(SMALL["codebooks"], SMALL["keys"], dtype=torch.bool)
    fetched.scatter_(1, nearest_by_brute_force(kvb, x).T, True)
    changed = (after["values"] != before["values"]).any(-1)
    assert torch.equal(changed, fetched)  # every fetched value moved, no other one
    assert torch.equal(after["values"][~fetched], before["values"][~fetched])
    assert torch.equal(after["trained"], fetched)
    for name in ("keys", "projection"):
        assert torch.equal(after[name], before[name])


def test_gradient_is_clipped_to_the_global_norm():
    x, y = torch.randn(1, 5, generator=torch.Generator().manual_seed(2)), torch.tensor([1])
    values = {}
    for clip in (0.0, 1e-3):
        kvb = learner(grad_clip=clip, lr=1.0)
        kvb.learn(x, y, None)
        values[clip] = kvb.bottleneck.values.clone()
    unclipped_norm = values[0.0].norm()  # lr 1 from zero: the step is the whole gradient
    assert unclipped_norm > 1e-3
    assert torch.allclose(values[1e-3], values[0.0] * 1e-3 / (unclipped_norm + 1e-6), atol=1e-9)


def test_masking_changes_a_prediction_exactly_when_a_nearest_key_was_never_trained():
    kvb = learner(dim=4, codebooks=3, keys=16, key_dim=2)
    g = torch.Generator().manual_seed(3)
    kvb.learn(torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2]), None)
    queries = torch.randn(200, 4, generator=g)
    b = kvb.bottleneck
    unmasked = b.values.view(-1, 3)[b.rows(queries, 1)].mean(dim=(1, 2))
    nearest = nearest_by_brute_force(kvb, queries)
    untrained = ~b.trained.gather(1, nearest.T).T.all(1)  # some codebook's nearest key was never trained
    changed = (kvb.predict(queries, None) != unmasked).any(1)
    assert untrained.any() and (~untrained).any()
    assert torch.equal(changed, untrained)


def test_ema_update_matches_a_hand_computation():
    keys = torch.tensor([[[0.0], [10.0]]])  # one codebook, two keys on a line
    counts = torch.tensor([[1.0, 1.0]])
    keys_avg = torch.tensor([[[0.0], [10.0]]])
    z = torch.tensor([[[1.0], [2.0], [9.0]]])  # 1 and 2 go to key 0, 9 to key 1
    new_keys, new_avg, new_counts = ema_step(keys_avg, counts, z, keys, decay=0.5)
    # counts 0.5 * [1, 1] + 0.5 * [2, 1]; sums 0.5 * [0, 10] + 0.5 * [1 + 2, 9]
    assert torch.allclose(new_counts, torch.tensor([[1.5, 1.0]]))
    assert torch.allclose(new_avg, torch.tensor([[[1.5], [9.5]]]))
    total, eps = 2.5, LAPLACE_EPS
    smoothed = [(n + eps) / (total + 2 * eps) * total for n in (1.5, 1.0)]
    expected = torch.tensor([[[1.5 / smoothed[0]], [9.5 / smoothed[1]]]])
    assert torch.allclose(new_keys, expected, rtol=1e-6)


def one_dimensional(keys: list[float], **hp) -> KVBottleneck:
    """A learner with one codebook, an identity projection and the given keys."""
    kvb = learner(dim=1, codebooks=1, keys=len(keys), key_dim=1, **hp)
    kvb.bottleneck.projection.fill_(1.0)
    kvb.bottleneck.keys.copy_(torch.tensor(keys).view(1, -1, 1))
    return kvb


def test_initialise_runs_ema_from_zero_counts():
    kvb = one_dimensional([0.0, 10.0], init_epochs=1, init_batch_size=3, decay=0.5)
    kvb.initialise(torch.tensor([[1.0], [2.0], [9.0]]))
    # from zero counts: counts 0.5 * [2, 1], sums 0.5 * [3, 9]; no key under 0.1 * 3 / 2
    total, eps = 1.5, LAPLACE_EPS
    smoothed = [(n + eps) / (total + 2 * eps) * total for n in (1.0, 0.5)]
    assert torch.allclose(kvb.bottleneck.keys.flatten(), torch.tensor([1.5 / smoothed[0], 4.5 / smoothed[1]]))


def test_a_dead_key_is_resampled_from_the_batch():
    kvb = one_dimensional([0.0, 1000.0], init_epochs=1, init_batch_size=3)
    kvb.initialise(torch.tensor([[1.0], [2.0], [3.0]]))
    assert kvb.bottleneck.keys[0, 1, 0].item() in (1.0, 2.0, 3.0)


def test_kmeans_initialisation_finds_the_clusters():
    x = torch.tensor([[0.0], [0.2], [10.0], [10.2]])
    kvb = one_dimensional([0.0, 0.0], key_init="kmeans", init_epochs=0)
    kvb.initialise(x)
    assert sorted(kvb.bottleneck.keys.flatten().tolist()) == pytest.approx([0.1, 10.1])


def test_task_free_run_learns_through_the_runner():
    sc = make_scenario(n_classes=4, n_experiences=2, per_class=12, task_boundaries=False, epochs=3)
    config = {"codebooks": 16, "keys": 8, "key_dim": 4, "init_epochs": 0}  # random keys cover every class here
    result = runner.run(sc, KVBottleneck, config, seed=0, device="cpu", progress=False)
    assert min(result.accuracy_matrix[-1]) >= 90.0  # well separated: learned, and the first experience kept
    assert result.init_set == "first-experience"


# ---- bad input ------------------------------------------------------------------------------------
def test_topk_larger_than_keys_is_one_line():
    with pytest.raises(ClbenchError, match="topk=9 is larger than keys=8"):
        learner(topk=9)


def test_key_dim_larger_than_the_features_is_one_line():
    with pytest.raises(ClbenchError, match="key_dim=6 is larger than the feature dimension 5"):
        learner(key_dim=6)


def test_an_init_set_that_does_not_exist_is_one_line(capsys):
    with pytest.raises(ClbenchError, match="setting 'init_set' got 'no-such-set'; accepted: first-experience"):
        ScenarioSpec(name="x", init_set="no-such-set")
    assert main(["run", "--learner", "kv-bottleneck", "--set", "init_set=no-such-set", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "init_set" in err


def test_the_scenarios_own_dataset_is_refused_as_init_set():
    with pytest.raises(ClbenchError, match="is the scenario's own dataset"):
        build_scenario(ScenarioSpec(name="x", dataset="digits", n_experiences=5, init_set="digits"))


# ---- the initialisation contract in the runner ------------------------------------------------------
class Recording(KVBottleneck):
    """Records what `initialise` was given."""

    calls: list[torch.Tensor] = []

    def initialise(self, x: torch.Tensor) -> None:
        Recording.calls.append(x.clone())
        super().initialise(x)


def tiny_init_dataset(root=None) -> Dataset:
    """Another 1 x 4 x 4 dataset: 5 bright images (the registered init set of these tests)."""
    images = np.full((5, 1, 4, 4), 200, dtype=np.uint8)
    part = LabeledArrays(images, np.zeros(5, dtype=np.int64), ("a",))
    return Dataset("tiny-init", {"train": part, "test": part})


def test_the_runner_gives_the_first_experience_once_and_only_to_initialising_learners():
    sc = make_scenario(n_classes=4, n_experiences=2, per_class=6)
    Recording.calls = []
    runner.run(sc, Recording, SMALL, seed=0, device="cpu", progress=False)
    assert len(Recording.calls) == 1
    first = torch.as_tensor(sc.stream.experiences[0].train_indices)
    assert len(Recording.calls[0]) == len(first) == 12  # the first experience's inputs, not the stream's
    assert runner.run(sc, get_learner("nmc"), {}, seed=0, device="cpu", progress=False).init_set == ""


def test_another_dataset_is_encoded_as_the_init_set(monkeypatch):
    monkeypatch.setitem(SOURCES, "tiny-init", "test_kv_bottleneck:tiny_init_dataset")
    sc = make_scenario(n_classes=4, n_experiences=2, per_class=6)
    spec = sc.spec.with_overrides({"init_set": "tiny-init"})
    sc = type(sc)(spec, sc.dataset, sc.stream, tiny_init_dataset().partition("train"))
    Recording.calls = []
    result = runner.run(sc, Recording, SMALL, seed=0, device="cpu", progress=False)
    assert result.init_set == "tiny-init"
    (x,) = Recording.calls
    assert x.shape == (5, 16) and torch.allclose(x, torch.full((5, 16), (200 / 255 - 0.5) / 0.5))


def test_build_scenario_loads_the_named_init_set(monkeypatch):
    monkeypatch.setitem(SOURCES, "tiny-init", "test_kv_bottleneck:tiny_init_dataset")
    sc = build_scenario(ScenarioSpec(name="x", dataset="digits", n_experiences=5, init_set="tiny-init"))
    assert len(sc.init_data) == 5
    expected = r"init_set 'tiny-init' gives \(1, 4, 4\) images, the scenario's dataset \(1, 8, 8\)"
    with pytest.raises(ClbenchError, match=expected):
        runner.run(sc, KVBottleneck, SMALL, seed=0, device="cpu", progress=False)


def test_an_init_set_of_other_channels_is_one_line():
    sc = make_scenario(n_classes=4, n_experiences=2, per_class=6)
    rgb = LabeledArrays(np.zeros((2, 3, 4, 4), dtype=np.uint8), np.zeros(2, dtype=np.int64), ("a",))
    sc = type(sc)(sc.spec.with_overrides({"init_set": "digits"}), sc.dataset, sc.stream, rgb)
    expected = r"init_set 'digits' gives \(3, 4, 4\) images, the scenario's dataset \(1, 4, 4\)"
    with pytest.raises(ClbenchError, match=expected):
        runner.run(sc, KVBottleneck, SMALL, seed=0, device="cpu", progress=False)


class Interrupted(KVBottleneck):
    """Stops (as by Ctrl-C) when experience 1 begins; counts its initialisations."""

    initialised = 0

    def initialise(self, x: torch.Tensor) -> None:
        Interrupted.initialised += 1
        super().initialise(x)

    def begin_experience(self, info):
        if info.index == 1 and Interrupted.interrupt:
            raise KeyboardInterrupt


def test_a_resumed_run_keeps_its_initialisation_and_result(tmp_path):
    sc = make_scenario(n_classes=6, n_experiences=3, per_class=6, epochs=2)
    config = {**SMALL, "key_init": "kmeans"}
    whole = runner.run(sc, KVBottleneck, config, seed=4, device="cpu", progress=False)
    checkpoint = Checkpoint(tmp_path, run_key(sc, Interrupted, config, 4, torch.device("cpu")))
    Interrupted.initialised, Interrupted.interrupt = 0, True
    with pytest.raises(KeyboardInterrupt):
        runner.run(sc, Interrupted, config, seed=4, device="cpu", progress=False, checkpoint=checkpoint)
    Interrupted.interrupt = False
    resumed = runner.run(sc, Interrupted, config, seed=4, device="cpu", progress=False, checkpoint=checkpoint)
    assert Interrupted.initialised == 1  # not redone on resume
    assert resumed.accuracy_matrix == whole.accuracy_matrix


def test_the_row_says_which_initialisation_set_was_used(tmp_path):
    import pandas as pd

    from clbench import leaderboard
    from clbench.cli import main

    board = tmp_path / "board.csv"
    assert main(["run", "--learner", "kv-bottleneck,nmc", "--set", "codebooks=4", "--set", "keys=8",
                 "--set", "n_experiences=2", "--no-progress", "--leaderboard", str(board)]) == 0
    rows = leaderboard.read(board).set_index("learner")
    assert rows.loc["kv-bottleneck", "init_set"] == "first-experience"
    assert pd.isna(rows.loc["nmc", "init_set"])  # a learner without the hook is given none
