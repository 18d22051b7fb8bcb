"""Resuming interrupted runs (DESIGN §8): a run interrupted after some experiences and started again
with its checkpoint gives exactly the result of an uninterrupted run; checkpoints are written
atomically and belong to one run."""

from __future__ import annotations

import pytest
import torch

from clbench import runner
from clbench.checkpoint import Checkpoint, random_states, run_key, set_random_states
from clbench.errors import ClbenchError
from clbench.learner import get_learner
from synthetic import make_scenario

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIGS = {"finetune": {"lr": 0.1}, "replay": {"lr": 0.1, "buffer_size": 8}, "nmc": {}}


def scenario():
    """4 experiences, 2 epochs, crop-flip augmentation: shuffling, augmentation and the learners'
    own randomness all have to be carried over."""
    return make_scenario(n_classes=8, n_experiences=4, per_class=6, epochs=2, augment="crop-flip", crop_padding=1)


def interrupting(cls, at: int):
    """`cls`, unchanged except that learning experience `at` is interrupted (as by Ctrl-C)."""
    class Interrupted(cls):
        def begin_experience(self, info):
            if info.index == at:
                raise KeyboardInterrupt
            super().begin_experience(info)
    Interrupted.__qualname__ = cls.__qualname__  # the same run as far as the checkpoint key goes
    Interrupted.__module__ = cls.__module__
    return Interrupted


def checkpoint_for(tmp_path, sc, cls, config, seed=0):
    return Checkpoint(tmp_path, run_key(sc, cls, config, seed, torch.device("cpu")))


def whole_and_resumed(tmp_path, sc, cls, config, seed=3, at=2):
    """The results of an uninterrupted run and of the same run interrupted at experience `at` then resumed."""
    whole = runner.run(sc, cls, config, seed=seed, device="cpu", progress=False)
    checkpoint = checkpoint_for(tmp_path, sc, cls, config, seed=seed)
    with pytest.raises(KeyboardInterrupt):
        runner.run(sc, interrupting(cls, at), config, seed=seed, device="cpu", progress=False, checkpoint=checkpoint)
    return whole, runner.run(sc, cls, config, seed=seed, device="cpu", progress=False, checkpoint=checkpoint)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("at", [1, 3])
def test_a_resumed_run_gives_the_uninterrupted_result(tmp_path, name, at):
    sc, cls, config = scenario(), get_learner(name), CONFIGS[name]
    whole = runner.run(sc, cls, config, seed=3, device="cpu", progress=False)
    checkpoint = checkpoint_for(tmp_path, sc, cls, config, seed=3)
    with pytest.raises(KeyboardInterrupt):
        runner.run(sc, interrupting(cls, at), config, seed=3, device="cpu", progress=False, checkpoint=checkpoint)
    assert checkpoint.path.exists() and list(tmp_path.iterdir()) == [checkpoint.path]  # no temporary file left
    assert len(checkpoint.load()["rows"]) == at

    resumed = runner.run(sc, cls, config, seed=3, device="cpu", progress=False, checkpoint=checkpoint)
    assert resumed.accuracy_matrix == whole.accuracy_matrix
    assert resumed.accuracy_curve == whole.accuracy_curve
    assert resumed.samples_seen == whole.samples_seen


def test_a_finished_runs_checkpoint_replays_its_result_without_training(tmp_path):
    sc, cls = scenario(), get_learner("finetune")
    checkpoint = checkpoint_for(tmp_path, sc, cls, {})
    first = runner.run(sc, cls, {}, device="cpu", progress=False, checkpoint=checkpoint)

    class MustNotLearn(cls):
        def learn(self, x, y, task):
            raise AssertionError("a finished run was trained again")
    MustNotLearn.__qualname__, MustNotLearn.__module__ = cls.__qualname__, cls.__module__
    again = runner.run(sc, MustNotLearn, {}, device="cpu", progress=False, checkpoint=checkpoint)
    assert again.accuracy_matrix == first.accuracy_matrix


