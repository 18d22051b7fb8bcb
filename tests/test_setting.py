"""The setting identity: equal exactly when every number-changing field of the resolved spec is."""

from __future__ import annotations

import dataclasses

import pytest

from clbench.errors import ClbenchError
from clbench.scenario import ScenarioSpec
from clbench.setting import setting_identity

SPEC = ScenarioSpec(name="s")


@pytest.mark.parametrize("change", [
    {"encoder": "small_cnn"}, {"backbone": "conv4"}, {"epochs": 2}, {"batch_size": 16}, {"image_size": 32},
    {"encoder_normalize": False}, {"mean": (0.4,)}, {"std": (0.2,)}, {"augment": "crop-flip"}, {"weights": "hub"},
    {"class_order": "1"}, {"protocol": "task-incremental"}, {"online": True}, {"shot": 5},
])
def test_every_setting_changes_the_identity(change):
    assert setting_identity(dataclasses.replace(SPEC, **change)) != setting_identity(SPEC)


def test_names_descriptions_and_how_a_value_was_set_do_not():
    renamed = dataclasses.replace(SPEC, name="other", description="words")
    assert setting_identity(renamed) == setting_identity(SPEC)
    assert setting_identity(SPEC.with_overrides({"epochs": "1"})) == setting_identity(SPEC)  # the default, set again
    assert setting_identity(SPEC.with_overrides({"epochs": "2"})) == setting_identity(dataclasses.replace(SPEC, epochs=2))


def test_a_weights_file_counts_by_its_content(tmp_path):
    first, copy = tmp_path / "a.pt", tmp_path / "b.pt"
    first.write_bytes(b"weights one")
    copy.write_bytes(b"weights one")
    ids = {p: setting_identity(dataclasses.replace(SPEC, weights=str(p))) for p in (first, copy)}
    assert ids[first] == ids[copy] != setting_identity(SPEC)
    first.write_bytes(b"weights two, edited")
    assert setting_identity(dataclasses.replace(SPEC, weights=str(first))) != ids[first]


@pytest.mark.parametrize("weights", ["does-not-exist.pt", "."])
def test_unreadable_weights_are_one_line(weights):
    with pytest.raises(ClbenchError, match="weights"):
        setting_identity(dataclasses.replace(SPEC, weights=weights))
