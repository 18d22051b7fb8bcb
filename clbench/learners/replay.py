"""Experience Replay (ER): fine-tuning plus a reservoir-sampled episodic memory."""

from __future__ import annotations

from typing import Annotated, Any

import torch

from clbench.errors import ClbenchError
from clbench.learner import Context, Range
from clbench.learners.finetune import Finetune

# Added to context.seed so the learner's draws do not repeat the runner's shuffling stream (seeded with seed).
_SEED_OFFSET = 0x7265706C6179  # "replay" in ASCII
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


class Replay(Finetune):
    """Experience Replay (ER): fine-tuning with a reservoir-sampled buffer replayed in every step.

    The ER baseline of Chaudhry et al. 2019 ("On Tiny Episodic Memories in Continual Learning") and
    Rolnick et al. 2019 ("Experience Replay for Continual Learning"): the fine-tuning network and
    optimizer (see `finetune`), plus an episodic memory of `buffer_size` (input, label) pairs on the
    learner's device. Each `learn(x, y)` step:

    1. draws `replay_batch_size` samples (0: as many as the stream batch; at most as many as the
       buffer holds) uniformly without replacement from the buffer, concatenates them to the stream
       batch, and takes one SGD/Adam step on the mean cross-entropy of that single forward pass
       (the stream batch alone while the buffer is still empty);
    2. then offers the stream batch to the buffer by reservoir sampling (Vitter's algorithm R): the
       n-th sample of the stream is stored while the buffer is not full, and afterwards kept with
       probability buffer_size / n, replacing a uniformly chosen slot. The batch is processed in one
       vectorised step that is exactly equivalent to offering its samples one by one (see
       `reservoir_writes`: of several samples of a batch sent to the same slot, the last one wins).

    The buffer stores the inputs as the learner receives them (after the run's augmentation, if any)
    and is allocated at the first batch's shape. Task-free (no boundaries, no task ids) and online.
    All random draws come from a CPU `torch.Generator` seeded from `context.seed` (the same draws on
    any device); `state_dict` holds the network, optimizer, buffer, count of samples seen and the
    generator state, so a restored learner continues exactly as the original would.
    """

    name = "replay"
    wants = "images"
    needs_task_ids = False
    online = True

    def __init__(self, context: Context, *, buffer_size: Annotated[int, Range(ge=1)] = 500,
                 replay_batch_size: Annotated[int, Range(ge=0)] = 0, **finetune: Any) -> None:
        super().__init__(context, **finetune)
        self.buffer_size = buffer_size
        self.replay_batch_size = replay_batch_size
        self.generator = torch.Generator().manual_seed((context.seed + _SEED_OFFSET) % 2**63)
        self.seen = 0  # samples offered to the buffer so far
        self.buffer_x: torch.Tensor | None = None  # buffer_size x input shape, allocated at the first batch
        self.buffer_y: torch.Tensor | None = None

    @property
    def filled(self) -> int:
        """Number of samples the buffer holds: slots 0 .. filled - 1."""
        return min(self.seen, self.buffer_size)

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> None:
        if self.buffer_x is None:
            self._allocate(x.shape[1:], x.dtype, y.dtype)
        k = min(self.replay_batch_size or len(x), self.filled)
        if k > 0:
            pick = torch.randperm(self.filled, generator=self.generator)[:k].to(self.device)
            super().learn(torch.cat([x, self.buffer_x[pick]]), torch.cat([y, self.buffer_y[pick]]), task)
        else:
            super().learn(x, y, task)
        self._remember(x, y)

    def _allocate(self, shape: torch.Size, x_dtype: torch.dtype, y_dtype: torch.dtype) -> None:
        self.buffer_x = torch.zeros((self.buffer_size, *shape), dtype=x_dtype, device=self.device)
        self.buffer_y = torch.zeros(self.buffer_size, dtype=y_dtype, device=self.device)

    @torch.no_grad()
    def _remember(self, x: torch.Tensor, y: torch.Tensor) -> None:
        slots, sources = reservoir_writes(self.seen, len(x), self.buffer_size, self.generator)
        self.seen += len(x)
        if len(slots):
            slots, sources = slots.to(self.device), sources.to(self.device)
            self.buffer_x[slots] = x.detach()[sources].to(self.buffer_x.dtype)
            self.buffer_y[slots] = y[sources].to(self.buffer_y.dtype)

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "seen": self.seen, "generator": self.generator.get_state()}
        if self.buffer_x is not None:
            state["buffer_x"], state["buffer_y"] = self.buffer_x[: self.filled], self.buffer_y[: self.filled]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        seen = int(state["seen"])
        filled = min(seen, self.buffer_size)
        held = len(state["buffer_y"]) if "buffer_y" in state else 0
        if held != filled:
            raise ClbenchError(f"learner 'replay': the state holds {held} buffered samples after {seen} seen, "
                               f"but buffer_size={self.buffer_size} implies {filled} (saved with another buffer_size?)")
        super().load_state_dict(state)
        self.seen = seen
        self.generator.set_state(state["generator"])
        if held == 0:
            self.buffer_x = self.buffer_y = None
            return
        self._allocate(state["buffer_x"].shape[1:], state["buffer_x"].dtype, state["buffer_y"].dtype)
        self.buffer_x[:filled] = state["buffer_x"]
        self.buffer_y[:filled] = state["buffer_y"]
