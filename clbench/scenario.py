"""Scenario specs (`scenarios/NAME.toml`) and building a scenario: dataset x protocol."""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from clbench.datasets import Dataset, load_dataset
from clbench.errors import ClbenchError
from clbench.learner import Hyperparameter, annotation_kind, coerce
from clbench.protocols import Stream, resolve_class_order, split_by_class
from clbench.protocols import core50
from clbench.protocols.episodes import episodic_stream
from clbench.protocols.federated import federated_stream
from clbench.protocols.repartition import pooled_split
from clbench.protocols.sessions import stream_from_sessions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class ScenarioSpec:
    """A named, versioned description of a scenario; every field can be overridden with `--set`."""

    name: str
    description: str = ""
    dataset: str = "digits"
    protocol: str = "class-incremental"
    n_experiences: int = 5
    class_order: str = "natural"
    epochs: int = 1
    batch_size: int = 32
    eval_batch_size: int = 1024
    backbone: str = "mlp"
    """The network image-level learners train (see `clbench.backbones`)."""
    encoder: str = "flatten"
    """The frozen encoder whose features feed feature-level learners."""
    weights: str = ""
    """Weights of the run's network (the encoder for feature learners, the backbone for image
    learners): "" random init, "hub" timm's pretrained weights, or a checkpoint path."""
    encoder_normalize: bool = True
    """Normalise encoder inputs (timm's pretrained statistics, else mean/std); false: only x / 255."""
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    image_size: int = 0
    """Side length images are resized to on the device (0: keep the dataset's size)."""
    augment: Literal["none", "crop-flip"] = "none"
    """Train-time augmentation on the device: random crop (zero padding `crop_padding`) + horizontal flip."""
    crop_padding: int = 4
    partition: Literal["standard", "pooled"] = "standard"
    """"pooled": pool all partitions and send the last sixth of each class to test (split-miniimagenet)."""
    level: Literal["object", "category"] = "object"
    """CoRe50: classify the 50 objects, or their 10 categories."""
    run: int = -1
    """CoRe50 official LUP run: NC/NIC use run 0 when -1; NI uses the fixed session order when -1."""
    way: int = 5
    shot: int = 1
    query: int = 15
    test_episodes: int = 2000
    """Few-shot episodes: N-way K-shot Q-query, this many fixed test episodes (episode e uses seed episode_seed + e)."""
    episode_seed: int = 0
    n_base_classes: int = 50
    clients: int = 5
    classes_per_client: int = 5
    client_shots: int = 30
    """Federated reconnaissance: the server's base classes, then (n_experiences - 1) missions of
    `clients` clients, each learning `classes_per_client` new classes from `client_shots` images."""
    online: bool = False
    """Single pass (epochs must be 1) in mini-batches of `batch_size`."""
    task_boundaries: bool = True
    """If false, learners are not told where experiences begin and end (task-free)."""
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fields(cls) -> dict[str, Hyperparameter]:
        """The overridable fields, as typed settings."""
        hints = typing.get_type_hints(cls)
        out = {}
        for f in dataclasses.fields(cls):
            if f.name in ("name", "overrides"):
                continue
            kind, choices = (tuple, None) if f.name in ("mean", "std") else annotation_kind(hints[f.name])
            out[f.name] = Hyperparameter(f.name, f.default, kind, choices)
        return out

    def __post_init__(self) -> None:
        if self.online and self.epochs != 1:
            raise ClbenchError(f"scenario '{self.name}': an online scenario is a single pass, so epochs must be 1")
        for key in ("n_experiences", "epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ClbenchError(f"scenario '{self.name}': setting '{key}' must be at least 1")

    def with_overrides(self, overrides: dict[str, Any]) -> ScenarioSpec:
        """A copy with some fields replaced (values checked and converted); records what changed."""
        known = self.fields()
        values = {}
        for key, value in overrides.items():
            if key not in known:
                raise ClbenchError(f"scenario '{self.name}' has no setting '{key}' (settings: {', '.join(known)})")
            values[key] = _coerce_setting(self.name, known[key], value)
        return dataclasses.replace(self, overrides={**self.overrides, **values}, **values)

    @property
    def display_name(self) -> str:
        """The name, marked when the spec was modified."""
        return f"{self.name}*" if self.overrides else self.name


def _coerce_setting(scenario: str, setting: Hyperparameter, value: Any) -> Any:
    if setting.type is tuple:
        if isinstance(value, str):
            value = value.split(",")
        try:
            return tuple(float(v) for v in value)
        except (TypeError, ValueError):
            raise ClbenchError(f"scenario '{scenario}': setting '{setting.name}' needs numbers, got {value!r}") from None
    try:
        return coerce(scenario, setting, value)
    except ClbenchError:
        accepted = " | ".join(setting.choices) if setting.choices else setting.type.__name__
        raise ClbenchError(f"scenario '{scenario}': setting '{setting.name}' got {value!r}; accepted: {accepted}") from None


def _spec_files() -> dict[str, Any]:
    root = resources.files("clbench.scenario_specs")
    return {p.name[: -len(".toml")]: p for p in root.iterdir() if p.name.endswith(".toml")}


def available_scenarios() -> dict[str, ScenarioSpec]:
    """The shipped scenario specs, by name."""
    return {name: _parse(name, path.read_text(), str(path)) for name, path in sorted(_spec_files().items())}


def load_spec(name_or_path: str) -> ScenarioSpec:
    """A shipped spec by name, or a spec from a `.toml` file path."""
    files = _spec_files()
    if name_or_path in files:
        return _parse(name_or_path, files[name_or_path].read_text(), name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return _parse(path.stem, path.read_text(), str(path))
    raise ClbenchError(f"unknown scenario '{name_or_path}' (known: {', '.join(sorted(files))}; or a path to a .toml spec)")


def _parse(name: str, text: str, origin: str) -> ScenarioSpec:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClbenchError(f"scenario spec {origin} is not valid TOML: {exc}") from None
    spec = ScenarioSpec(name=name)
    spec = spec.with_overrides(raw)
    spec = dataclasses.replace(spec, overrides={})
    if spec.protocol not in STREAMS:
        raise ClbenchError(f"scenario '{name}': unknown protocol '{spec.protocol}' (known: {', '.join(STREAMS)})")
    return spec


@dataclass(frozen=True)
class Scenario:
    """A built scenario: the spec, its data and its stream."""

    spec: ScenarioSpec
    dataset: Dataset
    stream: Stream

    @property
    def fingerprint(self) -> str:
        train, test = self.dataset.partition("train"), self.dataset.partition("test")
        return self.stream.fingerprint(self.dataset.name, len(train), len(test))


def _class_split(dataset: Dataset, spec: ScenarioSpec) -> Stream:
    train, test = dataset.partition("train"), dataset.partition("test")
    order = resolve_class_order(spec.class_order, dataset.num_classes)
    return split_by_class(train.labels, test.labels, order, spec.n_experiences,
                          task_incremental=spec.protocol == "task-incremental")


def _sessions(dataset: Dataset, spec: ScenarioSpec) -> Stream:
    if "sessions" not in dataset.index_lists:
        raise ClbenchError(f"scenario '{spec.name}': dataset '{dataset.name}' ships no session lists")
    return stream_from_sessions(dataset.partition("train").labels, dataset.partition("test").labels,
                                dataset.index_lists["sessions"], protocol=spec.protocol)


def _core50(kind: str) -> typing.Callable[[Dataset, ScenarioSpec], Stream]:
    def build(dataset: Dataset, spec: ScenarioSpec) -> Stream:
        category = spec.level == "category"
        if kind == "ni":
            return core50.core50_ni(dataset, None if spec.run < 0 else spec.run, category)
        return getattr(core50, f"core50_{kind}")(dataset, max(spec.run, 0), category)

    return build


def _episodes(dataset: Dataset, spec: ScenarioSpec) -> Stream:
    if spec.test_episodes < 600:
        warnings.warn(f"{spec.test_episodes} test episodes: fewer than the 600 the literature requires for a reported figure")
    return episodic_stream(dataset.partition("train").labels, dataset.partition("test").labels, spec.way, spec.shot,
                           spec.query, spec.test_episodes, spec.episode_seed)


def _federated(dataset: Dataset, spec: ScenarioSpec) -> Stream:
    order = resolve_class_order(spec.class_order, dataset.num_classes)
    return federated_stream(dataset.partition("train").labels, dataset.partition("test").labels, order,
                            spec.n_base_classes, spec.n_experiences - 1, spec.clients, spec.classes_per_client,
                            spec.client_shots, spec.episode_seed)


STREAMS: dict[str, typing.Callable[[Dataset, ScenarioSpec], Stream]] = {
    "federated": _federated,
    "episodes": _episodes,
    "class-incremental": _class_split,
    "task-incremental": _class_split,
    "fscil": _sessions,
    "core50-ni": _core50("ni"),
    "core50-nc": _core50("nc"),
    "core50-nic": _core50("nic"),
}


def build_scenario(spec: ScenarioSpec, data_root: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None) -> Scenario:
    """Load the spec's dataset (caches in `cache_dir` if given) and cut it with the spec's protocol."""
    dataset = load_dataset(spec.dataset, data_root, cache_dir)
    if spec.partition == "pooled":
        dataset = pooled_split(dataset)
    stream = STREAMS[spec.protocol](dataset, spec)
    if len(stream.experiences) != spec.n_experiences:
        raise ClbenchError(f"scenario '{spec.name}' expects {spec.n_experiences} experiences, "
                           f"the '{spec.protocol}' stream of this data has {len(stream.experiences)}")
    if spec.level == "category":
        if not spec.protocol.startswith("core50"):
            raise ClbenchError(f"scenario '{spec.name}': level = 'category' exists for CoRe50 only")
        dataset = core50.category_level(dataset)
    return Scenario(spec, dataset, stream)
