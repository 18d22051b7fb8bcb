"""Every scenario setting and hyper-parameter is checked against its domain (declared with `Range`,
`Literal` or another domain), and every malformed spec file or plugin is one clear line."""

from __future__ import annotations

import textwrap
import typing
from typing import Annotated

import pytest

from clbench.errors import ClbenchError
from clbench.learner import Hyperparameter, Range, get_learner, validate
from clbench.scenario import STREAMS, ProtocolName, ScenarioSpec, load_spec

SPEC = ScenarioSpec(name="toy")


# ---- the domains themselves ------------------------------------------------------------------------
@pytest.mark.parametrize("annotation,accepts", [
    (Annotated[float, Range(gt=0)], "float > 0"),
    (Annotated[float, Range(ge=0, lt=1)], "float in [0, 1)"),
    (Annotated[int, Range(ge=1)], "int >= 1"),
    (Annotated[int, Range(le=5)], "int <= 5"),
    (Annotated[int, Range(gt=-1, le=9)], "int in (-1, 9]"),
    (float, "finite float"),
    (Annotated[tuple[float, ...], Range(gt=0)], "tuple of float > 0"),
    (typing.Literal["a", "b"], "a | b"),
])
def test_accepted_values_in_words(annotation, accepts):
    assert Hyperparameter.declared("x", None, annotation).accepts() == accepts


def test_the_domain_is_checked_after_conversion():
    lr = Hyperparameter.declared("lr", 0.1, Annotated[float, Range(gt=0)])
    assert lr.admits(0.5) and not lr.admits(0.0) and not lr.admits(float("inf")) and not lr.admits(float("nan"))
    anything = Hyperparameter.declared("x", 0.0, Annotated[float, Range(gt=0, finite=False)])
    assert anything.admits(float("inf")) and not anything.admits(float("nan"))  # nan > 0 is false
    size = Hyperparameter.declared("n", 1, int)
    assert size.admits(2**63 - 1) and not size.admits(2**63) and not size.admits(-(2**63) - 1)


def test_the_error_names_the_parameter_and_what_it_accepts():
    with pytest.raises(ClbenchError) as error:
        validate(get_learner("finetune"), {"lr": "nan"})
    assert str(error.value) == "learner 'finetune': hyper-parameter 'lr' got 'nan'; accepted: float > 0"
    with pytest.raises(ClbenchError) as error:
        SPEC.with_overrides({"epochs": "99999999999999999999"})
    assert str(error.value) == ("scenario 'toy': setting 'epochs' got '99999999999999999999'; "
                                "accepted: int >= 1 (64-bit at most)")


def test_well_formed_values_are_converted():
    spec = SPEC.with_overrides({"std": "0.2,0.3,0.4", "mean": [0, 1, 0.5], "class_order": "1993", "run": "-1"})
    assert spec.std == (0.2, 0.3, 0.4) and spec.mean == (0.0, 1.0, 0.5) and spec.run == -1
    assert spec.overrides["std"] == (0.2, 0.3, 0.4)
    assert validate(get_learner("finetune"), {"lr": "1", "momentum": 0})["momentum"] == 0.0


def test_every_protocol_has_a_stream_and_every_stream_a_protocol():
    assert set(typing.get_args(ProtocolName)) == set(STREAMS)


# ---- malformed values: one ClbenchError naming the key ---------------------------------------------
BAD_SETTINGS = [
    ("epochs", "0"), ("epochs", "-1"), ("epochs", "99999999999999999999"), ("epochs", "1.5"),
    ("batch_size", "0"), ("eval_batch_size", "0"), ("n_experiences", "0"),
    ("way", "0"), ("shot", "0"), ("query", "-3"), ("test_episodes", "0"),
    ("clients", "0"), ("classes_per_client", "0"), ("client_shots", "0"), ("n_base_classes", "0"),
    ("image_size", "-1"), ("image_size", "100000"), ("crop_padding", "-4"),
    ("std", "0"), ("std", "0.5,nan"), ("std", "inf"), ("std", "-0.2"), ("std", ""), ("mean", "nan"), ("mean", []),
    ("class_order", "-5"), ("class_order", "4294967296"), ("class_order", "bogus"), ("class_order", True),
    ("run", "-2"), ("episode_seed", "-1"), ("episode_seed", str(2**32)),
    ("protocol", "bogus"), ("augment", "rotate"), ("online", "maybe"), ("dataset", 3),
]


@pytest.mark.parametrize("key,value", BAD_SETTINGS)
def test_a_setting_out_of_its_domain_is_one_line(key, value):
    with pytest.raises(ClbenchError, match=f"setting '{key}' got .*; accepted: ") as error:
        SPEC.with_overrides({key: value})
    assert "\n" not in str(error.value)


def test_settings_are_checked_however_the_spec_is_made():
    with pytest.raises(ClbenchError, match="setting 'crop_padding'"):
        ScenarioSpec(name="code", crop_padding=-1)
    with pytest.raises(ClbenchError, match="single pass, so epochs must be 1"):
        SPEC.with_overrides({"online": "true", "epochs": "2"})


