"""The chance level of a protocol's headline figure: 100 / the number of classes a guess chooses
among when the headline is measured. Class-incremental, FSCIL and CoRe50: every class seen by the
end (CoRe50 NI: all classes from the start); task-incremental: the classes of one task; few-shot
episodes: the way; federated: the base classes and every mission's new ones."""

from __future__ import annotations

import json
import math
from functools import lru_cache

from clbench.datasets.core50 import CATEGORY_NAMES
from clbench.errors import ClbenchError
from clbench.scenario import ScenarioSpec, load_spec

DATASET_CLASSES = {"digits": 10, "cifar100": 100, "cifar100-fscil": 100, "mini-imagenet": 100,
                   "mini-imagenet-fscil": 100, "core50": 50}
"""The classes of each shipped dataset (objects, for CoRe50), for rows written before rows recorded
their chance level; tests check each against its loader where the data is present."""


def chance_accuracy(spec: ScenarioSpec, num_classes: int) -> float:
    """Chance accuracy (%) of the headline of `spec`'s protocol on a dataset of `num_classes`
    classes (at the spec's level: CoRe50 categories count as classes when `level = "category"`)."""
    if spec.protocol == "episodes":
        candidates = spec.way
    elif spec.protocol == "task-incremental":
        candidates = num_classes / spec.n_experiences
    elif spec.protocol == "federated":
        candidates = spec.n_base_classes + (spec.n_experiences - 1) * spec.clients * spec.classes_per_client
    else:
        candidates = num_classes
    return 100.0 / candidates


@lru_cache(maxsize=256)
def derived_chance(scenario: str, overrides: str) -> float:
    """The chance level of a row that does not record it, from its scenario (a shipped spec, as it
    is now) with its `scenario_overrides` (JSON) and `DATASET_CLASSES`; NaN where that is not
    possible (a spec file of the user's, an unknown dataset, overrides the spec no longer takes)."""
    try:
        spec = load_spec(scenario).with_overrides(json.loads(overrides or "{}"))
    except (ClbenchError, ValueError, TypeError):
        return math.nan
    if spec.dataset not in DATASET_CLASSES:
        return math.nan
    classes = len(CATEGORY_NAMES) if spec.level == "category" else DATASET_CLASSES[spec.dataset]
    return chance_accuracy(spec, classes)
