"""The frozen-feature cache: computed once, reused by every later run, never stale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clbench import runner
from clbench.backbones import load_checkpoint, make_backbone, weights_id
from clbench.errors import ClbenchError
from clbench.feature_cache import FeatureCache, FrozenEncoder, partition_identity
from clbench.learner import get_learner
from synthetic import make_scenario

NMC = get_learner("nmc")


def _run(cache, **spec):
    scenario = make_scenario(encoder="small_cnn", **spec)
    return runner.run(scenario, NMC, seed=0, progress=False, feature_cache=cache)


def test_second_run_hits_the_cache_and_gives_the_same_matrix(tmp_path):
    cache = FeatureCache(tmp_path / "features")
    first, second = _run(cache), _run(cache)
    assert (first.feature_cache, second.feature_cache) == ("miss", "hit")
    assert first.accuracy_matrix == second.accuracy_matrix
    assert len(list((tmp_path / "features").glob("*.npy"))) == 2  # train and test
    assert not list((tmp_path / "features").glob("*.tmp"))


def test_second_run_skips_the_encoder(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)
    _run(cache)
    encoded = []
    original = FrozenEncoder.encode_into
    monkeypatch.setattr(FrozenEncoder, "encode_into", lambda self, images, *a: (encoded.append(len(images)),
                                                                               original(self, images, *a))[1])
    assert _run(cache).feature_cache == "hit"
    assert encoded == []


@pytest.mark.parametrize("change", [{"image_size": 8}, {"mean": (0.2,)}, {"encoder_normalize": False}])
def test_a_changed_transform_misses(tmp_path, change):
    cache = FeatureCache(tmp_path)
    _run(cache)
    assert _run(cache, **change).feature_cache == "miss"


def test_changed_weights_miss_and_are_identified(tmp_path):
    net = make_backbone("small_cnn", (1, 4, 4))
    path = tmp_path / "net.pt"
    torch.save({"state_dict": {**net.state_dict(), "fc.weight": torch.zeros(3, 3)}}, path)
    cache = FeatureCache(tmp_path / "features")
    random_init = _run(cache)
    trained = _run(cache, weights=str(path))
    assert trained.feature_cache == "miss" and trained.weights == weights_id("small_cnn", str(path))
    assert random_init.weights == "random-init" and trained.weights.startswith("sha256:")
    assert _run(cache, weights=str(path)).feature_cache == "hit"


def test_changed_data_misses(tmp_path):
    cache = FeatureCache(tmp_path)
    _run(cache)
    assert _run(cache, n_classes=6, n_experiences=3).feature_cache == "miss"


def test_partition_identity_sees_content():
    scenario = make_scenario()
    part = scenario.dataset.partition("train")
    changed = type(part)(part.images.copy(), part.labels.copy(), part.class_names)
    assert partition_identity(part) == partition_identity(changed)
    changed.images[0, 0, 0, 0] ^= 1
    assert partition_identity(part) != partition_identity(changed)


def test_no_cache_computes_in_memory(tmp_path):
    assert _run(None).feature_cache == "off"


def test_checkpoint_loading_checks_keys(tmp_path):
    net = make_backbone("small_cnn", (1, 4, 4))
    bad = tmp_path / "bad.pt"
    torch.save({"other.weight": torch.zeros(1)}, bad)
    with pytest.raises(ClbenchError, match="does not fit this network: keys 12 missing"):
        load_checkpoint(net, str(bad))
    with pytest.raises(ClbenchError, match="not found"):
        load_checkpoint(net, str(tmp_path / "absent.pt"))
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ClbenchError, match="is not a checkpoint"):
        load_checkpoint(net, str(tmp_path / "garbage.pt"))


def test_checkpoint_round_trip_gives_the_same_network(tmp_path):
    a, b = make_backbone("small_cnn", (1, 8, 8)), make_backbone("small_cnn", (1, 8, 8))
    torch.save(a.state_dict(), tmp_path / "a.pt")
    load_checkpoint(b, str(tmp_path / "a.pt"))
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_hub_weights_without_network_is_one_line():
    with pytest.raises(ClbenchError, match="no hub weights"):
        make_backbone("conv4", (3, 84, 84), weights="hub")


def test_timm_encoder_takes_its_statistics_but_the_spec_image_size():
    from clbench.feature_cache import FrozenEncoder

    encoder = FrozenEncoder("resnet18", "", (3, 32, 32), 32, (0.5,), (0.5,), True, torch.device("cpu"))
    assert encoder.transform.size == 32 and encoder.transform.mean == (0.485, 0.456, 0.406)
    default = FrozenEncoder("resnet18", "", (3, 32, 32), 0, (0.5,), (0.5,), True, torch.device("cpu"))
    assert default.transform.size == 224  # no image_size in the spec: the pretrained input size
