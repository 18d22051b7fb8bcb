"""Conformance checks: does a `Learner` subclass honour the contract (DESIGN.md section 4)?

    from clbench.testing import check_learner, learner_checks

    check_learner(MyLearner, lr=0.01)      # raises LearnerCheckFailed at the first violation

    @pytest.mark.parametrize("name,check", learner_checks(MyLearner, lr=0.01))
    def test_contract(name, check):        # one test id per check
        check()

Every check builds its own learners on tiny, well-separated synthetic data on the CPU: images of
shape `IMAGE_SHAPE` (the context's backbone is the "mlp" net) or `FEATURE_DIM` features for
`wants = "features"` learners, `NUM_CLASSES` classes. A failure is a `LearnerCheckFailed` whose
message starts with the check's name. Checks that do not apply (e.g. `merge` for a learner that
is not `mergeable`) are left out.
"""

from __future__ import annotations

import contextlib
import copy
import io
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NoReturn, Sequence

import numpy as np
import torch

from clbench.errors import ClbenchError
from clbench.guard import LearnerFailed
from clbench.learner import Context, ExperienceInfo, Learner
from clbench.backbones import backbone_factory
from clbench.runner import seed_everything
from clbench.training_log import checked_step

__all__ = ["CHECKS", "Check", "FEATURE_DIM", "IMAGE_SHAPE", "NUM_CLASSES", "LearnerCheckFailed", "check_learner",
           "learner_checks"]

IMAGE_SHAPE = (3, 8, 8)
FEATURE_DIM = 16
NUM_CLASSES = 5
SEED = 0
_ACCURACY_REQUIRED = 0.75


class LearnerCheckFailed(AssertionError):
    """A learner breaks the contract; the message starts with the name of the failed check."""


