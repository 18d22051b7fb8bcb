"""The runner: contract calls, masking, the accuracy matrix, timings and determinism."""

from __future__ import annotations

import pytest
import torch

from clbench import Learner, runner
from clbench.augment import ImageTransform
from clbench.learner import get_learner
from synthetic import make_scenario


class FavoursHighestClass(Learner):
    """Scores every sample 0, 1, ..., C-1: unmasked it always answers the highest class id."""

    name = "favours-highest"

    def __init__(self, context) -> None:
        super().__init__(context)
        self.calls = []

    def begin_experience(self, info):
        self.calls.append(("begin", info.index, info.classes, info.n_samples))

    def learn(self, x, y, task):
        self.calls.append(("learn", len(y), task))

    def end_experience(self, info):
        self.calls.append(("end", info.index))

    def predict(self, x, task):
        return torch.arange(self.context.num_classes, dtype=torch.float32).expand(len(x), -1)


def test_class_incremental_masks_to_classes_seen_so_far():
    result = runner.run(make_scenario(), FavoursHighestClass, seed=0, progress=False)
    # after exp 0 (classes 0,1): answers 1 -> half of exp 0 right, none of exp 1 (classes 2,3 masked out)
    # after exp 1: answers 3 -> none of exp 0, half of exp 1
    assert result.accuracy_matrix == [[50.0, 0.0], [0.0, 50.0]]
    assert result.accuracy_curve == [50.0, 25.0]  # all test data seen so far, pooled
    assert result.untrained_accuracy is None


def test_task_incremental_masks_to_the_task_and_measures_untrained_accuracy():
    result = runner.run(make_scenario(task_incremental=True), FavoursHighestClass, seed=0, progress=False)
    assert result.accuracy_matrix == [[50.0, 50.0], [50.0, 50.0]]
    assert result.untrained_accuracy == [50.0, 50.0]


def test_runner_drives_the_contract_in_order(monkeypatch):
    seen = []
    monkeypatch.setattr(FavoursHighestClass, "end_experience", lambda self, info: seen.append(list(self.calls)))
    runner.run(make_scenario(per_class=6, batch_size=4, epochs=2), FavoursHighestClass, progress=False)
    first = seen[0]
    assert first[0] == ("begin", 0, (0, 1), 12)
    # 12 samples, batch 4, 2 epochs -> 6 learn calls of 4 samples, no task id in class-incremental
    assert first[1:] == [("learn", 4, None)] * 6


def test_cumulative_learner_trains_on_everything_seen(monkeypatch):
    class Cumulative(FavoursHighestClass):
        name = "cumulative"
        cumulative = True

    calls = []
    monkeypatch.setattr(Cumulative, "begin_experience", lambda self, info: calls.append(info.n_samples))
    runner.run(make_scenario(n_classes=6, n_experiences=3, per_class=2), Cumulative, progress=False)
    assert calls == [4, 8, 12]


def test_needs_task_ids_receives_the_experience_index_in_class_incremental():
    class WantsTasks(FavoursHighestClass):
        name = "wants-tasks"
        needs_task_ids = True

    tasks = set()
    WantsTasks.learn = lambda self, x, y, task: tasks.add(task)
    runner.run(make_scenario(), WantsTasks, progress=False)
    assert tasks == {0, 1}


def test_costs_are_recorded():
    result = runner.run(make_scenario(), get_learner("finetune"), seed=0, progress=False)
    assert result.train_seconds > 0 and result.eval_seconds > 0
    assert result.samples_seen == 24  # 4 classes x 6 samples, one epoch
    assert result.n_parameters > 0 and result.state_mb > 0 and result.peak_memory_mb > 0
    assert result.device == "cpu"


@pytest.mark.parametrize("learner", ["finetune", "joint", "nmc"])
def test_same_seed_same_matrix(learner):
    cls = get_learner(learner)
    a = runner.run(make_scenario(), cls, seed=3, progress=False)
    b = runner.run(make_scenario(), cls, seed=3, progress=False)
    assert a.accuracy_matrix == b.accuracy_matrix


def test_wrong_predict_shape_is_reported():
    class BadShape(FavoursHighestClass):
        name = "bad-shape"

        def predict(self, x, task):
            return torch.zeros(len(x), 2)

    with pytest.raises(runner.LearnerFailed, match=r"predict\(\) returned \(\d+, 2\), expected \(\d+, 4\)"):
        runner.run(make_scenario(), BadShape, progress=False)


def test_a_learner_exception_becomes_one_line():
    class Broken(FavoursHighestClass):
        name = "broken"

        def learn(self, x, y, task):
            raise ValueError("boom")

    with pytest.raises(runner.LearnerFailed, match=r"learner 'broken' raised in learn\(\) at experience 0: ValueError: boom"):
        runner.run(make_scenario(), Broken, progress=False)


class RecordsInputs(FavoursHighestClass):
    name = "records-inputs"

    def learn(self, x, y, task):
        self.calls.append(("learn", x.clone()))


def _learned_inputs(**spec):
    seen = []
    RecordsInputs.end_experience = lambda self, info: seen.append(self.calls)
    runner.run(make_scenario(n_experiences=1, n_classes=2, per_class=4, batch_size=8, **spec), RecordsInputs, progress=False)
    return [c for c in seen[0] if c[0] == "learn"]


