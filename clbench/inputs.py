"""The scenario's data for one run: placed once, fed to the learner per batch."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from clbench.augment import ImageTransform, random_crop_flip, resized_shape
from clbench.backbones import weights_id
from clbench.errors import ClbenchError
from clbench.feature_cache import FeatureCache, FeatureReport, FrozenEncoder
from clbench.scenario import Scenario


def _on_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """The array as a tensor on the device; a read-only memory map is shared, never written, on the CPU."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(np.asarray(array)).to(device)


class Inputs:
    """The scenario's data, placed once: uint8 images on the device (normalised and augmented per
    batch there), or the frozen encoder's features (from the feature cache)."""

    def __init__(self, scenario: Scenario, wants: str, device: torch.device, seed: int,
                 cache: FeatureCache | None) -> None:
        spec = self.spec = scenario.spec
        self.augment_generator = torch.Generator().manual_seed(seed + 1)
        parts = {"train": scenario.dataset.partition("train"), "test": scenario.dataset.partition("test")}
        self.y_train, self.y_test = (_on_device(parts[k].labels, device) for k in ("train", "test"))
        channels = parts["train"].images.shape[1]
        if len(spec.mean) not in (1, channels) or len(spec.std) not in (1, channels):
            raise ClbenchError(f"scenario '{spec.name}': mean/std need 1 or {channels} values")
        self.normalise = ImageTransform(spec.image_size, spec.mean, spec.std)
        native = tuple(parts["train"].images.shape[1:])
        self.image_shape = resized_shape(native, spec.image_size)
        self.features, self.cache = wants == "features", cache or FeatureCache(None)
        if self.features:
            encoder = self.encoder = FrozenEncoder(spec.encoder, spec.weights, native, spec.image_size, spec.mean,
                                                   spec.std, spec.encoder_normalize, device, spec.precision)
            images = {k: _on_device(p.images, torch.device("cpu")) for k, p in parts.items()}
            self.x, self.report = self.cache.features(encoder, scenario.dataset.name, parts, images,
                                                      spec.eval_batch_size)
            self.input_shape: tuple[int, ...] = (encoder.out_dim,)
            self.weights_id = encoder.weights_id
        else:
            self.x = {k: _on_device(p.images, device) for k, p in parts.items()}
            self.input_shape = self.image_shape
            self.report = FeatureReport()
            self.weights_id = weights_id(spec.backbone, spec.weights)

    def initialisation(self, scenario: Scenario) -> torch.Tensor:
        """The unlabelled inputs of the scenario's `init_set`, as the learner takes them (unaugmented): the
        first experience's training inputs, or the other dataset's train partition through the same
        encoder (its features cached like the scenario's) or image transform."""
        device = self.y_train.device
        if scenario.init_data is None:
            return self.batch("train", torch.as_tensor(scenario.stream.experiences[0].train_indices, device=device))
        part, name = scenario.init_data, self.spec.init_set
        size = (self.encoder.transform if self.features else self.normalise).size
        ours, theirs = (resized_shape(p.images.shape[1:], size) for p in (scenario.dataset.partition("train"), part))
        if ours != theirs:
            raise ClbenchError(f"init_set '{name}' gives {theirs} images, the scenario's dataset {ours}; give an init "
                               f"set with as many channels, and image_size to resize both alike")
        if self.features:
            x, report = self.cache.features(self.encoder, name, {"init": part},
                                            {"init": _on_device(part.images, torch.device("cpu"))},
                                            self.spec.eval_batch_size)
            status = "miss" if "miss" in (report.status, self.report.status) else self.report.status
            self.report = FeatureReport(status, self.report.seconds + report.seconds)
            return x["init"]
        return self.normalise(_on_device(part.images, device))

    def augments(self, experience: int) -> bool:
        """Whether the training batches of experience `experience` are augmented: the spec's `augment`,
        on every experience or (`augment_experiences = "first"`) on the first one only."""
        return (not self.features and self.spec.augment != "none"
                and (self.spec.augment_experiences == "all" or experience == 0))

    def batch(self, part: str, index: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """The learner's input for these samples, with the spec's augmentation if `augment`."""
        x = self.x[part][index]
        if self.features:
            return x
        if augment and self.spec.augment == "crop-flip":
            x = random_crop_flip(x, self.spec.crop_padding, self.augment_generator)
        return self.normalise(x)
