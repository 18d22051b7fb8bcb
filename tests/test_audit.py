"""The malformed-input audit: every bad input a user can give (command line, scenario specs, recipe
files, rows to reproduce, data files, leaderboard files, plugins, checkpoints, non-finite or out-of-domain values, files torn by a
killed write) ends in ONE clear line on stderr, never a traceback, leaves the leaderboard exactly as
it was and leaves nothing half-written behind."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path
from typing import Callable

import pytest
import torch

from clbench.cli import main

PLUGIN_HEADER = "import torch\nfrom clbench import Learner\n"
NAN_SCORES = PLUGIN_HEADER + textwrap.dedent("""
    class NanScores(Learner):
        name = "nan-scores"
        wants = "features"
        def learn(self, x, y, task):
            pass
        def predict(self, x, task):
            return torch.full((len(x), self.context.num_classes), float("nan"))
""")
DIVERGING = PLUGIN_HEADER + textwrap.dedent("""
    class Diverging(Learner):
        name = "diverging"
        wants = "features"
        def __init__(self, context, *, scale: float = 1.0):
            super().__init__(context)
            self.head = torch.nn.Linear(context.feature_dim, context.num_classes)
            self.opt = torch.optim.SGD(self.head.parameters(), lr=1.0)
        def learn(self, x, y, task):
            loss = torch.nn.functional.cross_entropy(self.head(x), y) * float("inf")
            self.opt.zero_grad(); loss.backward(); self.opt.step()
        def predict(self, x, task):
            return self.head(x)
""")
NO_DEFAULT = PLUGIN_HEADER + textwrap.dedent("""
    class NoDefault(Learner):
        name = "no-default"
        def __init__(self, context, *, lr: float):
            super().__init__(context)
