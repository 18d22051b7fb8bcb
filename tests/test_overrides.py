"""`--seed` and `--set`: one meaning per key, each seed once."""

from __future__ import annotations

import pytest

from clbench.errors import ClbenchError
from clbench.learner import get_learner
from clbench.overrides import parse_seeds, route_settings
from clbench.scenario import ScenarioSpec

FIELDS = ScenarioSpec.fields()


def test_seeds_parse_in_order():
    assert parse_seeds("3, 0,1") == [3, 0, 1]
    assert parse_seeds(str(2**63 - 1)) == [2**63 - 1]


@pytest.mark.parametrize("text,message", [
    ("0,0", "repeats 0"),
    ("1,2,1,2", "repeats 1, 2"),
    ("99999999999999999999", "out of range"),
    ("-1", "out of range"),
    ("one", "expects integers"),
])
def test_bad_seeds_are_refused(text, message):
    with pytest.raises(ClbenchError, match=message):
        parse_seeds(text)


def test_a_bare_key_goes_where_it_is_declared():
    finetune, nmc = get_learner("finetune"), get_learner("nmc")
    scenario, configs = route_settings({"epochs": "2", "lr": "0.01"}, [finetune, nmc], FIELDS)
    assert scenario == {"epochs": "2"}
    assert configs[finetune]["lr"] == 0.01
    assert configs[nmc] == {name: hp.default for name, hp in nmc.hyperparameters().items()}


def test_a_key_with_two_meanings_is_refused_naming_both():
    simpleshot = get_learner("simpleshot")
    with pytest.raises(ClbenchError, match=r"ambiguous.*scenario\.epochs=3 or simpleshot\.epochs=3"):
        route_settings({"epochs": "3"}, [simpleshot], FIELDS)


def test_scoped_keys_address_each_meaning():
    simpleshot, finetune = get_learner("simpleshot"), get_learner("finetune")
    scenario, configs = route_settings({"scenario.epochs": "1", "simpleshot.epochs": "3"}, [simpleshot, finetune],
                                       FIELDS)
    assert scenario == {"epochs": "1"}
    assert configs[simpleshot]["epochs"] == 3
    assert "epochs" not in configs[finetune]


@pytest.mark.parametrize("key,message", [
    ("scenario.lr", "scenario has no setting 'lr'"),
    ("nmc.lr", "learner 'nmc' has no hyper-parameter 'lr'"),
    ("replay.lr", "'replay' is neither 'scenario' nor a chosen learner"),
    ("bogus", "unknown --set key 'bogus'"),
])
def test_bad_scoped_keys_are_one_line(key, message):
    with pytest.raises(ClbenchError, match=message):
        route_settings({key: "1"}, [get_learner("nmc")], FIELDS)


def test_a_key_only_other_learners_take_names_them():
    with pytest.raises(ClbenchError, match=r"--set norm: none of the chosen learners \(nmc\) takes 'norm'; "
                                           r"it is a hyper-parameter of .*adab2n.*replay"):
        route_settings({"norm": "adab2n"}, [get_learner("nmc")], FIELDS)
