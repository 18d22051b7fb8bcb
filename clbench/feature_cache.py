"""Frozen-encoder features, computed once per (encoder, weights, dataset, transform) and kept on disk.

Every feature-level learner, seed and evaluation of a scenario then reads the same cached
embeddings instead of running the encoder again: the field's slowest habit, removed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clbench.augment import ImageTransform, resized_shape
from clbench.backbones import input_config, make_backbone, weights_id
from clbench.datasets import LabeledArrays
from clbench.datasets.cache import cached_array
from clbench.device import synchronize
from clbench.errors import ClbenchError
from clbench.guard import one_line
from clbench.inference import channels_last, inference_copy
from clbench.precision import autocast

SAMPLED_IMAGES = 64  # images hashed (evenly spaced) to identify a partition's content cheaply


def partition_identity(part: LabeledArrays) -> str:
    """A cheap content hash of a partition: shape, every label, and evenly spaced sample images."""
    digest = hashlib.sha256(json.dumps([list(part.images.shape), str(part.images.dtype)]).encode())
    digest.update(np.ascontiguousarray(part.labels, dtype="<i8").tobytes())
    picks = np.linspace(0, len(part) - 1, num=min(SAMPLED_IMAGES, len(part)), dtype=np.int64) if len(part) else []
    for i in picks:
        digest.update(np.ascontiguousarray(part.images[i]).tobytes())
    return digest.hexdigest()[:16]


class FrozenEncoder:
    """The scenario's encoder with its weights and input transform, built once per run; it encodes in
    the run's resolved `precision` ("bf16": under bf16 autocast, on the CPU as on CUDA; "fp32": without)."""

    def __init__(self, name: str, weights: str, image_shape: tuple[int, ...], spec_size: int,
                 spec_mean: tuple[float, ...], spec_std: tuple[float, ...], normalize: bool, device: torch.device,
                 precision: str = "fp32"):
        self.name, self.weights, self.precision = name, weights, precision
        self.weights_id = weights_id(name, weights)
        with torch.random.fork_rng(devices=[]):  # a random-init encoder is the same in every run
            torch.manual_seed(0)
            self.model: nn.Module = make_backbone(name, resized_shape(image_shape, spec_size), weights=weights,
                                                  role="encoder")
        self.model = inference_copy(self.model.to(device))
        cfg = input_config(self.model)
        channels = image_shape[0]
        if cfg is not None:  # timm: the pretrained statistics, and its input size unless the spec sets one
            size, mean, std = spec_size or cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"])
        else:
            size, mean, std = spec_size, spec_mean, spec_std
        if not normalize:
            mean, std = (0.0,) * channels, (1.0,) * channels
        self.transform = ImageTransform(size, mean, std)
        self.device = device

    @property
    def out_dim(self) -> int:
        return int(self.model.out_dim)

    def key(self, dataset: str, part: LabeledArrays) -> str:
        """Cache key: encoder, weights identifier, dataset content, transform and precision."""
        fields = [self.name, self.weights_id, dataset, partition_identity(part), self.transform.size,
                  list(self.transform.mean), list(self.transform.std), self.precision]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:20]

    @torch.no_grad()
    def encode_into(self, images: torch.Tensor, out: np.ndarray, batch: int) -> None:
        """Encode uint8 images (any device) in batches into the float32 array `out`; a failure (out of
        memory, a shape the encoder refuses) is one ClbenchError line naming the encoder."""
        for i in range(0, len(images), batch):
            x = channels_last(self.transform(images[i : i + batch].to(self.device, non_blocking=True)))
            try:
                with autocast(self.precision, self.device):
                    z = self.model(x)
                out[i : i + batch] = z.float().flatten(1).cpu().numpy()
            except torch.OutOfMemoryError:
                raise ClbenchError(f"encoder '{self.name}' ran out of memory on {tuple(x.shape)} batches on "
                                   f"{self.device}; lower eval_batch_size (--set eval_batch_size=N) or image_size"
                                   ) from None
            except Exception as exc:  # the encoder's failure is reported in one line, not as a traceback
                raise ClbenchError(f"encoder '{self.name}' failed on {tuple(x.shape)} inputs: {one_line(exc)}; "
                                   f"check encoder, image_size and weights") from None


@dataclass
class FeatureReport:
    """What the cache did for one run: "hit", "miss" or "off", and the seconds spent on features."""

    status: str = "off"
    seconds: float = 0.0


class FeatureCache:
    """Features on disk under `folder` (None: computed in memory every run)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None

    def off(self, encoder: FrozenEncoder) -> bool:
        """No disk cache: none configured, or the identity encoder (its features are the pixels)."""
        return self.folder is None or encoder.name == "flatten"

    def features(self, encoder: FrozenEncoder, dataset: str, parts: dict[str, LabeledArrays],
                 images: dict[str, torch.Tensor], batch: int) -> tuple[dict[str, torch.Tensor], FeatureReport]:
        """Features of every partition on the encoder's device, from the cache when present."""
        start = time.perf_counter()
        encoded, out = [], {}
        for name, part in parts.items():
            shape = (len(part), encoder.out_dim)

            def fill(array: np.ndarray, name: str = name) -> None:
                encoded.append(name)
                encoder.encode_into(images[name], array, batch)

            if self.off(encoder):
                array = np.empty(shape, dtype=np.float32)
                fill(array)
            else:
                path = self.folder / f"{encoder.name.replace('/', '_')}-{encoder.key(dataset, part)}-{name}.npy"
                array = cached_array(path, shape, fill, dtype=np.float32)
            out[name] = torch.from_numpy(np.array(array)).to(encoder.device)
        synchronize(encoder.device)
        status = "off" if self.off(encoder) else ("miss" if encoded else "hit")
        return out, FeatureReport(status, time.perf_counter() - start)
