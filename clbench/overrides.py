"""The command line's `--seed` and `--set KEY=VALUE`: parsed, checked and routed to the scenario or
to the learners, with one meaning per key."""

from __future__ import annotations

from typing import Any

from clbench.errors import ClbenchError

SCENARIO_SCOPE = "scenario"
MAX_SEED = 2**63 - 1


def parse_seeds(text: str) -> list[int]:
    """Comma-separated seeds: integers in [0, 2**63 - 1], each at most once."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ClbenchError(f"--seed expects integers separated by commas, got '{text}'") from None
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise ClbenchError(f"--seed {bad[0]} is out of range: seeds are integers from 0 to {MAX_SEED}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ClbenchError(f"--seed repeats {', '.join(map(str, repeated))}: give each seed once "
                           "(a repeated seed would only add an identical run)")
    return seeds


def parse_settings(pairs: list[str]) -> dict[str, str]:
    """`KEY=VALUE` pairs (the last one wins for a key given twice)."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ClbenchError(f"--set expects KEY=VALUE, got '{pair}'")
        settings[key.strip()] = value.strip()
    return settings


def route_settings(settings: dict[str, str], learners: list[type], spec_fields: dict[str, Any]) -> tuple[dict, dict]:
    """Split `--set` keys into scenario overrides and per-learner hyper-parameters (validated).

    A key may be scoped: `scenario.KEY` is a scenario setting, `LEARNER.KEY` a hyper-parameter of
    that learner only. A bare key goes where it is declared; one that names both a scenario setting
    and a hyper-parameter of a chosen learner is refused, since one value cannot mean both.
    """
    from clbench.learner import validate

    by_name = {cls.name: cls for cls in learners}
    scenario: dict[str, str] = {}
    per_learner: dict[type, dict[str, str]] = {cls: {} for cls in learners}
    unknown = []
    for key, value in settings.items():
        scope, dot, bare = key.rpartition(".")
        if dot:
            if scope == SCENARIO_SCOPE:
                if bare not in spec_fields:
                    raise ClbenchError(f"--set {key}: the scenario has no setting '{bare}' "
                                       f"(settings: {', '.join(spec_fields)})")
                scenario[bare] = value
            elif scope in by_name:
                if bare not in by_name[scope].hyperparameters():
                    raise ClbenchError(f"--set {key}: learner '{scope}' has no hyper-parameter '{bare}' "
                                       f"(see clbench list --learner {scope})")
                per_learner[by_name[scope]][bare] = value
            else:
                raise ClbenchError(f"--set {key}: '{scope}' is neither 'scenario' nor a chosen learner "
                                   f"({', '.join(by_name)})")
            continue
        owners = [cls for cls in learners if key in cls.hyperparameters()]
        if key in spec_fields and owners:
            raise ClbenchError(f"--set {key} is ambiguous: it is a scenario setting and a hyper-parameter of "
                               f"{', '.join(c.name for c in owners)}; write {SCENARIO_SCOPE}.{key}={value} or "
                               f"{owners[0].name}.{key}={value}")
        if key in spec_fields:
            scenario[key] = value
        elif owners:
            for cls in owners:
                per_learner[cls][key] = value
        else:
            unknown.append(key)
    if unknown:
        owners = _declared_elsewhere(unknown[0])
        if owners:
            raise ClbenchError(f"--set {unknown[0]}: none of the chosen learners ({', '.join(by_name)}) takes "
                               f"'{unknown[0]}'; it is a hyper-parameter of {', '.join(owners)}")
        accepted = sorted(set(spec_fields) | {h for c in learners for h in c.hyperparameters()})
        raise ClbenchError(f"unknown --set key {', '.join(map(repr, unknown))} for this scenario and these learners; "
                           f"accepted: {', '.join(accepted)} (scope one as scenario.KEY or LEARNER.KEY)")
    return scenario, {cls: validate(cls, given) for cls, given in per_learner.items()}


def _declared_elsewhere(key: str) -> list[str]:
    """The registered learners that declare hyper-parameter `key` (to explain why a chosen one refuses it)."""
    from clbench.learner import available_learners, get_learner

    owners = []
    for name in available_learners():
        try:
            if key in get_learner(name).hyperparameters():
                owners.append(name)
        except ClbenchError:  # a broken plugin does not hide the answer for the others
            continue
    return owners