""")
NOT_A_LEARNER = "class Thing:\n    name = 'thing'\n"


class _Evil:
    """Unpickling this writes a marker file: a data file must never run code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _plugin(source: str, cls: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        _write(tmp / "audit_plugin.py", source)
        return ["run", "--learner", f"audit_plugin:{cls}"]
    return setup


def _spec(text: bytes | str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["run", "--scenario", str(_write(tmp / "bad.toml", text))]


def _board(text: bytes | str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["leaderboard", "--leaderboard", str(_write(tmp / "board.csv", text))]


def _recipe(text: bytes | str, *options: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["sweep", str(_write(tmp / "recipes" / "bad.toml", text).parent), *options]


GOOD_RECIPE = 'scenario = "split-digits"\nlearner = "nmc"\nseeds = [0]\n'


def _two_recipes_one_run(tmp: Path) -> list[str]:
    _write(tmp / "recipes" / "a.toml", GOOD_RECIPE)
    _write(tmp / "recipes" / "b.toml", GOOD_RECIPE)
    return ["sweep", str(tmp / "recipes")]


def _reproduce(**changes: str) -> Callable[[Path], list[str]]:
    """`clbench reproduce` of a copy of the board's row with some cells changed, in another CSV."""
    def setup(tmp: Path) -> list[str]:
        from clbench import leaderboard
        row = leaderboard.read(tmp / "board" / "leaderboard.csv").iloc[0].to_dict()
        other = tmp / "other.csv"
        leaderboard.append_rows(other, [{**{c: row[c] for c in leaderboard.COLUMNS}, "run_id": "abc123", **changes}])
        return ["reproduce", "abc123", "--leaderboard", str(other)]
    return setup


def _run(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["run", *args]


def _evil_cifar(tmp: Path) -> list[str]:
    root = tmp / "evil-data" / "cifar-100-python"
    for name in ("meta", "train", "test"):
        _write(root / name, pickle.dumps(_Evil(tmp / "marker")))
    return ["run", "--scenario", "split-cifar100", "--data-root", str(tmp / "evil-data")]


STOPPABLE = textwrap.dedent("""
    from pathlib import Path
    from clbench.learners.finetune import Finetune
    class Stoppable(Finetune):
        def begin_experience(self, info):
            if info.index == 1 and Path("interrupt").exists():
                raise KeyboardInterrupt
""")


def _drop(field: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        saved = torch.load(path, weights_only=True)
        del saved[field]
        torch.save(saved, path)
    return damage


def _older_format(path: Path) -> None:
    saved = torch.load(path, weights_only=True)
    torch.save({**saved, "format": 1}, path)


CHECKPOINT_CASES: dict[str, Callable[[Path], None]] = {
    "checkpoint-missing-rows": _drop("rows"),
    "checkpoint-missing-learner": _drop("learner"),
    "checkpoint-older-format": _older_format,
    "checkpoint-garbage": lambda path: path.write_bytes(b"not a checkpoint"),
    "checkpoint-truncated": lambda path: path.write_bytes(path.read_bytes()[:100]),
}


CASES: dict[str, Callable[[Path], list[str]]] = {
    # numbers out of range / out of domain
    "seed-huge": _run("--seed", "99999999999999999999"),
    "seed-negative": _run("--seed", "-1"),
    "seed-repeated": _run("--seed", "0,0"),
    "seed-text": _run("--seed", "zero"),
    "class-order-negative": _run("--set", "class_order=-5"),
    "class-order-huge": _run("--set", "class_order=99999999999999999999"),
    "image-size-negative": _run("--set", "image_size=-1"),
    "experiences-zero": _run("--set", "n_experiences=0"),
    "experiences-too-many": _run("--set", "n_experiences=11"),
    "epochs-zero": _run("--set", "epochs=0"),
    "batch-size-negative": _run("--set", "batch_size=-3"),
    "lr-nan": _run("--learner", "finetune", "--set", "lr=nan"),
    "lr-inf": _run("--learner", "finetune", "--set", "lr=inf"),
    "lr-negative": _run("--learner", "finetune", "--set", "lr=-0.1"),
    "std-zero": _run("--set", "std=0"),
    "mean-nan": _run("--set", "mean=nan"),
    "crop-padding-negative": _run("--set", "crop_padding=-1"),
    # keys and names
    "key-two-meanings": _run("--learner", "simpleshot", "--set", "epochs=3"),
    "key-unknown": _run("--set", "bogus=1"),
    "key-bad-scope": _run("--set", "replay.lr=0.1"),
    "learner-repeated": _run("--learner", "nmc,nmc"),
    "learner-unknown": _run("--learner", "nope"),
    "scenario-unknown": _run("--scenario", "nope"),
    # paths
    "weights-missing": _run("--learner", "nmc", "--set", "weights=does-not-exist.pt"),
    "weights-folder": _run("--learner", "nmc", "--set", "weights=."),
    "weights-not-a-checkpoint": lambda tmp: ["run", "--learner", "nmc", "--set",
                                             f"weights={_write(tmp / 'w.pt', b'not a checkpoint')}"],
    "data-root-is-a-file": lambda tmp: ["run", "--data-root", str(_write(tmp / "file", "x"))],
    "encoder-unknown": _run("--learner", "nmc", "--set", "encoder=no_such_model_xyz"),
    # scenario specs
    "toml-binary": _spec(bytes(range(256))),
    "toml-invalid": _spec("dataset = \n"),
    "toml-unknown-protocol": _spec('protocol = "zigzag"\n'),
    "toml-wrong-type": _spec('epochs = "many"\n'),
    "toml-unknown-key": _spec("colour = 3\n"),
    # leaderboard files
    "board-empty": _board(""),
    "board-not-a-leaderboard": _board("name,score\nx,1\n"),
    "board-non-utf8": _board(b"run_id,scenario\n\xff\xfe\xfa,1\n"),
    "board-missing": lambda tmp: ["leaderboard", "--leaderboard", str(tmp / "none.csv")],
    "append-to-foreign-csv": lambda tmp: ["run", "--learner", "nmc", "--leaderboard",
                                          str(_write(tmp / "foreign.csv", "name,score\nx,1\n"))],
    # plugins
    "plugin-syntax-error": _plugin("def broken(:\n", "X"),
    "plugin-raises-at-import": _plugin("raise RuntimeError('boom at import')\n", "X"),
    "plugin-no-default": _plugin(NO_DEFAULT, "NoDefault"),
    "plugin-not-a-learner": _plugin(NOT_A_LEARNER, "Thing"),
    "plugin-missing-class": _plugin(NOT_A_LEARNER, "Absent"),
    "plugin-nan-scores": _plugin(NAN_SCORES, "NanScores"),
    "plugin-diverging": _plugin(DIVERGING, "Diverging"),
    # data files that would run code
    "pickle-runs-code": _evil_cifar,
    # recipe files and sweeps
    "recipe-invalid-toml": _recipe("seeds = [0,\n"),
    "recipe-binary": _recipe(bytes(range(256))),
    "recipe-unknown-learner": _recipe(GOOD_RECIPE.replace('"nmc"', '"nope"')),
    "recipe-unknown-scenario": _recipe(GOOD_RECIPE.replace("split-digits", "nope")),
    "recipe-missing-learner": _recipe('scenario = "split-digits"\nseeds = [0]\n'),
    "recipe-unknown-key": _recipe(GOOD_RECIPE + "colour = 3\n"),
    "recipe-seeds-not-a-list": _recipe(GOOD_RECIPE.replace("[0]", "3")),
    "recipe-seeds-empty": _recipe(GOOD_RECIPE.replace("[0]", "[]")),
    "recipe-seeds-repeated": _recipe(GOOD_RECIPE.replace("[0]", "[1, 1]")),
    "recipe-seed-negative": _recipe(GOOD_RECIPE.replace("[0]", "[-1]")),
    "recipe-seed-text": _recipe(GOOD_RECIPE.replace("[0]", '["zero"]')),
    "recipe-settings-not-a-table": _recipe(GOOD_RECIPE + 'settings = "epochs=2"\n'),
    "recipe-unknown-setting": _recipe(GOOD_RECIPE + "[settings]\ncolour = 3\n"),
    "recipe-bad-setting-value": _recipe(GOOD_RECIPE + "[settings]\nepochs = 0\n"),
    "recipe-unknown-hyperparameter": _recipe(GOOD_RECIPE + "[hyperparameters]\nlr = 0.1\n"),
    "recipe-bad-hyperparameter": _recipe(GOOD_RECIPE.replace('"nmc"', '"finetune"') + '[hyperparameters]\nlr = "fast"\n'),
    "recipes-define-one-run-twice": _two_recipes_one_run,
    "recipes-missing": lambda tmp: ["sweep", str(tmp / "no-such-folder")],
    "recipes-empty-folder": lambda tmp: ["sweep", str((tmp / "empty").mkdir() or tmp / "empty")],
    "recipes-filter-matches-nothing": _recipe(GOOD_RECIPE, "--filter", "nothing*"),
    "sweep-to-foreign-csv": lambda tmp: [*_recipe(GOOD_RECIPE)(tmp), "--leaderboard",
                                         str(_write(tmp / "foreign.csv", "name,score\nx,1\n"))],
    # reproducing a row
    "reproduce-unknown-run": lambda tmp: ["reproduce", "nope"],
    "reproduce-data-missing": _reproduce(scenario="split-cifar100", scenario_overrides="{}"),
    "reproduce-learner-gone": _reproduce(learner="gone_plugin:Gone"),
    "reproduce-weights-missing": _reproduce(scenario_overrides='{"weights": "missing.pt"}'),
}


@pytest.fixture
def board(tmp_path: Path) -> Path:
    """A leaderboard that already holds one real row: no bad input may change it."""
    path = tmp_path / "board" / "leaderboard.csv"
    assert main(["run", "--no-progress", "--learner", "nmc", "--set", "n_experiences=2", "--leaderboard", str(path),
                 "--data-root", str(tmp_path / "setup-root")]) == 0
    return path


def test_the_audit_covers_at_least_forty_inputs() -> None:
    assert len(CASES) + len(CHECKPOINT_CASES) + 3 >= 40


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line(case, tmp_path, board, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = board.read_bytes()
    capsys.readouterr()
    argv = CASES[case](tmp_path)
    if argv[0] in ("run", "sweep", "reproduce"):
        argv = [*argv, *(["--no-progress"] if argv[0] != "reproduce" else [])] + \
            ([] if "--leaderboard" in argv else ["--leaderboard", str(board)])
    status = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status != 0, f"{case}: accepted ({err})"
    assert len(lines) == 1 and lines[0].startswith("clbench: error: "), f"{case}: {err}"
    assert "Traceback" not in err
    assert board.read_bytes() == before
    assert not (tmp_path / "marker").exists(), "a data file ran code"
    assert not list(tmp_path.rglob("*.tmp")), "a half-written file was left behind"
    assert not list(board.parent.glob("*.lock")), "a lock file was left behind"


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_a_damaged_checkpoint_is_one_line(case, tmp_path, board, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    _write(tmp_path / "audit_stoppable.py", STOPPABLE)
    args = ["run", "--learner", "audit_stoppable:Stoppable", "--set", "epochs=1", "--data-root", str(tmp_path / "root"),
            "--leaderboard", str(board), "--no-progress"]
    (tmp_path / "interrupt").touch()
    assert main(args) == 130
    (tmp_path / "interrupt").unlink()
    [checkpoint] = (tmp_path / "root" / "checkpoints").glob("*.pt")
    CHECKPOINT_CASES[case](checkpoint)
    before = board.read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("clbench: error: the checkpoint ") and "--no-resume" in lines[0]
    assert board.read_bytes() == before
    assert main([*args, "--no-resume"]) == 0  # the advice works
    assert not list((tmp_path / "root" / "checkpoints").iterdir())


def test_a_torn_leaderboard_line_is_set_aside_and_the_next_append_lands(tmp_path, board, capsys) -> None:
    """kill -9 in the middle of an append leaves a partial last line: the next append repairs the file."""
    whole = board.read_bytes()
    board.write_bytes(whole + whole.splitlines(keepends=True)[-1][:40])  # a row cut short, no newline
    assert main(["run", "--no-progress", "--learner", "nmc", "--set", "n_experiences=2", "--leaderboard", str(board),
                 "--data-root", str(tmp_path / "root")]) == 0
    assert main(["leaderboard", "--leaderboard", str(board)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    from clbench import leaderboard
    assert len(leaderboard.read(board)) == 2


def test_a_killed_writers_temporary_is_removed_by_the_next_run(tmp_path) -> None:
    checkpoints = tmp_path / "root" / "checkpoints"
    checkpoints.mkdir(parents=True)
    from clbench.files import _HOST
    orphan = checkpoints / f".x.pt.{2**22 + 12345}@{_HOST}.abcd.tmp"  # above any pid_max: its writer is gone
    orphan.write_bytes(b"half")
    assert main(["run", "--no-progress", "--learner", "nmc", "--set", "n_experiences=2", "--leaderboard",
                 str(tmp_path / "b.csv"), "--data-root", str(tmp_path / "root")]) == 0
    assert not orphan.exists()


@pytest.mark.parametrize("prepare", [[], ["--prepare"], ["--prepare", "cifar100"]])
def test_clbench_data_reports_a_pickle_that_would_run_code(prepare, tmp_path, capsys) -> None:
    """`clbench data` reports (a table, exit 1) instead of failing: the refused file is one row, and no code runs."""
    args = _evil_cifar(tmp_path)
    assert main(["data", *args[-2:], *prepare]) == 1
    out, err = capsys.readouterr()
    [row] = [line for line in out.splitlines() if line.startswith("cifar100")]
    assert "corrupt" in row and "refused" in row and "Traceback" not in out + err
    assert not (tmp_path / "marker").exists()
