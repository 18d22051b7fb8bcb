"""Experience Replay and its online variants: ER, ER-ACE and DER++, over BatchNorm or AdaB²N."""

from __future__ import annotations

import dataclasses
import functools
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F

from clbench.errors import ClbenchError
from clbench.learner import Context, Range, Step
from clbench.learners.arrival_tasks import ArrivalTasks
from clbench.learners.buffer import ImageCodec, ReservoirBuffer
from clbench.learners.finetune import Finetune
from clbench.nets.norm import adab2n_layers, assign_tasks, regulariser

# Added to context.seed so the learner's draws do not repeat the runner's shuffling stream (seeded with seed).
_SEED_OFFSET = 0x7265706C6179  # "replay" in ASCII

Loss = Literal["er", "er-ace", "der"]

_APPLIES_TO = {"alpha": ("loss", "der"), "beta": ("loss", "der"), "kappa": ("norm", "adab2n"),
               "reg_weight": ("norm", "adab2n"), "reg_from_task": ("norm", "adab2n")}
"""Hyper-parameters that only act under one value of another: setting them otherwise is an error."""


def ace_hidden(seen: torch.Tensor, y: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """The classes (C,) bool that ER-ACE hides from the stream batch's softmax: none in the first task;
    from the second (`current` > 0, a 0-dim tensor) on, the classes `seen` so far that are absent from
    the stream labels `y`. Classes never seen stay, as do the batch's own. This is Mammoth's `er_ace`
    (which the official AdaB²N code runs): it masks from task 1 on and unmasks the batch's classes and
    every label from the largest seen one up, i.e. the unseen classes when labels come in task order;
    it also leaves that largest seen label unmasked, which this does not. Tensor ops only: no host sync."""
    present = torch.zeros_like(seen)
    present[y] = True
    return seen & ~present & (current > 0)


def ace_loss(stream_logits: torch.Tensor, y: torch.Tensor, replay_logits: torch.Tensor | None,
             replay_y: torch.Tensor | None, hidden: torch.Tensor) -> torch.Tensor:
    """ER-ACE's asymmetric cross-entropy (Caccia et al. ICLR 2022): the cross-entropy of the stream
    batch's logits with the `hidden` classes (C,) bool (`ace_hidden`) masked out, plus the plain
    cross-entropy of the replayed batch."""
    masked = stream_logits.masked_fill(hidden, torch.finfo(stream_logits.dtype).min)
    loss = F.cross_entropy(masked, y)
    return loss if replay_logits is None else loss + F.cross_entropy(replay_logits, replay_y)


class Replay(Finetune):
    """Experience Replay (ER), with ER-ACE's and DER++'s losses and BatchNorm or AdaB²N layers.

    The fine-tuning network and optimizer (see `finetune`) plus an episodic memory of `buffer_size`
    samples (`clbench.learners.buffer.ReservoirBuffer`: exact reservoir sampling, images kept once as
    uint8 on the learner's device). Each `learn(x, y)` step draws `replay_batch_size` samples (0: as
    many as the stream batch; at most what the buffer holds) uniformly without replacement, runs ONE
    forward pass over the stream batch and the replayed samples together, takes one optimizer step on
    the loss, then offers the stream batch to the buffer:

    - `er` (Chaudhry et al. 2019; Rolnick et al. 2019): the mean cross-entropy of the whole pass;
    - `er-ace` (Caccia et al. 2022): `ace_loss`, from the second task on the stream's logits of classes
      seen before but absent from the stream batch masked out (`ace_hidden`), + CE(replayed);
    - `der` (DER++, Buzzega et al. 2020): CE(stream) + alpha * MSE(logits of a replayed draw, the logits
      stored when those samples entered the buffer, never updated) + beta * CE(a second, independent
      draw); the buffer keeps the stream batch's logits of the step that offers it.

    `norm = adab2n` swaps every BatchNorm2d of the backbone for AdaB²N (`clbench.nets.norm`, Lyu et al.
    2023) with momentum schedule `kappa`, adds `reg_weight` x its statistics regulariser from task
    `reg_from_task` on, and tells the layers each sample's task. Tasks (for AdaB²N and ER-ACE's "second
    task") come from `ArrivalTasks`: a class's task is the rank of its first appearance in the stream
    divided by ceil(classes / experiences) (for an even class-incremental split: the experience that
    brought it), so they need no boundaries or task ids. Task-free and online. Replay starts as soon
    as the buffer holds a sample (the second step), as Caccia et al.'s task-free ER does (Mammoth's
    waits for the second task). A step never waits for the device (no `.item()`, no data-dependent
    shape on the device, non-blocking copies of the buffer's draws).
    The buffer stores what the learner receives (after the run's augmentation, if any). `state_dict`
    holds network, optimizer, buffer, its generator and the class-to-task table: a restored learner
    continues exactly as the original.
    """

    name = "replay"
    wants = "images"
    needs_task_ids = False
    online = True

    def __init__(self, context: Context, *, buffer_size: Annotated[int, Range(ge=1)] = 500,
                 replay_batch_size: Annotated[int, Range(ge=0)] = 0, loss: Loss = "er",
                 alpha: Annotated[float, Range(ge=0)] = 0.1, beta: Annotated[float, Range(ge=0)] = 0.5,
                 norm: Literal["bn", "adab2n"] = "bn", kappa: Annotated[float, Range(ge=0, le=1)] = 0.4,
                 reg_weight: Annotated[float, Range(ge=0)] = 1e-4, reg_from_task: Annotated[int, Range(ge=0)] = 1,
                 **finetune: Any) -> None:
        self._check_combination(replay_batch_size, buffer_size)
        if norm != "bn":  # finetune builds the network: through a factory that swaps the norm layers
            build = functools.partial(context.backbone, norm=norm,
                                      norm_options={"n_tasks": context.n_experiences, "kappa": kappa})
            super().__init__(dataclasses.replace(context, backbone=build), **finetune)
            self.context = context
        else:
            super().__init__(context, **finetune)
        self.replay_batch_size, self.loss, self.alpha, self.beta = replay_batch_size, loss, alpha, beta
        self.reg_weight, self.reg_from_task = reg_weight, reg_from_task
        input_norm = getattr(context.backbone, "input_norm", None)
        codec = ImageCodec(*input_norm, context.device) if self.wants == "images" and input_norm else None
        self.buffer = ReservoirBuffer(buffer_size, context.device, context.seed + _SEED_OFFSET, codec,
                                      keeps_logits=loss == "der")
        self.norm_layers = adab2n_layers(self.net)
        self.arrival = ArrivalTasks(context.num_classes, context.n_experiences, context.device)

    def _check_combination(self, replay_batch_size: int, buffer_size: int) -> None:
        """One-line errors for a replay batch larger than the buffer, and for a hyper-parameter set away
        from its default where it has no effect."""
        if replay_batch_size > buffer_size:
            raise ClbenchError(f"learner '{self.name}': replay_batch_size={replay_batch_size} exceeds "
                               f"buffer_size={buffer_size}; give a buffer at least as large as the replay batch")
        declared = type(self).hyperparameters()
        for key, (other, needed) in _APPLIES_TO.items():
            if self.config[key] != declared[key].default and self.config[other] != needed:
                raise ClbenchError(f"learner '{self.name}': {key} acts only with {other}={needed}, "
                                   f"not {other}={self.config[other]}; set {other}={needed} or leave {key} out")

    def learn(self, x: torch.Tensor, y: torch.Tensor, task: int | None) -> Step:
        self.net.train()
        k = self.replay_batch_size or len(x)
        draws = [self.buffer.sample(k) for _ in range(2 if self.loss == "der" else 1)]
        draws = [d for d in draws if d is not None]
        inputs = torch.cat([x, *(d[0] for d in draws)])
        labels = torch.cat([y, *(d[1] for d in draws)])
        current = self._assign_tasks(y, labels)
        logits = self.net(inputs)
        masked = self.task_mask(logits, labels)
        loss = self._loss(logits, masked, labels, len(y), draws, current)
        if self.norm_layers and self.reg_weight:  # from task reg_from_task on: a tensor condition, no host sync
            regularised = loss + self.reg_weight * regulariser(self.norm_layers)
            loss = torch.where(current >= self.reg_from_task, regularised, loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.buffer.add(x, y, logits[: len(y)] if self.loss == "der" else None)
        return Step(loss, masked[: len(y)])

    def _loss(self, raw: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, n: int, draws: list[tuple],
              current: torch.Tensor | None) -> torch.Tensor:
        """The step's loss over one forward pass (`raw` its logits, `logits` the same masked to each
        sample's task's classes by `TaskMask`: task-incremental with til_training = masked, a replayed
        sample to its own task's): the stream batch is the first `n` rows, the replayed draws follow in
        order; `current` is the current task (ER-ACE masks from the second on, on top of the task mask).
        Every cross-entropy reads `logits`; DER++'s logit regression reads `raw`."""
        if self.loss == "er":
            return F.cross_entropy(logits, labels)
        sizes = [n, *(len(draw[1]) for draw in draws)]
        (stream, *replayed), (y, *replayed_y) = logits.split(sizes), labels.split(sizes)
        if self.loss == "er-ace":
            hidden = ace_hidden(self.arrival.seen, y, current)
            return ace_loss(stream, y, replayed[0], replayed_y[0], hidden) if draws else \
                ace_loss(stream, y, None, None, hidden)
        loss = F.cross_entropy(stream, y)
        if draws:  # DER++: the first draw's logits against those stored, the second draw's labels
            regressed = raw.split(sizes)[1]
            loss = loss + self.alpha * F.mse_loss(regressed, draws[0][2].to(regressed.dtype))
            loss = loss + self.beta * F.cross_entropy(replayed[1], replayed_y[1])
        return loss

    def _assign_tasks(self, y: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Give classes first seen in `y` their task (`ArrivalTasks`), tell the AdaB²N layers the task of
        every sample in `labels`, and return the current task (a 0-dim tensor on the device), or None
        where neither the loss nor the norm needs it (ER and DER++ over BatchNorm)."""
        if not self.norm_layers and self.loss != "er-ace":
            return None
        current = self.arrival.update(y)
        if self.norm_layers:
            assign_tasks(self.norm_layers, self.arrival.table[labels], current)
        return current

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": self.buffer.state(), "class_task": self.arrival.table}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load(state["buffer"], f"learner '{self.name}'")
        super().load_state_dict(state)
        self.arrival.table.copy_(state["class_task"])
