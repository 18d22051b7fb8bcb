"""Scenario specs (`scenarios/NAME.toml`) and building a scenario: dataset x protocol."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import typing
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from clbench.datasets import SOURCES, Dataset, LabeledArrays, load_dataset
from clbench.errors import ClbenchError
from clbench.learner import Hyperparameter, Range, coerce
from clbench.precision import Precision
from clbench.protocols import Stream, resolve_class_order, split_by_class
from clbench.protocols.class_order import FIXED_ORDERS, RUN_SEED, SEEDED_ORDERS
from clbench.protocols import core50
from clbench.protocols.episodes import episodic_stream
from clbench.protocols.federated import federated_stream
from clbench.protocols.repartition import pooled_split
from clbench.protocols.sessions import stream_from_sessions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


Count = Annotated[int, Range(ge=1)]
"""A count or a size: an integer >= 1."""
Seed = Annotated[int, Range(ge=0, le=2**32 - 1)]
"""A seed of NumPy's RandomState: an integer in [0, 2**32 - 1]."""
Side = Annotated[int, Range(ge=0, le=4096)]
"""Pixels along one side of an image (4096 at most: a larger value is a typo, not a setting)."""
ProtocolName = Literal["class-incremental", "task-incremental", "episodes", "fscil", "core50-ni", "core50-nc",
                       "core50-nic", "federated"]
"""The protocols, one per entry of `STREAMS`."""


class ClassOrderDomain:
    """The values of `class_order`: a named order, the seed of a NumPy RandomState permutation, or
    "seeded": the permutation of each run's own seed."""

    NAMES = ("natural", RUN_SEED, *SEEDED_ORDERS, *FIXED_ORDERS)

    def admits(self, value: str) -> bool:
        digits = value.strip()
        if digits.isascii() and digits.lstrip("-").isdigit():  # what resolve_class_order reads as a seed
            return 0 <= int(digits) <= 2**32 - 1
        return value in self.NAMES

    def __str__(self) -> str:
        return f"{' | '.join(self.NAMES)} | an integer seed in [0, {2**32 - 1}]"


FIRST_EXPERIENCE = "first-experience"


class InitSetDomain:
    """The values of `init_set`: the stream's first experience, or another dataset by name."""

    def admits(self, value: str) -> bool:
        return value == FIRST_EXPERIENCE or value in SOURCES

    def __str__(self) -> str:
        return f"{FIRST_EXPERIENCE} | another dataset: {' | '.join(sorted(SOURCES))}"


