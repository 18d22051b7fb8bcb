"""The numeric precision of a run: what `--precision auto|bf16|fp32` resolves to on a device, and the
autocast context the runner calls a learner's `learn` and `predict` (and the frozen encoder) under.

The resolved precision ("bf16" or "fp32", never "auto") is part of the scenario spec a run records,
so it enters the setting identity: rows computed in different precisions are never averaged.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Literal, get_args

import torch

from clbench.errors import ClbenchError

if TYPE_CHECKING:
    from clbench.scenario import Scenario, ScenarioSpec

Precision = Literal["auto", "bf16", "fp32"]
"""auto: bf16 on a CUDA device that supports bfloat16, fp32 everywhere else."""
PRECISIONS: tuple[str, ...] = get_args(Precision)

_BF16_DEVICES = ("cpu", "cuda")


def resolve_precision(requested: str, device: torch.device) -> str:
    """"bf16" or "fp32": `requested` itself, or for "auto" bf16 on a CUDA device with bfloat16 support
    and fp32 otherwise. bf16 asked for where autocast cannot give it is a one-line error."""
    if requested not in PRECISIONS:
        raise ClbenchError(f"unknown precision '{requested}' (accepted: {', '.join(PRECISIONS)})")
    # a CUDA device this process cannot see (a sweep driver resolving for its Ray workers) is taken to support
    # bf16; the worker resolves again on its own device, and fails in one line if it does not
    cuda_bf16 = not torch.cuda.is_available() or torch.cuda.is_bf16_supported()
    bf16_ok = device.type == "cpu" or (device.type == "cuda" and cuda_bf16)
    if requested == "auto":
        return "bf16" if device.type == "cuda" and bf16_ok else "fp32"
    if requested == "bf16" and not bf16_ok:
        where = "this CUDA device has no bfloat16 support" if device.type == "cuda" else \
            f"bf16 autocast runs on {' and '.join(_BF16_DEVICES)} only"
        raise ClbenchError(f"--precision bf16 on {device}: {where}; use --precision fp32")
    return requested


def settle_spec(spec: ScenarioSpec, device: torch.device, requested: str = "auto") -> ScenarioSpec:
    """`spec` with its precision resolved for `device`: the spec's own when it names one (a recipe's
    settings, `--set precision=...`), else `requested` (`--precision`); asking for two different ones
    is a one-line error. The spec's overrides are left as they were: the precision is recorded in its
    own column and in the setting identity."""
    if requested != "auto" and spec.precision not in ("auto", requested):
        raise ClbenchError(f"scenario '{spec.name}' sets precision = {spec.precision}, and --precision {requested} "
                           f"was asked for: give one")
    chosen = resolve_precision(spec.precision if spec.precision != "auto" else requested, device)
    return spec if chosen == spec.precision else dataclasses.replace(spec, precision=chosen)


def with_precision(scenario: Scenario, device: torch.device, requested: str = "auto") -> Scenario:
    """`scenario` with its spec's precision resolved for `device` (`settle_spec`)."""
    spec = settle_spec(scenario.spec, device, requested)
    return scenario if spec is scenario.spec else dataclasses.replace(scenario, spec=spec)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16: `torch.autocast` on the device's type with dtype bfloat16; fp32: no autocast at all (the
    arithmetic of a run without this module, bit for bit)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"autocast needs a resolved precision (bf16 or fp32), got '{precision}'")