def test_augmentation_changes_train_inputs_between_epochs():
    plain = _learned_inputs(epochs=2)
    augmented = _learned_inputs(epochs=2, augment="crop-flip", crop_padding=1)
    sort = lambda x: x.flatten(1).sum(1).sort().values  # noqa: E731 (order-free summary of a batch)
    assert torch.allclose(sort(plain[0][1]), sort(plain[1][1]))
    assert not torch.allclose(sort(augmented[0][1]), sort(augmented[1][1]))


def test_image_size_resizes_on_the_device():
    inputs = _learned_inputs(image_size=12)
    assert inputs[0][1].shape[1:] == (1, 12, 12)


def test_task_free_scenarios_hide_boundaries():
    calls = []
    hooks = type("Hooks", (FavoursHighestClass,), {"name": "hooks", "begin_experience": lambda self, info: calls.append(info),
                                                   "end_experience": lambda self, info: calls.append(info)})
    result = runner.run(make_scenario(task_boundaries=False), hooks, progress=False)
    assert calls == [] and len(result.accuracy_matrix) == 2


def test_online_scenario_refuses_an_offline_learner():
    from clbench.errors import ClbenchError

    with pytest.raises(ClbenchError, match="learner 'joint' is not online-capable"):
        runner.run(make_scenario(online=True), get_learner("joint"), progress=False)
    with pytest.raises(ClbenchError, match="epochs must be 1"):
        make_scenario(online=True, epochs=3)


def test_class_incremental_scores_the_trained_classes_once_per_evaluation():
    class Counts(FavoursHighestClass):
        name = "counts"
        predicted = []

        def predict(self, x, task):
            Counts.predicted.append(len(x))
            return super().predict(x, task)

    runner.run(make_scenario(n_classes=6, n_experiences=3, test_per_class=2), Counts, progress=False)
    # one pass over the test samples of the classes trained so far; unseen classes cannot be right: not scored
    assert Counts.predicted == [4, 8, 12]
    Counts.predicted.clear()
    runner.run(make_scenario(n_classes=6, n_experiences=3, test_per_class=2, task_incremental=True), Counts, progress=False)
    # task-incremental: per experience (task id), untrained pass included; after each experience also one
    # pass without task ids over the trained classes' test samples (the Class-IL row)
    assert Counts.predicted == [4] * 3 + [4, 4, 4, 4] + [4, 4, 4, 8] + [4, 4, 4, 12]


@pytest.mark.parametrize("progress", [True, False])
def test_the_learner_is_told_whether_to_show_progress(progress):
    seen = []

    class Records(FavoursHighestClass):
        def __init__(self, context) -> None:
            super().__init__(context)
            seen.append(context.progress)

    runner.run(make_scenario(), Records, seed=0, progress=progress)
    assert seen == [progress]


def test_a_multi_line_learner_exception_is_still_one_line():
    class Verbose(FavoursHighestClass):
        name = "verbose"

        def learn(self, x, y, task):
            raise RuntimeError("Error(s) in loading:\n\tMissing key(s): 'w'")

    with pytest.raises(runner.LearnerFailed) as caught:
        runner.run(make_scenario(), Verbose, progress=False)
    assert str(caught.value) == ("learner 'verbose' raised in learn() at experience 0: "
                                 "RuntimeError: Error(s) in loading: Missing key(s): 'w'")


def test_augment_experiences_first_leaves_later_experiences_unaugmented():
    """FSCIL: only the base session (trained by gradient) is augmented; novel-session shots arrive as they
    are, so prototypes and means are built from the test transform's images."""
    sc = make_scenario(n_experiences=2, per_class=4, batch_size=8, augment="crop-flip", crop_padding=1,
                       augment_experiences="first")
    learned = {0: [], 1: []}
    RecordsExperience = type("RecordsExperience", (FavoursHighestClass,), {
        "name": "records-experience",
        "begin_experience": lambda self, info: setattr(self, "current", info.index),
        "learn": lambda self, x, y, task: learned[self.current].append((x.clone(), y.clone()))})
    runner.run(sc, RecordsExperience, progress=False)
    train = sc.dataset.partition("train")
    images, labels = torch.as_tensor(train.images), torch.as_tensor(train.labels)
    normalise = ImageTransform(sc.spec.image_size, sc.spec.mean, sc.spec.std)
    plain = {c: normalise(images[labels == c]).flatten(1) for c in range(4)}

    def unaugmented(x, y):
        return all((plain[int(c)] == row.flatten()).all(1).any() for row, c in zip(x, y))

    assert all(unaugmented(x, y) for x, y in learned[1])
    assert not all(unaugmented(x, y) for x, y in learned[0])  # the base session is augmented
    assert not unaugmented(*learned[0][0])


@pytest.mark.parametrize("terminal,progress", [(False, True), (False, False), (True, True)])
def test_one_log_line_per_experience_where_stderr_is_not_a_terminal(capsys, monkeypatch, terminal, progress):
    import sys

    if terminal:
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    runner.run(make_scenario(n_classes=6, n_experiences=3), FavoursHighestClass, seed=4, progress=progress)
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if line.startswith("favours-highest seed 4: experience")]
    if terminal or not progress:
        assert lines == []
        return
    # after experience i it answers the highest seen class: half of that experience right, the rest wrong
    expected = [("1/3", "50.00"), ("2/3", "25.00"), ("3/3", "16.67")]
    assert len(lines) == 3
    for line, (step, accuracy) in zip(lines, expected):
        head, elapsed = line.rsplit(", ", 1)
        assert head == f"favours-highest seed 4: experience {step}, accuracy {accuracy}"
        assert elapsed.endswith(" s elapsed") and float(elapsed.split()[0]) >= 0