# ---- the harness: context, data and guarded calls for one check of one learner class -------------
class _Harness:
    def __init__(self, check: str, cls: type[Learner], hyperparameters: dict[str, Any],
                 input_shape: tuple[int, ...] | None = None) -> None:
        self.check, self.cls, self.hp = check, cls, hyperparameters
        shape = input_shape or ((FEATURE_DIM,) if cls.wants == "features" else IMAGE_SHAPE)
        self.context = Context(device=torch.device("cpu"), num_classes=NUM_CLASSES, input_shape=shape, seed=SEED,
                               backbone=backbone_factory("mlp", IMAGE_SHAPE), n_experiences=3)
        self.prototypes = torch.randn(NUM_CLASSES, *shape, generator=torch.Generator().manual_seed(12345))

    def fail(self, message: str) -> NoReturn:
        raise LearnerCheckFailed(f"{self.check}: {message}")

    @contextlib.contextmanager
    def during(self, situation: str) -> Iterator[None]:
        """Say in which situation a failure inside the block happened."""
        try:
            yield
        except LearnerCheckFailed as exc:
            detail = str(exc).removeprefix(f"{self.check}: ")
            raise LearnerCheckFailed(f"{self.check}: {situation}: {detail}") from exc

    def call(self, learner: Learner, method: str, *args: Any) -> Any:
        """`learner.method(*args)`, a learner's exception reported as this check's failure."""
        try:
            return getattr(learner, method)(*args)
        except LearnerCheckFailed:
            raise
        except Exception as exc:
            raise LearnerCheckFailed(f"{self.check}: {method}() raised {type(exc).__name__}: {exc}") from exc

    def make(self, seed: int = SEED) -> Learner:
        """A fresh learner, built after seeding as the runner does."""
        seed_everything(seed)
        try:
            learner = self.cls(self.context, **self.hp)
        except Exception as exc:
            raise LearnerCheckFailed(f"{self.check}: constructing {self.cls.__name__}(context, **{self.hp!r}) "
                                     f"raised {type(exc).__name__}: {exc}") from exc
        if getattr(learner, "context", None) is not self.context:
            self.fail("__init__ must call super().__init__(context)")
        return learner

    def data(self, classes: Sequence[int], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` shuffled samples cycling through `classes`: class prototype plus small noise."""
        g = torch.Generator().manual_seed(seed)
        y = torch.as_tensor(list(classes))[torch.arange(n) % len(classes)]
        y = y[torch.randperm(n, generator=g)]
        return self.prototypes[y] + 0.3 * torch.randn(n, *self.prototypes.shape[1:], generator=g), y

    def query(self, classes: Sequence[int] = range(NUM_CLASSES)) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data(classes, 10 * len(classes), seed=999)

    def task(self, index: int) -> int | None:
        """The task id the runner gives experience `index`: its index if the learner needs one."""
        return index if self.cls.needs_task_ids else None

    def fit(self, learner: Learner, plan: Sequence[Sequence[int]], *, passes: int = 3, per_class: int = 4,
            batch: int = 8, first: int = 0, tasks: Sequence[Any] | None = None) -> None:
        """One experience per entry of `plan` (its classes), each learned for `passes` passes."""
        for i, classes in enumerate(plan):
            task = tasks[i] if tasks is not None else self.task(first + i)
            x, y = self.data(classes, per_class * len(classes), seed=hash((tuple(classes), first + i)) & 0xFFFFFFF)
            info = ExperienceInfo(first + i, tuple(sorted(set(classes))), task, len(y), first + len(plan))
            self.call(learner, "begin_experience", info)
            for _ in range(passes):
                for xb, yb in zip(x.split(batch), y.split(batch)):
                    self.call(learner, "learn", xb, yb, task)
            self.call(learner, "end_experience", info)

    @torch.no_grad()
    def predict(self, learner: Learner, x: torch.Tensor, task: Any = None) -> torch.Tensor:
        """Scores, checked as the runner does (tensor of shape (N, num_classes)), plus device and finiteness."""
        scores = self.call(learner, "predict", x, task)
        expected = (len(x), NUM_CLASSES)
        if not isinstance(scores, torch.Tensor):
            self.fail(f"predict() returned {type(scores).__name__}, expected a tensor of shape {expected}")
        if tuple(scores.shape) != expected:
            self.fail(f"predict() returned shape {tuple(scores.shape)} for a batch of {len(x)}; "
                      f"expected {expected} = (batch, context.num_classes)")
        if scores.device != self.context.device:
            self.fail(f"predict() returned scores on {scores.device}, not on the context's device "
                      f"{self.context.device}")
        if not torch.isfinite(scores).all():
            self.fail(f"predict() returned {int((~torch.isfinite(scores)).sum())} non-finite scores (NaN or inf)")
        return scores.detach().clone()  # the learner may hand out (and later update) an internal buffer

    def same(self, a: torch.Tensor, b: torch.Tensor, what: str, exact: bool = True) -> None:
        ok = torch.equal(a, b) if exact else torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5)
        if not ok:
            self.fail(f"{what} (max abs difference {(a.double() - b.double()).abs().max().item():.3g})")


# ---- the checks ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One named conformance check, and which learner classes it applies to."""

    name: str
    run: Callable[[_Harness], None]
    applies: Callable[[type[Learner]], bool]


CHECKS: dict[str, Check] = {}


def _check(name: str, applies: Callable[[type[Learner]], bool] = lambda cls: True):
    def register(fn: Callable[[_Harness], None]) -> Callable[[_Harness], None]:
        CHECKS[name] = Check(name, fn, applies)
        return fn

    return register


@_check("class_attributes")
def _class_attributes(h: _Harness) -> None:
    """`name` set, `wants` valid, capability flags are bools, `learn`/`predict` (and `merge`) implemented."""
    cls = h.cls
    if not (isinstance(cls.name, str) and cls.name):
        h.fail("the class attribute `name` (the registry name) must be a non-empty string")
    if cls.wants not in ("images", "features"):
        h.fail(f"`wants` must be 'images' or 'features', not {cls.wants!r}")
    for flag in ("needs_task_ids", "online", "mergeable", "cumulative"):
        if not isinstance(getattr(cls, flag), bool):
            h.fail(f"`{flag}` must be a bool, not {getattr(cls, flag)!r}")
    required = ("learn", "predict", "merge") if cls.mergeable else ("learn", "predict")
    for method in required:
        if getattr(cls, method) is getattr(Learner, method):
            h.fail(f"`{method}` is not implemented")


@_check("predict_shape")
def _predict_shape(h: _Harness) -> None:
    """Finite (batch, num_classes) scores, untrained and trained, batches of 1 and 512; input untouched."""
    learner = h.make()
    for situation in ("before any learning", "after learning"):
        with h.during(situation):
            if situation == "after learning":
                h.fit(learner, [[0, 1], [2, 3, 4]])
            for n in (1, 512):
                x, _ = h.data(range(NUM_CLASSES), n, seed=n)
                before = x.clone()
                h.predict(learner, x, h.task(0))
                if not torch.equal(x, before):
                    h.fail(f"predict() modified its input tensor in place (batch of {n})")


@_check("learn_returns")
def _learn_returns(h: _Harness) -> None:
    """learn() returns None, its step's loss (a one-element floating-point tensor) or clbench.Step(loss,
    scores) with (batch, num_classes) scores: what the runner's per-epoch training log reads."""
    learner = h.make()
    x, y = h.data([0, 1], 8, seed=5)
    h.call(learner, "begin_experience", ExperienceInfo(0, (0, 1), h.task(0), len(y), 1))
    for xb, yb in zip(x.split(4), y.split(4)):
        try:
            checked_step(learner, h.call(learner, "learn", xb, yb, h.task(0)), yb, NUM_CLASSES)
        except LearnerFailed as exc:
            h.fail(str(exc))


@_check("learns_new_classes")
def _learns_new_classes(h: _Harness) -> None:
    """Classes 3, then 0, then batches mixing 0, 2, 3, 4 (1 never seen): they are then predicted."""
    plan, passes = [[3], [0], [0, 2, 3, 4]], 20
    learner = h.make()
    h.fit(learner, plan, passes=passes)
    learned = sorted({c for classes in plan for c in classes})
    x, y = h.query(learned)
    scores = h.predict(learner, x, h.task(len(plan) - 1))
    mask = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    mask[learned] = True  # the runner's "seen classes" mask
    accuracy = (scores.float().masked_fill(~mask, float("-inf")).argmax(1) == y).float().mean().item()
    if accuracy < _ACCURACY_REQUIRED:
        h.fail(f"after learning class 3, then class 0, then batches mixing classes 0, 2, 3, 4 ({passes} passes each), "
               f"accuracy on those classes is {accuracy:.0%} (chance {1 / len(learned):.0%}, required "
               f"{_ACCURACY_REQUIRED:.0%}) on well-separated synthetic data")


@_check("state_roundtrip")
def _state_roundtrip(h: _Harness) -> None:
    """state_dict -> torch.save -> torch.load(weights_only=True) -> fresh instance: identical predictions."""
    learner = h.make()
    h.fit(learner, [[0, 1], [2, 3]])
    x, _ = h.query()
    expected = h.predict(learner, x, h.task(1))
    buffer = io.BytesIO()
    try:
        torch.save(h.call(learner, "state_dict"), buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)
    except LearnerCheckFailed:
        raise
    except Exception as exc:
        lines = str(exc).splitlines() or [type(exc).__name__]
        detail = next((line.strip() for line in lines if "Unsupported" in line), lines[0])
        raise LearnerCheckFailed(f"{h.check}: state_dict() does not survive torch.save + torch.load(weights_only=True) "
                                 f"(only tensors and plain Python values are allowed): {detail}") from exc
    fresh = h.make()
    h.call(fresh, "load_state_dict", state)
    h.same(expected, h.predict(fresh, x, h.task(1)),
           "a fresh instance given load_state_dict(state_dict()) predicts differently from the original")


@_check("state_complete")
def _state_complete(h: _Harness) -> None:
    """state_dict() holds everything learn() uses: save it, train on; a fresh instance restored from it and
    trained on the same batches predicts as the original (what resuming an interrupted run relies on)."""
    learner = h.make()
    h.fit(learner, [[0, 1]])
    state = copy.deepcopy(h.call(learner, "state_dict"))
    x, _ = h.query()
    predictions = []
    for trained in (learner, h.make()):
        if trained is not learner:
            h.call(trained, "load_state_dict", copy.deepcopy(state))
        seed_everything(SEED + 1)
        h.fit(trained, [[2, 3]], first=1)
        predictions.append(h.predict(trained, x, h.task(1)))
    h.same(*predictions, "a fresh instance given load_state_dict() of the state_dict() saved after the first "
           "experience, then trained on the same batches, predicts differently from the original: optimizer state "
           "(momentum, Adam moments, lr schedules), step counters, random generators and any other state learn() "
           "uses belong in state_dict()", exact=False)


@_check("deterministic")
def _deterministic(h: _Harness) -> None:
    """Same seed and data: identical predictions; and predict() itself is repeatable."""

    def run() -> torch.Tensor:
        learner = h.make()
        seed_everything(SEED)
        h.fit(learner, [[0, 1], [2, 3, 4]])
        x, _ = h.query()
        first = h.predict(learner, x, h.task(1))
        h.same(first, h.predict(learner, x, h.task(1)), "predict() twice on the same input gave different scores")
        return first

    h.same(run(), run(), "two runs with the same seed and the same data predict differently")


@_check("online_single_pass", applies=lambda cls: cls.online)
def _online_single_pass(h: _Harness) -> None:
    """`online = True`: one pass with batches of 1 works and gives finite predictions."""
    with h.during("learning one sample at a time, in a single pass"):
        learner = h.make()
        h.fit(learner, [[0, 1], [2, 3]], passes=1, batch=1)
        h.predict(learner, h.query()[0], h.task(1))


class _TaskRead(Exception):
    """Raised by the task sentinel on any use."""


class _TaskSentinel:
    """Stands in for a task id a task-free learner must not read: records and refuses every use."""

    _ALLOWED = frozenset({"__deepcopy__", "__copy__"})  # copying an ExperienceInfo is not reading it

    def __init__(self, where: str, uses: list[str]) -> None:
        object.__setattr__(self, "_where", where)
        object.__setattr__(self, "_uses", uses)

    def _refuse(self, operation: str) -> NoReturn:
        use = f"{operation} on the task given to {object.__getattribute__(self, '_where')}"
        object.__getattribute__(self, "_uses").append(use)
        raise _TaskRead(use)

    def __getattribute__(self, name: str) -> Any:
        if name in _TaskSentinel._ALLOWED:
            return object.__getattribute__(self, name)
        _TaskSentinel._refuse(self, "isinstance() or .__class__" if name == "__class__" else f"attribute .{name}")

    def __deepcopy__(self, memo: dict) -> _TaskSentinel:
        return self

    def __copy__(self) -> _TaskSentinel:
        return self

    def __repr__(self) -> str:
        return "<task id sentinel>"


def _refusing(operation: str) -> Callable[..., NoReturn]:
    return lambda self, *args: _TaskSentinel._refuse(self, operation)


for _op in ("eq ne lt le gt ge hash bool int float index len iter contains getitem setitem call str format "
            "setattr delattr add radd sub rsub mul rmul mod floordiv truediv neg and or xor").split():
    setattr(_TaskSentinel, f"__{_op}__", _refusing(f"__{_op}__"))


@_check("task_ids")
def _task_ids(h: _Harness) -> None:
    """needs_task_ids = False: works with task None and never reads `task`; True: accepts integer ids."""
    x, _ = h.query()
    if h.cls.needs_task_ids:
        with h.during("needs_task_ids = True, with integer task ids 0 and 1"):
            learner = h.make()
            h.fit(learner, [[0, 1], [2, 3]], tasks=[0, 1])
            for task in (0, 1):
                h.predict(learner, x, task)
        return
    uses: list[str] = []
    for_learn, for_predict = _TaskSentinel("learn() / ExperienceInfo", uses), _TaskSentinel("predict()", uses)
    for fit_task, predict_task in ((None, None), (for_learn, for_predict)):
        learner = h.make()
        try:
            h.fit(learner, [[0, 1], [2, 3]], tasks=[fit_task, fit_task])
            h.predict(learner, x, predict_task)
        except LearnerCheckFailed as exc:
            if uses:
                break
            if fit_task is None:
                raise LearnerCheckFailed(f"{h.check}: with task=None: {str(exc).removeprefix(h.check + ': ')}") from exc
            raise LearnerCheckFailed(f"{h.check}: needs_task_ids = False, yet given an opaque task object the "
                                     f"learner failed ({exc}); a task-free learner must not read `task`") from exc
    if uses:
        h.fail(f"needs_task_ids = False, yet the learner read its task argument ({uses[0]}); "
               "a task-free learner must ignore `task` (set needs_task_ids = True if it needs it)")


@_check("accepts_features", applies=lambda cls: cls.wants == "features")
def _accepts_features(h: _Harness) -> None:
    """`wants = "features"`: N x D float features for any D = context.input_shape[0] (tries 1 and 7)."""
    for dim in (1, 7):
        hd = _Harness(h.check, h.cls, h.hp, input_shape=(dim,))
        with hd.during(f"with {dim}-dimensional features (context.input_shape = ({dim},))"):
            learner = hd.make()
            hd.fit(learner, [[0, 1, 2]])
            hd.predict(learner, hd.query()[0], hd.task(0))


@_check("merge", applies=lambda cls: cls.mergeable)
def _merge(h: _Harness) -> None:
    """A.merge([B, C]) = A.merge([C, B]) = B.merge([A, C]) (disjoint data); merging an untrained learner is a no-op."""
    parts = {"A": [[0, 1]], "B": [[2, 3]], "C": [[4]]}
    x, _ = h.query()

    def trained(part: str) -> Learner:
        learner = h.make()
        h.fit(learner, parts[part])
        return learner

    def merged(receiver: str, *senders: str) -> torch.Tensor:
        learner, others = trained(receiver), [trained(s) for s in senders]
        before = [h.predict(o, x, h.task(0)) for o in others]
        h.call(learner, "merge", others)
        for name, other, prediction in zip(senders, others, before):
            h.same(prediction, h.predict(other, x, h.task(0)),
                   f"{receiver}.merge([{', '.join(senders)}]) changed {name}, which it must only read")
        return h.predict(learner, x, h.task(0))

    abc = merged("A", "B", "C")
    h.same(abc, merged("A", "C", "B"), "A.merge([B, C]) and A.merge([C, B]) predict differently", exact=False)
    h.same(abc, merged("B", "A", "C"), "A.merge([B, C]) and B.merge([A, C]) predict differently", exact=False)
    learner = trained("A")
    before = h.predict(learner, x, h.task(0))
    h.call(learner, "merge", [h.make()])
    h.same(before, h.predict(learner, x, h.task(0)), "merging with an untrained learner changed the predictions",
           exact=False)


class _IllTyped:
    def __repr__(self) -> str:
        return "<object of no declared type>"


@_check("hyperparameters")
def _hyperparameters(h: _Harness) -> None:
    """Defaults construct; unknown keywords and ill-typed values are ClbenchErrors naming the parameter."""
    try:
        h.cls(h.context)
    except Exception as exc:
        h.fail(f"construction with the default hyper-parameters raised {type(exc).__name__}: {exc}")

    def rejected(given: dict[str, Any], name: str, what: str) -> None:
        try:
            h.cls(h.context, **given)
        except ClbenchError as exc:
            if name not in str(exc):
                h.fail(f"{what} was rejected, but the error does not name '{name}': {exc}")
            return
        except Exception as exc:
            h.fail(f"{what} raised {type(exc).__name__} ({exc}), not a ClbenchError naming '{name}'")
        h.fail(f"{what} was accepted; expected a ClbenchError naming '{name}'")

    bogus = "no_such_hyperparameter"
    rejected({**h.hp, bogus: 1}, bogus, f"an unknown keyword '{bogus}'")
    for name, hp in h.cls.hyperparameters().items():
        if hp.type is object:
            continue  # declared as accepting anything
        bad_values: list[Any] = [_IllTyped()]
        if hp.type is not str or hp.choices:
            bad_values.append("not-a-valid-value")  # what a mistyped command line gives
        for bad in bad_values:
            rejected({**h.hp, name: bad}, name, f"the ill-typed value {bad!r} for '{name}' ({hp.describe()})")


@_check("episode_restore")
def _episode_restore(h: _Harness) -> None:
    """Snapshot, learn a support set of new classes, restore: predictions unchanged, episodes independent.

    Uses `episodic_state()` / `load_episodic_state()` when the learner defines them, else `state_dict()` /
    `load_state_dict()`. The snapshot is deep-copied when taken and when restored (state dicts may share
    storage with the live learner, as torch's do), as the episode runner does.
    """
    has_get, has_put = (callable(getattr(h.cls, m, None)) for m in ("episodic_state", "load_episodic_state"))
    if has_get != has_put:
        h.fail("defines only one of episodic_state() / load_episodic_state(); define both or neither")
    get, put = ("episodic_state", "load_episodic_state") if has_get else ("state_dict", "load_state_dict")
    learner = h.make()
    h.fit(learner, [[0, 1]])
    x, _ = h.query()
    before = h.predict(learner, x, h.task(0))
    snapshot = copy.deepcopy(h.call(learner, get))
    after_episode = []
    for episode in (1, 2):
        seed_everything(SEED + 1)
        h.fit(learner, [[2, 3, 4]], first=1, per_class=2, passes=5)
        after_episode.append(h.predict(learner, x, h.task(1)))
        h.call(learner, put, copy.deepcopy(snapshot))
        h.same(before, h.predict(learner, x, h.task(0)),
               f"after episode {episode}, {put}() of the {get}() taken before it did not restore the predictions",
               exact=False)
    missing = ("that learning a support set changes is missing from episodic_state()" if has_get else
               "that learn() uses is missing from state_dict() (the state_complete check says which kind)")
    h.same(*after_episode, f"the same support set learned twice from the same restored {get}() gave different "
           f"predictions: state {missing}, so it carries over from one episode to the next", exact=False)


# ---- public entry points -------------------------------------------------------------------------
def _bind(check: Check, learner_cls: type[Learner], hyperparameters: dict[str, Any]) -> Callable[[], None]:
    def run() -> None:
        """Run the check single-threaded (tiny data); the caller's random states and thread count are kept."""
        python_state, numpy_state, threads = random.getstate(), np.random.get_state(), torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            with torch.random.fork_rng(devices=[]):
                check.run(_Harness(check.name, learner_cls, hyperparameters))
        finally:
            torch.set_num_threads(threads)
            random.setstate(python_state)
            np.random.set_state(numpy_state)

    run.__name__ = learner_cls.__name__  # pytest ids: "<check name>-<learner class>"
    return run


def learner_checks(learner_cls: type[Learner], /, **hyperparameters: Any) -> list[tuple[str, Callable[[], None]]]:
    """(check name, zero-argument callable) for every check that applies to `learner_cls`, e.g. for
    `@pytest.mark.parametrize("name,check", learner_checks(MyLearner))`."""
    if not (isinstance(learner_cls, type) and issubclass(learner_cls, Learner)):
        raise LearnerCheckFailed(f"class_attributes: {learner_cls!r} is not a subclass of clbench.Learner")
    return [(c.name, _bind(c, learner_cls, dict(hyperparameters))) for c in CHECKS.values() if c.applies(learner_cls)]


def check_learner(learner_cls: type[Learner], /, **hyperparameters: Any) -> None:
    """Run every applicable check on `learner_cls(context, **hyperparameters)`; raise
    `LearnerCheckFailed` (message starting with the check's name) at the first violation."""
    for _, check in learner_checks(learner_cls, **hyperparameters):
        check()
