"""Every named scenario runs end to end through `clbench run` on format-exact fixtures."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from clbench import leaderboard
from clbench.cli import main
from clbench.scenario import available_scenarios


def _cifar_sessions(fmt, root):
    # write_cifar100's train labels are tile(arange(100), 2): index i is class i % 100
    base = [i for c in range(60) for i in (c, c + 100)]
    novel = [[i for c in range(60 + 5 * k, 65 + 5 * k) for i in (c, c + 100)] for k in range(8)]
    fmt.write_cifar_sessions(root, [base, *novel])


def _pooled_mini(fmt, root):
    folder = root / "mini-imagenet"
    (folder / "images").mkdir(parents=True)
    wnids = [f"n{k:08d}" for k in range(20)]
    for split, chosen in (("train", wnids[:12]), ("val", wnids[12:16]), ("test", wnids[16:])):
        rows = [(f"{w}{i:08d}.jpg", w) for w in chosen for i in range(6)]
        for name, _ in rows:
            fmt.write_jpeg(folder / "images" / name)
        fmt.write_csv(folder / f"{split}.csv", rows)


def _core50(fmt, root):
    from test_core50 import write_core50

    write_core50(root)


FIXTURES = {
    "core50-ni": (_core50, ["--set", "image_size=16"]),
    "core50-nc": (_core50, ["--set", "image_size=16"]),
    "core50-nic": (_core50, ["--set", "image_size=16"]),
    "split-cifar100": (lambda fmt, root: fmt.write_cifar100(root), []),
    "split-cifar100-20": (lambda fmt, root: fmt.write_cifar100(root), []),
    "split-cifar100-til": (lambda fmt, root: fmt.write_cifar100(root), []),
    "split-miniimagenet": (_pooled_mini, ["--set", "n_experiences=4"]),
    "split-cifar100-online": (lambda fmt, root: fmt.write_cifar100(root), []),
    "split-miniimagenet-online": (_pooled_mini, ["--set", "n_experiences=4"]),
    "miniimagenet-5way-1shot": (_pooled_mini, ["--set", "way=3", "--set", "query=2", "--set", "test_episodes=20"]),
    "miniimagenet-5way-5shot": (_pooled_mini, ["--set", "way=3", "--set", "query=1", "--set", "test_episodes=20"]),
    "miniimagenet-fedrecon": (_pooled_mini, ["--set", "n_base_classes=4", "--set", "clients=2",
                                             "--set", "classes_per_client=2", "--set", "client_shots=2",
                                             "--set", "episodes=5"]),
    "cifar100-fscil": (lambda fmt, root: (fmt.write_cifar100(root), _cifar_sessions(fmt, root)), []),
    "miniimagenet-fscil": (lambda fmt, root: fmt.write_fscil(root), []),
}
EMBEDDED = {"split-digits", "split-digits-til", "split-digits-online"}
LEARNERS = {"miniimagenet-fedrecon": "nmc,protonet"}  # federated: mergeable learners only


def test_every_named_scenario_has_a_fixture():
    assert set(available_scenarios()) - EMBEDDED == set(FIXTURES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_scenario_runs_on_fixtures(name, fmt, tmp_path, capsys):
    write, extra = FIXTURES[name]
    write(fmt, tmp_path / "data")
    board = tmp_path / "board.csv"
    learners = LEARNERS.get(name, "nmc,finetune")
    code = main(["run", "--scenario", name, "--learner", learners, "--data-root", str(tmp_path / "data"),
                 "--leaderboard", str(board), "--no-progress", "--set", "scenario.backbone=small_cnn", *extra])
    assert code == 0, capsys.readouterr().err
    frame = leaderboard.read(board)
    assert list(frame["learner"]) == learners.split(",")
    spec = available_scenarios()[name]
    for _, row in frame.iterrows():
        matrix = json.loads(row["accuracy_matrix"])
        assert len(matrix) == row["n_experiences"] and all(len(r) == len(matrix) for r in matrix)
        assert 0 <= row["final_accuracy"] <= 100
        assert row["protocol"] == spec.protocol
        assert pd.isna(row["fewshot_accuracy"]) == (spec.protocol != "episodes")
        assert pd.isna(row["base_accuracy"]) == (spec.protocol != "fscil")
    # same data, same spec: same fingerprint in both rows
    assert frame["scenario_fingerprint"].nunique() == 1


def test_missing_data_is_one_line(tmp_path, capsys):
    code = main(["run", "--scenario", "split-cifar100", "--learner", "nmc", "--data-root", str(tmp_path),
                 "--leaderboard", str(tmp_path / "b.csv"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cifar-100-python" in err
    assert not (tmp_path / "b.csv").exists()


def test_data_command_reports_states(fmt, tmp_path, capsys):
    fmt.write_miniimagenet(tmp_path)
    assert main(["data", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mini-imagenet" in out and "present" in out and "missing" in out
    assert main(["data", "--data-root", str(tmp_path), "--prepare", "mini-imagenet"]) == 0
    assert "prepared" in capsys.readouterr().out
