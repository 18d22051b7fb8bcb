"""The command line: the main job, plugins, and one-line errors that leave the leaderboard alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clbench import leaderboard
from clbench.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def run_cli(*args, board):
    return main(["run", "--no-progress", "--leaderboard", str(board), *args])


def test_list_shows_learners_scenarios_and_hyperparameters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "finetune" in out and "nmc" in out and "split-digits" in out and "lr=0.05" in out
    assert main(["list", "--learner", "finetune"]) == 0
    assert "sgd | adam" in capsys.readouterr().out


def test_run_prints_a_table_and_appends_rows(capsys, leaderboard_path):
    assert run_cli("--learner", "nmc", "--seed", "0,1", board=leaderboard_path) == 0
    out = capsys.readouterr().out
    assert "final acc" in out and "2 row(s) appended" in out
    frame = leaderboard.read(leaderboard_path)
    assert frame["seed"].tolist() == [0, 1] and set(frame["learner"]) == {"nmc"}
    assert main(["leaderboard", "--leaderboard", str(leaderboard_path)]) == 0
    assert "nmc" in capsys.readouterr().out


def test_settings_reach_the_scenario_and_the_learner(leaderboard_path):
    assert run_cli("--learner", "finetune", "--set", "n_experiences=2", "--set", "lr=0.01", "--set", "epochs=1",
                   board=leaderboard_path) == 0
    row = leaderboard.read(leaderboard_path).iloc[0]
    assert row["n_experiences"] == 2 and '"lr": 0.01' in row["learner_config"]
    assert '"n_experiences": 2' in row["scenario_overrides"]


@pytest.mark.parametrize("args,message", [
    (["--learner", "nope"], r"unknown learner 'nope' \(known: .*finetune.*nmc"),
    (["--scenario", "nope"], r"unknown scenario 'nope' \(known: .*split-digits"),
    (["--set", "bogus=1"], r"unknown --set key 'bogus'.*accepted: .*batch_size.*lr"),
    (["--set", "lr=fast"], r"hyper-parameter 'lr' got 'fast'; accepted: float"),
    (["--set", "epochs=many"], r"setting 'epochs' got 'many'"),
    (["--set", "lr"], r"--set expects KEY=VALUE"),
    (["--seed", "one"], r"--seed expects integers"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, message, capsys, leaderboard_path):
    assert run_cli(*args, board=leaderboard_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert not leaderboard_path.exists()


def test_unwritable_leaderboard_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert run_cli(board=tmp_path / "file" / "board.csv") == 2
    assert "cannot write the leaderboard" in capsys.readouterr().err


def _write_plugin(folder: Path, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "my_learner.py").write_text(textwrap.dedent(body))


def test_a_plugin_that_raises_fails_cleanly_and_keeps_the_leaderboard(tmp_path, monkeypatch, capsys, leaderboard_path):
    leaderboard_path.parent.mkdir()
    leaderboard_path.write_text("")
    before = leaderboard_path.read_bytes()
    _write_plugin(tmp_path, """
        from clbench import Learner
        class Crashes(Learner):
            name = "crashes"
            wants = "features"
            def learn(self, x, y, task):
                raise RuntimeError("division by zero in my update")
            def predict(self, x, task):
                return x
        """)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    assert run_cli("--learner", "my_learner:Crashes", board=leaderboard_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clbench: error: learner 'crashes' raised in learn() at experience 0: RuntimeError")
    assert len(err.splitlines()) == 1
    assert leaderboard_path.read_bytes() == before
    sys.modules.pop("my_learner", None)


def _readme_plugin() -> str:
    section = README.read_text().split("## Writing your own learner", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_plugin_runs_verbatim_by_module_name(tmp_path, monkeypatch, leaderboard_path):
    code = _readme_plugin()
    assert len(code.strip().splitlines()) <= 30
    _write_plugin(tmp_path, code)
    monkeypatch.chdir(tmp_path)
    assert "--learner my_learner:LinearProbe --set lr=0.05" in README.read_text()
    assert run_cli("--learner", "my_learner:LinearProbe", "--set", "lr=0.05", board=leaderboard_path) == 0
    row = leaderboard.read(leaderboard_path).iloc[0]
    assert row["learner"] == "linear-probe"
    assert json.loads(row["accuracy_matrix"])[-1][-1] > 80  # it learns (and, trained in turn, forgets)
    sys.modules.pop("my_learner", None)


def test_readme_plugin_runs_by_entry_point_of_another_package(tmp_path, monkeypatch, leaderboard_path):
    site = tmp_path / "site"
    _write_plugin(site / "other_package", _readme_plugin())
    (site / "other_package" / "__init__.py").write_text("")
    dist = site / "other_package-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: other-package\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[clbench.learners]\nlinear-probe = other_package.my_learner:LinearProbe\n")
    monkeypatch.syspath_prepend(str(site))
    assert run_cli("--learner", "linear-probe", board=leaderboard_path) == 0
    assert leaderboard.read(leaderboard_path).iloc[0]["learner"] == "linear-probe"


def test_console_script_main_job(tmp_path):
    """`clbench run` with no arguments, as a new user types it (the default leaderboard path)."""
    exe = Path(sys.executable).with_name("clbench")
    proc = subprocess.run([str(exe), "run"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "CLBENCH_LEADERBOARD"})
    assert proc.returncode == 0, proc.stderr
    finals = {r["learner"]: r["final_accuracy"] for _, r in leaderboard.read(tmp_path / "leaderboard" / "leaderboard.csv").iterrows()}
    assert finals["finetune"] < 30 and finals["joint"] > 90 and finals["nmc"] > 85


def test_an_interrupted_run_resumes_with_the_same_command(tmp_path, monkeypatch, capsys, leaderboard_path):
    _write_plugin(tmp_path, """
        from pathlib import Path
        from clbench.learners.finetune import Finetune
        class Stoppable(Finetune):
            def begin_experience(self, info):
                if info.index == 2 and Path("interrupt").exists():
                    raise KeyboardInterrupt
        """)
    monkeypatch.chdir(tmp_path)
    args = ("--learner", "my_learner:Stoppable", "--set", "epochs=1")
    (tmp_path / "interrupt").touch()
    assert run_cli(*args, board=leaderboard_path) == 130
    assert "interrupted (finished experiences are saved: the same command resumes)" in capsys.readouterr().err
    checkpoints = Path(os.environ["CLBENCH_DATA"]) / "checkpoints"
    assert len(list(checkpoints.glob("*.pt"))) == 1 and not leaderboard_path.exists()

    (tmp_path / "interrupt").unlink()
    assert run_cli(*args, board=leaderboard_path) == 0
    assert "resuming finetune seed 0 from its checkpoint" in capsys.readouterr().err
    assert list(checkpoints.iterdir()) == []  # removed once the row is stored
    assert run_cli(*args, "--no-resume", board=leaderboard_path) == 0
    resumed, fresh = leaderboard.read(leaderboard_path)["accuracy_matrix"]
    assert json.loads(resumed) == json.loads(fresh)
    sys.modules.pop("my_learner", None)


def test_version_and_a_prepare_of_missing_data_fails(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("clbench 0.")
    assert main(["data", "--data-root", str(tmp_path), "--prepare", "cifar100"]) == 1
    assert "missing" in capsys.readouterr().out


def test_a_closed_pipe_ends_the_listing_quietly(tmp_path):
    script = "from clbench.cli import entry; entry()"
    reader = subprocess.run(f"{sys.executable} -c '{script}' list | head -1", shell=True, capture_output=True,
                            text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert reader.stdout.startswith("Learners") and "Traceback" not in reader.stderr and "Error" not in reader.stderr


def test_the_leaderboard_prints_text_markdown_csv_and_a_whole_page(capsys, leaderboard_path):
    assert run_cli("--learner", "nmc", "--seed", "0,1", "--set", "n_experiences=2", board=leaderboard_path) == 0
    shown = {}
    for fmt in ("text", "markdown", "csv", "html"):
        capsys.readouterr()
        assert main(["leaderboard", "--leaderboard", str(leaderboard_path), "--format", fmt]) == 0
        shown[fmt] = capsys.readouterr().out
    assert "rank" in shown["text"] and "#### split-digits" in shown["markdown"]
    assert shown["csv"].splitlines()[0].startswith("scenario,stream,setting_id,learner,learner_config")
    assert "final_accuracy_ci95" in shown["csv"] and len(shown["csv"].splitlines()) == 2
    assert shown["html"].startswith("<!DOCTYPE html>") and shown["html"].rstrip().endswith("</html>")