BAD_HYPERPARAMETERS = [
    ("finetune", "lr", "nan"), ("finetune", "lr", "inf"), ("finetune", "lr", "0"), ("finetune", "lr", -1.0),
    ("finetune", "momentum", "1"), ("finetune", "momentum", "-0.1"), ("finetune", "weight_decay", "-1e-4"),
    ("joint", "weight_decay", "nan"),
    ("replay", "buffer_size", "0"), ("replay", "buffer_size", str(2**63)), ("replay", "replay_batch_size", "-1"),
    ("simpleshot", "batch_size", "1"), ("simpleshot", "epochs", "-1"), ("simpleshot", "kmeans_steps", "-1"),
    ("simpleshot", "momentum", "1.5"), ("simpleshot", "lr", "1e999"),
    ("protonet", "train_way", "1"), ("protonet", "margin", "-0.5"), ("protonet", "margin", "nan"),
    ("protonet", "episodes", "-1"), ("protonet", "lr_halve_every", "0"), ("protonet", "train_shot", "0"),
    ("nmc", "l2_normalize", "2"),
]


@pytest.mark.parametrize("learner,key,value", BAD_HYPERPARAMETERS)
def test_a_hyperparameter_out_of_its_domain_is_one_line(learner, key, value):
    with pytest.raises(ClbenchError, match=f"learner '{learner}': hyper-parameter '{key}' got .*; accepted: ") as error:
        validate(get_learner(learner), {key: value})
    assert "\n" not in str(error.value)


# ---- scenario spec files -------------------------------------------------------------------------------
@pytest.mark.parametrize("content,match", [
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", r"is not UTF-8 text"),
    (b"epochs = = 3", r"is not valid TOML"),
    (b'protocol = "bogus"', r"setting 'protocol' got 'bogus'; accepted: class-incremental \| "),
    (b'epochs = "three"', r"setting 'epochs' got 'three'; accepted: int >= 1"),
    (b"epochs = 1.5", r"setting 'epochs' got 1.5"),
    (b"[epochs]\nvalue = 1", r"setting 'epochs' got \{'value': 1\}"),
    (b"std = [0.5, 0.0]", r"setting 'std' got \[0.5, 0.0\]; accepted: tuple of float > 0"),
    (b"name = 'other'", r"has no setting 'name'"),
])
def test_a_malformed_spec_file_is_one_line(tmp_path, content, match):
    path = tmp_path / "mine.toml"
    path.write_bytes(content)
    with pytest.raises(ClbenchError, match=match) as error:
        load_spec(str(path))
    assert "\n" not in str(error.value)


def test_a_folder_named_like_a_spec_is_one_line(tmp_path):
    (tmp_path / "x.toml").mkdir()
    with pytest.raises(ClbenchError, match=r"x.toml is a folder, not a file"):
        load_spec(str(tmp_path / "x.toml"))


def test_a_toml_integer_class_order_is_a_seed(tmp_path):
    path = tmp_path / "seeded.toml"
    path.write_text('class_order = 1993\nstd = [0.25]\n')
    spec = load_spec(str(path))
    assert spec.class_order == "1993" and spec.std == (0.25,) and spec.overrides == {}


# ---- plugins that fail to load ---------------------------------------------------------------------------
PLUGINS = {
    "syntax": ("def broken(:\n", r"importing module 'h4_syntax' failed with SyntaxError"),
    "raises": ("raise RuntimeError('no GPU here')\n", r"importing module 'h4_raises' failed with RuntimeError: no GPU"),
    "exits": ("import sys\nsys.exit(3)\n", r"importing module 'h4_exits' failed with SystemExit"),
    "nodefault": ("""
        from clbench import Learner
        class Plugin(Learner):
            name = "plugin"
            def __init__(self, context, *, lr: float):
                super().__init__(context)
        """, r"learner class 'h4_nodefault:Plugin': hyper-parameter 'lr' has no default"),
    "nocontext": ("""
        from clbench import Learner
        class Plugin(Learner):
            name = "plugin"
            def __init__(self):
                pass
        """, r"learner class 'h4_nocontext:Plugin': __init__ must take \(self, context, \*, "),
    "positional": ("""
        from clbench import Learner
        class Plugin(Learner):
            name = "plugin"
            def __init__(self, context, lr=0.1, /):
                super().__init__(context)
        """, r"'h4_positional:Plugin': hyper-parameter 'lr' is positional-only"),
    "baddefault": ("""
        from typing import Annotated
        from clbench import Learner
        from clbench.learner import Range
        class Plugin(Learner):
            name = "plugin"
            def __init__(self, context, *, lr: Annotated[float, Range(gt=0)] = 0.0):
                super().__init__(context)
        """, r"'h4_baddefault:Plugin': the default 0.0 of hyper-parameter 'lr' is not accepted .*float > 0"),
    "badannotation": ("""
        from __future__ import annotations
        from clbench import Learner
        class Plugin(Learner):
            name = "plugin"
            def __init__(self, context, *, lr: Undefined = 0.1):
                super().__init__(context)
        """, r"'h4_badannotation:Plugin': cannot read the signature of __init__: NameError"),
    "noclass": ("x = 1\n", r"module 'h4_noclass' has no attribute 'Plugin'"),
}


@pytest.mark.parametrize("kind", PLUGINS)
def test_a_plugin_that_cannot_load_is_one_line(tmp_path, monkeypatch, kind):
    source, match = PLUGINS[kind]
    (tmp_path / f"h4_{kind}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ClbenchError, match=match) as error:
        get_learner(f"h4_{kind}:Plugin")
    assert "\n" not in str(error.value)