@dataclass(frozen=True)
class ScenarioSpec:
    """A named, versioned description of a scenario; every field can be overridden with `--set`.

    Every setting is converted and checked against its declared domain (`Annotated[..., Range(...)]`,
    `Literal[...]`) whenever a spec is made: parsed from TOML, overridden, or built in code.
    """

    name: str
    description: str = ""
    dataset: str = "digits"
    protocol: ProtocolName = "class-incremental"
    n_experiences: Count = 5
    class_order: Annotated[str, ClassOrderDomain()] = "natural"
    """"natural", a named order, an integer seed (a TOML integer is read as its digits), or "seeded":
    `RandomState(seed).permutation` of each run's seed (class-incremental, task-incremental, federated)."""
    epochs: Count = 1
    batch_size: Count = 32
    eval_batch_size: Count = 1024
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
    std: Annotated[tuple[float, ...], Range(gt=0)] = (0.5,)
    image_size: Side = 0
    """Side length images are resized to on the device (0: keep the dataset's size)."""
    augment: Literal["none", "crop-flip"] = "none"
    """Train-time augmentation on the device: random crop (zero padding `crop_padding`) + horizontal flip."""
    crop_padding: Side = 4
    augment_experiences: Literal["all", "first"] = "all"
    """Which experiences' training batches `augment` applies to: "all", or "first" only (FSCIL: the base
    session, which learners train by gradient; novel-session prototypes are built from the plain shots)."""
    partition: Literal["standard", "pooled"] = "standard"
    """"pooled": pool all partitions and send the last sixth of each class to test (split-miniimagenet)."""
    level: Literal["object", "category"] = "object"
    """CoRe50: classify the 50 objects, or their 10 categories."""
    run: Annotated[int, Range(ge=-1)] = -1
    """CoRe50 official LUP run: NC/NIC use run 0 when -1; NI uses the fixed session order when -1."""
    way: Count = 5
    shot: Count = 1
    query: Count = 15
    test_episodes: Count = 2000
    """Few-shot episodes: N-way K-shot Q-query, this many fixed test episodes (episode e uses seed episode_seed + e)."""
    episode_seed: Seed = 0
    n_base_classes: Count = 50
    clients: Count = 5
    classes_per_client: Count = 5
    client_shots: Count = 30
    """Federated reconnaissance: the server's base classes, then (n_experiences - 1) missions of
    `clients` clients, each learning `classes_per_client` new classes from `client_shots` images."""
    online: bool = False
    """Single pass: every training sample seen exactly once (epochs must be 1), in mini-batches of
    `batch_size` (10 in the shipped `*-online` specs), by learners that declare `online`."""
    task_boundaries: bool = True
    """If false, learners are not told where experiences begin and end, nor given a task at training
    (task-free: no begin/end_experience calls, `learn(x, y, None)`)."""
    til_training: Literal["masked", "single-head"] = "masked"
    """Task-incremental training: "masked", each sample's loss over its task's classes only (one head per
    task, van de Ven et al.'s Task-IL); "single-head", over all classes (masked at test only). It acts only
    where a task is given at training (protocol task-incremental, with task boundaries): "single-head"
    elsewhere is an error rather than a setting that would change nothing but the setting identity."""
    init_set: Annotated[str, InitSetDomain()] = FIRST_EXPERIENCE
    """The unlabelled data a learner with an `initialise` hook (kv-bottleneck's keys) sees once before the
    stream: the first experience's training inputs, or the train partition of another dataset (read from
    the same data root and fed through the same encoder/transform)."""
    precision: Precision = "auto"
    """Arithmetic of the learner's `learn`/`predict` and of the frozen encoder: "bf16" (autocast) or "fp32";
    "auto" is resolved by device before a run (`clbench.precision`), and rows record the resolved one."""
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fields(cls) -> dict[str, Hyperparameter]:
        """The overridable fields, as typed settings."""
        return dict(_settings(cls))

    def __post_init__(self) -> None:
        for key, setting in _settings(type(self)).items():
            value = getattr(self, key)
            if key == "class_order" and type(value) is int:
                value = str(value)  # TOML writes a seed as an integer
            object.__setattr__(self, key, coerce(f"scenario '{self.name}'", setting, value, role="setting"))
        if self.online and self.epochs != 1:
            raise ClbenchError(f"scenario '{self.name}': an online scenario is a single pass, so epochs must be 1")
        if self.til_training != "masked" and not (self.protocol == "task-incremental" and self.task_boundaries):
            raise ClbenchError(f"scenario '{self.name}': til_training={self.til_training} acts only where a task is "
                               f"given at training (protocol task-incremental with task boundaries); leave it out here")

    def with_overrides(self, overrides: dict[str, Any]) -> ScenarioSpec:
        """A copy with some fields replaced (values converted and checked); records what changed."""
        known = self.fields()
        unknown = [key for key in overrides if key not in known]
        if unknown:
            raise ClbenchError(f"scenario '{self.name}' has no setting '{unknown[0]}' (settings: {', '.join(known)})")
        spec = dataclasses.replace(self, **overrides)
        return dataclasses.replace(spec, overrides={**self.overrides, **{k: getattr(spec, k) for k in overrides}})

    @property
    def display_name(self) -> str:
        """The name, marked when the spec was modified."""
        return f"{self.name}*" if self.overrides else self.name


@functools.lru_cache(maxsize=None)
def _settings(cls: type[ScenarioSpec]) -> dict[str, Hyperparameter]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: Hyperparameter.declared(f.name, f.default, hints[f.name])
            for f in dataclasses.fields(cls) if f.name not in ("name", "overrides")}


def _spec_files() -> dict[str, Any]:
    root = resources.files("clbench.scenario_specs")
    return {p.name[: -len(".toml")]: p for p in root.iterdir() if p.name.endswith(".toml")}


def available_scenarios() -> dict[str, ScenarioSpec]:
    """The shipped scenario specs, by name."""
    return {name: _parse(name, _read(path, str(path)), str(path)) for name, path in sorted(_spec_files().items())}


