"""The replay buffer every replay learner shares (ER, ER-ACE, DER++, AdaB²N): an exact reservoir of
(input, label[, logits]) on the learner's device, images stored once as uint8."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from clbench.errors import ClbenchError

# Reservoir draws: j = r mod n with r uniform on [0, 2**62); the modulo bias is below n / 2**62.
_DRAW_RANGE = 2**62


def reservoir_writes(seen: int, batch: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Vitter's algorithm R applied to a batch of `batch` new samples, vectorised and exact.

    `seen` samples came before this batch; batch sample k (0-based) is sample number n = seen + k + 1
    of the stream. Sequential algorithm R stores it in slot n - 1 while the buffer is not full
    (n <= size); afterwards it draws j uniform on {0, ..., n - 1} and, if j < size, overwrites slot j
    (so it is kept with probability size / n, in a uniformly chosen slot).

    All the batch's draws are made at once from `generator` (`r = randint(0, 2**62, (batch,))`,
    `j = r mod n`, n = seen + 1, ..., seen + batch). A batch can send several samples to the same slot
    (two replacements drawing the same j, or a replacement drawing a slot that an earlier sample of the
    same batch has just filled, when the batch straddles the moment the buffer fills): sequentially,
    the later sample overwrites the earlier one, so only the last writer of each slot is kept. The
    result is therefore identical, draw for draw, to running algorithm R one sample at a time, and the
    returned slots are distinct, so writing them with one indexed assignment is well defined on any
    device (an indexed assignment with repeated indices has no defined winner).

    Returns `(slots, sources)`, CPU int64 tensors of equal length: write batch sample `sources[i]`
    into buffer slot `slots[i]`.
    """
    n = torch.arange(seen + 1, seen + batch + 1)
    j = torch.randint(0, _DRAW_RANGE, (batch,), generator=generator) % n
    # target slot per sample: n - 1 while filling; j if j < size afterwards; -1 = not kept
    target = torch.where(n <= size, n - 1, torch.where(j < size, j, -1))
    sources = torch.arange(batch)
    kept = target >= 0
    target, sources = target[kept], sources[kept]
    if len(target) == 0:
        return target, sources
    slots, inverse = torch.unique(target, return_inverse=True)
    last = torch.full((len(slots),), -1, dtype=torch.int64).scatter_reduce(0, inverse, sources, reduce="amax")
    return slots, last


class ImageCodec:
    """Normalised float images <-> the uint8 pixels they came from, for inputs normalised as
    (x / 255 - mean) / std (`clbench.augment.ImageTransform`): decoding gives the runner's floats back
    exactly for unresized images; resized ones are rounded to the nearest pixel value."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.mean = torch.tensor(tuple(mean), device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(tuple(std), device=device).view(1, -1, 1, 1) * 255

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() * self.std + self.mean).round_().clamp_(0, 255).to(torch.uint8)

    def decode(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() - self.mean) / self.std


class ReservoirBuffer:
    """`size` slots of (input, label) pairs, plus the logits given at insertion when `keeps_logits`
    (DER++), filled by exact reservoir sampling (`reservoir_writes`): the n-th sample offered is kept
    with probability size / n. Images are stored as uint8 when a `codec` is given (inputs otherwise,
    e.g. features), allocated at the first batch. All draws come from a CPU generator seeded with
    `seed` (the same on any device); `state`/`load` carry everything, generator included.

    No host synchronisation: the counts are host integers, and the drawn slots reach the device by
    non-blocking copies (a blocking host-to-device copy waits for every kernel queued before it).
    """

    def __init__(self, size: int, device: torch.device, seed: int, codec: ImageCodec | None = None,
                 keeps_logits: bool = False) -> None:
        self.size, self.device, self.codec, self.keeps_logits = size, device, codec, keeps_logits
        self.generator = torch.Generator().manual_seed(seed % 2**63)
        self.seen = 0
        self.x: torch.Tensor | None = None  # size x input shape (uint8 with a codec)
        self.y: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None

    @property
    def filled(self) -> int:
        """Number of samples held: slots 0 .. filled - 1."""
        return min(self.seen, self.size)

    def _allocate(self, x_like: torch.Tensor, y_like: torch.Tensor, logits_like: torch.Tensor | None) -> None:
        self.x = torch.zeros((self.size, *x_like.shape[1:]), dtype=x_like.dtype, device=self.device)
        self.y = torch.zeros(self.size, dtype=y_like.dtype, device=self.device)
        self.logits = None if logits_like is None else \
            torch.zeros((self.size, *logits_like.shape[1:]), dtype=logits_like.dtype, device=self.device)

    @torch.no_grad()
    def add(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None) -> None:
        """Offer a batch (logits required exactly when the buffer keeps them)."""
        if (logits is not None) != self.keeps_logits:
            raise ValueError("logits must be given exactly when the buffer keeps them")
        stored = self.codec.encode(x) if self.codec else x.detach()
        logits = None if logits is None else logits.detach().float()
        if self.x is None:
            self._allocate(stored, y, logits)
        slots, sources = reservoir_writes(self.seen, len(x), self.size, self.generator)
        self.seen += len(x)
        if len(slots):  # CPU tensors: their length is known on the host
            slots, sources = slots.to(self.device, non_blocking=True), sources.to(self.device, non_blocking=True)
            self.x[slots] = stored[sources].to(self.x.dtype)
            self.y[slots] = y[sources].to(self.y.dtype)
            if logits is not None:
                self.logits[slots] = logits[sources]

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """min(k, filled) samples drawn uniformly without replacement, as (inputs decoded, labels,
        stored logits or None); None when nothing would be drawn."""
        k = min(k, self.filled)
        if k <= 0:
            return None
        pick = torch.randperm(self.filled, generator=self.generator)[:k].to(self.device, non_blocking=True)
        x = self.codec.decode(self.x[pick]) if self.codec else self.x[pick]
        return x, self.y[pick], None if self.logits is None else self.logits[pick]

    def state(self) -> dict[str, Any]:
        """Count seen, generator state and the filled slots."""
        state: dict[str, Any] = {"seen": self.seen, "generator": self.generator.get_state()}
        if self.x is not None:
            state["x"], state["y"] = self.x[: self.filled], self.y[: self.filled]
            if self.logits is not None:
                state["logits"] = self.logits[: self.filled]
        return state

    def load(self, state: dict[str, Any], owner: str) -> None:
        """Restore a `state()`; one saved with another size is a one-line error naming `owner`."""
        seen = int(state["seen"])
        filled, held = min(seen, self.size), len(state["y"]) if "y" in state else 0
        if held != filled:
            raise ClbenchError(f"{owner}: the state holds {held} buffered samples after {seen} seen, but "
                               f"buffer_size={self.size} implies {filled} (saved with another buffer_size?)")
        if held and ("logits" in state) != self.keeps_logits:
            raise ClbenchError(f"{owner}: the state's buffer {'has' if 'logits' in state else 'lacks'} logits; "
                               f"it was saved with another loss")
        self.seen = seen
        self.generator.set_state(state["generator"])
        self.x = self.y = self.logits = None
        if held:
            self._allocate(state["x"], state["y"], state.get("logits"))
            self.x[:filled], self.y[:filled] = state["x"], state["y"]
            if self.logits is not None:
                self.logits[:filled] = state["logits"]
