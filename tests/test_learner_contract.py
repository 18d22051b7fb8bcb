"""The plugin contract: hyper-parameter declaration and validation, and the registry."""

import pytest
import torch

from clbench import Learner
from clbench.errors import ClbenchError
from clbench.learner import Context, available_learners, get_learner, validate
from typing import Literal


class Tunable(Learner):
    name = "tunable"

    def __init__(self, context, *, lr: float = 0.1, steps: int = 3, mode: Literal["a", "b"] = "a", flag: bool = False):
        super().__init__(context)
        self.lr, self.steps, self.mode, self.flag = lr, steps, mode, flag


CTX = Context(torch.device("cpu"), num_classes=3, input_shape=(2,), seed=0, backbone=None)


def test_defaults_and_config():
    learner = Tunable(CTX)
    assert learner.config == {"lr": 0.1, "steps": 3, "mode": "a", "flag": False}
    assert Tunable(CTX, lr=1, mode="b").config["lr"] == 1.0


def test_command_line_strings_are_converted():
    assert validate(Tunable, {"lr": "0.5", "steps": "7", "flag": "true"}) == {"lr": 0.5, "steps": 7, "mode": "a", "flag": True}


@pytest.mark.parametrize("given,match", [
    ({"momentum": 0.9}, r"no hyper-parameter 'momentum'; accepted: lr=0.1 \(finite float\), steps=3 \(int\), mode='a' \(a \| b\)"),
    ({"lr": "fast"}, r"'lr' got 'fast'; accepted: finite float"),
    ({"steps": 2.5}, r"'steps' got 2.5; accepted: int"),
    ({"steps": True}, r"'steps' got True; accepted: int"),
    ({"mode": "c"}, r"'mode' got 'c'; accepted: a \| b"),
    ({"flag": "maybe"}, r"'flag' got 'maybe'; accepted: bool"),
])
def test_bad_hyperparameters_are_one_line_errors(given, match):
    with pytest.raises(ClbenchError, match=match):
        Tunable(CTX, **given)


def test_subclass_without_own_init_is_validated_against_itself():
    class Child(Tunable):
        name = "child"

    assert Child(CTX, lr="2").config["lr"] == 2.0
    with pytest.raises(ClbenchError, match="learner 'child' has no hyper-parameter 'x'"):
        Child(CTX, x=1)


def test_built_ins_come_from_entry_points():
    known = available_learners()
    assert {"finetune", "joint", "nmc"} <= set(known)
    assert known["nmc"] == "clbench.learners.nmc:NMC"
    assert get_learner("nmc").name == "nmc"


def test_module_colon_class_lookup():
    assert get_learner("clbench.learners.joint:Joint").name == "joint"
    with pytest.raises(ClbenchError, match="unknown learner 'nope'.*finetune"):
        get_learner("nope")
    with pytest.raises(ClbenchError, match="cannot load learner"):
        get_learner("no_such_module_xyz:Thing")
    with pytest.raises(ClbenchError, match="not a subclass of clbench.Learner"):
        get_learner("collections:OrderedDict")


def test_annotations_of_every_kind():
    from typing import Any, Optional

    class Kinds(Learner):
        name = "kinds"

        def __init__(self, context, *, anything: Any = None, sizes: tuple[int, ...] = (1, 2),
                     maybe: Optional[float] = None, tags: "list[str] | None" = None):
            super().__init__(context)

    assert Kinds(CTX).config == {"anything": None, "sizes": (1, 2), "maybe": None, "tags": None}
    assert Kinds(CTX, anything=object, sizes=(3,), maybe="0.5", tags=["a"]).config["maybe"] == 0.5
    with pytest.raises(ClbenchError, match="'sizes' got 3; accepted: tuple of int"):
        Kinds(CTX, sizes=3)


def test_learner_without_own_init_rejects_keywords():
    class Bare(Learner):
        name = "bare"

    assert Bare(CTX).config == {}
    with pytest.raises(ClbenchError, match="learner 'bare' has no hyper-parameter 'lr'; accepted: none"):
        Bare(CTX, lr=0.1)


def test_progress_bars_follow_the_run_setting():
    quiet = Context(torch.device("cpu"), num_classes=3, input_shape=(2,), seed=0, backbone=None, progress=False)
    bar = quiet.progress_bar(range(4), "meta-training", unit="episode")
    assert bar.disable and list(bar) == [0, 1, 2, 3]
    assert CTX.progress  # on by default: shown when the output is a terminal (tqdm decides)