def load_spec(name_or_path: str) -> ScenarioSpec:
    """A shipped spec by name, or a spec from a `.toml` file path."""
    files = _spec_files()
    if name_or_path in files:
        return _parse(name_or_path, _read(files[name_or_path], name_or_path), name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return _parse(path.stem, _read(path, str(path)), str(path))
    raise ClbenchError(f"unknown scenario '{name_or_path}' (known: {', '.join(sorted(files))}; or a path to a .toml spec)")


def _read(path: Any, origin: str) -> str:
    """The text of a spec file (a Path or a package resource), or a one-line error."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClbenchError(f"scenario spec {origin} is not UTF-8 text (byte {exc.start}): give a TOML file") from None
    except OSError as exc:
        what = "is a folder, not a file" if Path(str(path)).is_dir() else f"cannot be read ({exc.strerror or exc})"
        raise ClbenchError(f"scenario spec {origin} {what}") from None


def _parse(name: str, text: str, origin: str) -> ScenarioSpec:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClbenchError(f"scenario spec {origin} is not valid TOML: {exc}") from None
    return dataclasses.replace(ScenarioSpec(name=name).with_overrides(raw), overrides={})


@dataclass(frozen=True)
class Scenario:
    """A built scenario: the spec, its data and its stream."""

    spec: ScenarioSpec
    dataset: Dataset
    stream: Stream
    init_data: LabeledArrays | None = None
    """The other dataset's train partition that `spec.init_set` names (None: the first experience)."""
    order_seed: int | None = None
    """The run seed a "seeded" class order was drawn from (None for every other order)."""

    def for_seed(self, seed: int) -> Scenario:
        """The scenario a run with `seed` sees: this one, or for a "seeded" class order, the stream
        cut again (same data) in the order that `seed` draws."""
        if self.spec.class_order != RUN_SEED or self.order_seed == seed:
            return self
        return dataclasses.replace(self, stream=_stream(self.dataset, self.spec, seed), order_seed=seed)

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


ORDERED_PROTOCOLS = ("class-incremental", "task-incremental", "federated")
"""The protocols whose stream follows `class_order` (the others take their classes from session
lists, episodes or CoRe50's runs)."""


def _stream(dataset: Dataset, spec: ScenarioSpec, seed: int | None) -> Stream:
    """The spec's stream of `dataset`; a "seeded" class order is the permutation that `seed` draws."""
    if spec.class_order == RUN_SEED:
        if spec.protocol not in ORDERED_PROTOCOLS:
            raise ClbenchError(f"scenario '{spec.name}': class_order 'seeded' acts on {', '.join(ORDERED_PROTOCOLS)} "
                               f"streams only; the '{spec.protocol}' stream has no class order to draw")
        if seed is None:
            raise ClbenchError(f"scenario '{spec.name}': class_order 'seeded' is drawn from the run's seed: "
                               "build the scenario with that seed")
        spec = dataclasses.replace(spec, class_order=str(seed))
    stream = STREAMS[spec.protocol](dataset, spec)
    if len(stream.experiences) != spec.n_experiences:
        raise ClbenchError(f"scenario '{spec.name}' expects {spec.n_experiences} experiences, "
                           f"the '{spec.protocol}' stream of this data has {len(stream.experiences)}")
    return stream


def build_scenario(spec: ScenarioSpec, data_root: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None, seed: int | None = None) -> Scenario:
    """Load the spec's dataset (caches in `cache_dir` if given) and cut it with the spec's protocol;
    a "seeded" class order is drawn from `seed` (required then; `Scenario.for_seed` re-cuts it)."""
    dataset = load_dataset(spec.dataset, data_root, cache_dir)
    if spec.partition == "pooled":
        dataset = pooled_split(dataset)
    stream = _stream(dataset, spec, seed)
    if spec.level == "category":
        if not spec.protocol.startswith("core50"):
            raise ClbenchError(f"scenario '{spec.name}': level = 'category' exists for CoRe50 only")
        dataset = core50.category_level(dataset)
    order_seed = seed if spec.class_order == RUN_SEED else None
    return Scenario(spec, dataset, stream, _init_data(spec, data_root, cache_dir), order_seed)


def _init_data(spec: ScenarioSpec, data_root: str | os.PathLike | None,
               cache_dir: str | os.PathLike | None) -> LabeledArrays | None:
    """The train partition of the dataset `init_set` names; None for the first experience."""
    if spec.init_set == FIRST_EXPERIENCE:
        return None
    if spec.init_set == spec.dataset:
        raise ClbenchError(f"scenario '{spec.name}': init_set '{spec.init_set}' is the scenario's own dataset, whose "
                           f"images may be its test images; use init_set={FIRST_EXPERIENCE} or another dataset")
    return load_dataset(spec.init_set, data_root, cache_dir).partition("train")
