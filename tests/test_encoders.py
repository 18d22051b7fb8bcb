"""Frozen encoders and image backbones: grayscale fed as pretrained weights expect, tiny images
resized for models that need more, and every failure (building, running, weights, hub) in one line."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import huggingface_hub
import pytest
import torch
from torch import nn

from clbench import hub
from clbench.backbones import TimmBackbone, make_backbone
from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.feature_cache import FrozenEncoder

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = torch.device("cpu")


def run_cli(board, *settings: str, learner: str = "nmc") -> int:
    args = ["run", "--no-progress", "--scenario", "split-digits", "--learner", learner, "--leaderboard", str(board)]
    for setting in settings:
        args += ["--set", setting]
    return main(args)


def one_line_error(capsys, board) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not board.exists()
    return err


@pytest.fixture
def no_network(monkeypatch):
    """The hub is unreachable and its cache empty; every probe is recorded (none reaches the network)."""
    probes = []

    def refuse(request, timeout=None):
        probes.append((request.full_url, request.get_method(), timeout))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    return probes


# grayscale and tiny images

@pytest.mark.parametrize("settings", [["encoder=test_resnet", "image_size=16"],
                                      ["encoder=test_resnet", "image_size=16", "encoder_normalize=false"]])
def test_timm_encoder_on_grayscale_digits_gives_a_row(settings, leaderboard_path):
    assert run_cli(leaderboard_path, *settings) == 0
    assert len(leaderboard_path.read_text().splitlines()) == 2  # header and the row


def test_timm_backbone_on_grayscale_digits_gives_a_row(leaderboard_path):
    assert run_cli(leaderboard_path, "backbone=test_resnet", "epochs=1", learner="finetune") == 0
    assert len(leaderboard_path.read_text().splitlines()) == 2


def test_grayscale_is_replicated_and_mapped_to_the_pretrained_statistics():
    backbone = make_backbone("resnet18", (1, 8, 8), input_norm=((0.5,), (0.5,)))
    seen = []
    backbone.model = nn.Module()
    backbone.model.forward = lambda x: seen.append(x) or x.flatten(1)
    backbone(torch.full((1, 1, 8, 8), -0.5))  # the run's normalisation of x / 255 = 0.25
    imagenet = [(0.25 - 0.485) / 0.229, (0.25 - 0.456) / 0.224, (0.25 - 0.406) / 0.225]
    assert seen[0].shape == (1, 3, 8, 8)
    assert torch.allclose(seen[0][0, :, 0, 0], torch.tensor(imagenet), atol=1e-6)


def test_a_model_that_cannot_take_tiny_images_gets_its_input_size():
    vit = make_backbone("test_vit", (1, 8, 8))
    assert isinstance(vit, TimmBackbone) and vit.size == 160 and vit.channels == 3
    assert vit.eval()(torch.zeros(2, 1, 8, 8)).shape == (2, vit.out_dim)
    assert make_backbone("test_resnet", (1, 8, 8)).size == 0  # a CNN takes them as they are


def test_frozen_grayscale_encoder_encodes():
    encoder = FrozenEncoder("test_resnet", "", (1, 8, 8), 16, (0.5,), (0.5,), False, CPU)
    out = torch.empty(4, encoder.out_dim).numpy()
    encoder.encode_into(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8), out, batch=2)
    assert torch.isfinite(torch.from_numpy(out)).all()


# building and running

@pytest.mark.parametrize("setting, message", [
    ("encoder=no_such_net", r"unknown encoder 'no_such_net'"),
    ("encoder=resnet12", r"resnet12: inputs must be at least 16x16, got 8x8"),
])
def test_an_encoder_that_cannot_be_built_or_run_is_one_line(setting, message, capsys, leaderboard_path):
    assert run_cli(leaderboard_path, setting) == 2
    assert re.search(message, one_line_error(capsys, leaderboard_path))


def test_bad_arguments_and_shape_errors_name_the_network():
    with pytest.raises(ClbenchError, match=r"cannot build backbone 'test_resnet' .*TypeError"):
        make_backbone("test_resnet", (3, 8, 8), bogus=1)
    with pytest.raises(ClbenchError, match=r"backbone 'test_resnet' cannot run on \(3, 8, 8\) inputs: RuntimeError"):
        make_backbone("test_resnet", (3, 8, 8), in_chans=2)


@pytest.mark.parametrize("failure, message", [
    (torch.OutOfMemoryError("CUDA out of memory.\nTried to allocate"), r"ran out of memory .* lower eval_batch_size"),
    (RuntimeError("bad\nshape"), r"encoder 'test_resnet' failed on \(2, 3, 160, 160\) inputs: RuntimeError: bad shape"),
])
def test_an_encoder_failing_on_the_data_is_one_line(failure, message):
    encoder = FrozenEncoder("test_resnet", "", (1, 8, 8), 0, (0.5,), (0.5,), True, CPU)

    def fail(x):
        raise failure

    encoder.model.forward = fail
    with pytest.raises(ClbenchError, match=message) as caught:
        encoder.encode_into(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.empty(4, 8).numpy(), batch=2)
    assert "\n" not in str(caught.value)


# weights files

def _weights_cases(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save(make_backbone("small_cnn", (1, 8, 8)).state_dict(), tmp_path / "other.pt")
    state = make_backbone("test_resnet", (1, 8, 8)).model.state_dict()
    torch.save({k: v[:1] if k == "conv1.0.weight" else v for k, v in state.items()}, tmp_path / "shape.pt")
    return [
        ("does-not-exist.pt", r"weights file does-not-exist.pt not found; give weights=PATH"),
        (".", r"weights=\. is a folder, not a checkpoint"),
        (tmp_path / "garbage.pt", r"garbage.pt is not a checkpoint \(.*\); give a file written by torch.save"),
        (tmp_path / "tensor.pt", r"tensor.pt holds a Tensor, not a state dict"),
        (tmp_path / "other.pt", r"other.pt does not fit encoder 'test_resnet': keys \d+ missing .*\d+ unexpected"),
        (tmp_path / "shape.pt",
         r"shape.pt does not fit encoder 'test_resnet': keys 1 of another shape \(e.g. conv1.0.weight\)"),
    ]


def test_every_bad_weights_file_is_one_line(tmp_path, capsys, leaderboard_path):
    for weights, message in _weights_cases(tmp_path):
        assert run_cli(leaderboard_path, "encoder=test_resnet", "image_size=16", f"weights={weights}") == 2, weights
        assert re.search(message, one_line_error(capsys, leaderboard_path))


def test_an_unreadable_weights_file_is_one_line(tmp_path, capsys, leaderboard_path, monkeypatch):
    locked = tmp_path / "locked.pt"
    torch.save({}, locked)

    def denied(*_):  # what a file without read permission gives (root reads any file, so it is simulated)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("clbench.backbones.open", denied, raising=False)
    assert run_cli(leaderboard_path, "encoder=test_resnet", f"weights={locked}") == 2
    assert "cannot read weights file" in one_line_error(capsys, leaderboard_path)


def test_weights_are_loaded_with_weights_only(tmp_path, monkeypatch):
    calls = []
    original = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or original(*a, **k))
    torch.save(make_backbone("small_cnn", (1, 8, 8)).state_dict(), tmp_path / "net.pt")
    make_backbone("small_cnn", (1, 8, 8), weights=str(tmp_path / "net.pt"))
    assert calls == [True]


# the hub

def test_hub_without_network_fails_after_one_short_probe(no_network, capsys, leaderboard_path):
    assert run_cli(leaderboard_path, "encoder=test_resnet", "weights=hub") == 2
    err = one_line_error(capsys, leaderboard_path)
    assert "cannot be reached" in err and "--set weights=PATH" in err and "torch.save(timm.create_model(" in err
    assert no_network == [(huggingface_hub.constants.ENDPOINT, "HEAD", hub.PROBE_SECONDS)]  # once: no retries


def test_hub_in_offline_mode_does_not_probe(no_network, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ClbenchError, match="cannot be reached"):
        make_backbone("test_resnet", (3, 8, 8), weights="hub")
    assert no_network == []


def test_hub_weights_in_the_cache_load_without_network(no_network, tmp_path, monkeypatch):
    reference = make_backbone("test_resnet", (3, 8, 8))
    torch.save(reference.model.state_dict(), tmp_path / "pytorch_model.bin")
    asked = []

    def cache(repo: str, file: str, **_) -> str | None:
        asked.append(file)
        return str(tmp_path / file) if file == "pytorch_model.bin" else None

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", cache)
    loaded = make_backbone("test_resnet", (3, 8, 8), weights="hub")
    assert asked == ["model.safetensors", "pytorch_model.bin"]
    assert no_network == []
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(reference.eval()(x), loaded.eval()(x))
