"""Scores that are not finite stop the run with one line naming the learner, the method and the
experience, and nothing reaches the leaderboard (issue 11, "Garbage accepted silently")."""

from __future__ import annotations

import pytest
import torch

from clbench import runner
from clbench.learners.finetune import Finetune
from clbench.learners.nmc import NMC
from synthetic import make_scenario


class NaNScores(NMC):
    """A plugin whose scores turn NaN once it has learned two experiences."""

    name = "nan-scores"

    def predict(self, x, task):
        scores = super().predict(x, task)
        return scores.fill_(float("nan")) if int((self.memory.counts > 0).sum()) > 2 else scores


class InfScores(NMC):
    name = "inf-scores"

    def predict(self, x, task):
        return super().predict(x, task).fill_(float("inf"))


class Diverges(Finetune):
    """Training that blows up: after its first update every weight is NaN (as lr=nan or a NaN loss give)."""

    name = "diverges"

    def learn(self, x, y, task):
        super().learn(x, y, task)
        with torch.no_grad():
            for p in self.net.parameters():
                p.fill_(float("nan"))


@pytest.mark.parametrize("cls,experience", [(NaNScores, 1), (InfScores, 0), (Diverges, 0)])
def test_non_finite_scores_stop_the_run_with_one_line(cls, experience):
    with pytest.raises(runner.LearnerFailed) as caught:
        runner.run(make_scenario(), cls, device="cpu", progress=False)
    assert str(caught.value) == (f"learner '{cls.name}': predict() at experience {experience} returned scores that are "
                                 "not finite (NaN or inf); if its training diverged, lower lr or check the loss")


def test_non_finite_scores_in_a_few_shot_episode_stop_the_run():
    from test_episodes import _episodic_scenario

    class NaNInEpisodes(NMC):
        name = "nan-in-episodes"

        def predict(self, x, task):
            return super().predict(x, task) * float("nan")

    with pytest.raises(runner.LearnerFailed, match=r"^learner 'nan-in-episodes': predict\(\) at experience 0 returned "
                                                   r"scores that are not finite"):
        runner.run(_episodic_scenario(n_episodes=3), NaNInEpisodes, device="cpu", progress=False)


def test_the_cli_appends_nothing_for_a_run_with_non_finite_scores(tmp_path, capsys):
    from clbench.cli import main

    board = tmp_path / "board.csv"
    status = main(["run", "--learner", "test_finite_scores:Diverges", "--device", "cpu", "--no-progress",
                   "--leaderboard", str(board)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status != 0 and not board.exists()
    assert len(err) == 1 and err[0].startswith("clbench: error: learner 'diverges': predict() at experience 0 "
                                               "returned scores that are not finite")