def test_the_key_names_one_run():
    sc, nmc = scenario(), get_learner("nmc")
    cpu = torch.device("cpu")
    key = run_key(sc, nmc, {}, 0, cpu)
    assert key == run_key(scenario(), nmc, {}, 0, cpu)
    others = {run_key(sc, nmc, {}, 1, cpu), run_key(sc, nmc, {"l2_normalize": True}, 0, cpu),
              run_key(sc, get_learner("finetune"), {}, 0, cpu),
              run_key(make_scenario(n_classes=8, n_experiences=4, per_class=6, epochs=3), nmc, {}, 0, cpu)}
    assert key not in others and len(others) == 4


def test_a_foreign_or_corrupt_checkpoint_is_one_clear_error(tmp_path):
    sc, nmc = scenario(), get_learner("nmc")
    mine = checkpoint_for(tmp_path, sc, nmc, {})
    Checkpoint(tmp_path, "another-run").save({"rows": []})
    (tmp_path / "another-run.pt").rename(mine.path)
    with pytest.raises(ClbenchError, match="belongs to another run.*--no-resume"):
        runner.run(sc, nmc, {}, device="cpu", progress=False, checkpoint=mine)
    mine.path.write_bytes(b"not a checkpoint")
    with pytest.raises(ClbenchError, match="checkpoint .* cannot be read .*--no-resume"):
        mine.load()


def _saved_progress(tmp_path):
    """An interrupted finetune run's checkpoint: (scenario, learner class, checkpoint, its content)."""
    sc, cls = scenario(), get_learner("finetune")
    checkpoint = checkpoint_for(tmp_path, sc, cls, {})
    with pytest.raises(KeyboardInterrupt):
        runner.run(sc, interrupting(cls, 2), {}, device="cpu", progress=False, checkpoint=checkpoint)
    return sc, cls, checkpoint, torch.load(checkpoint.path, weights_only=True)


@pytest.mark.parametrize("field", runner.PROGRESS_FIELDS)
def test_a_checkpoint_without_a_field_is_one_clear_error(tmp_path, field):
    sc, cls, checkpoint, saved = _saved_progress(tmp_path)
    del saved[field]
    torch.save(saved, checkpoint.path)
    with pytest.raises(ClbenchError, match=rf"lacks the field '{field}'; delete it, or rerun with --no-resume"):
        runner.run(sc, cls, {}, device="cpu", progress=False, checkpoint=checkpoint)


@pytest.mark.parametrize("older", [None, 1])
def test_a_checkpoint_of_another_format_is_one_clear_error(tmp_path, older):
    sc, cls, checkpoint, saved = _saved_progress(tmp_path)
    if older is None:
        del saved["format"]  # as written before checkpoints recorded their format
    else:
        saved["format"] = older
    torch.save(saved, checkpoint.path)
    with pytest.raises(ClbenchError, match=r"was written in (an older format|format 1); this clbench reads "
                                           r"checkpoint format \d+; delete it, or rerun with --no-resume"):
        runner.run(sc, cls, {}, device="cpu", progress=False, checkpoint=checkpoint)


@pytest.mark.parametrize("field,value,detail", [
    ("learner", {"net": {}}, "learner 'finetune' raised in load_state_dict"),  # a learner state of another layout
    ("trainer", {"generator": "not a state"}, "TypeError"),
])
def test_checkpoint_content_that_does_not_fit_the_run_is_one_clear_error(tmp_path, field, value, detail):
    sc, cls, checkpoint, saved = _saved_progress(tmp_path)
    saved[field] = value
    torch.save(saved, checkpoint.path)
    with pytest.raises(ClbenchError, match=rf"does not fit this run \({detail}.*\); delete it, or rerun with --no-"):
        runner.run(sc, cls, {}, device="cpu", progress=False, checkpoint=checkpoint)
