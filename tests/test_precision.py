"""Mixed precision: `--precision auto|bf16|fp32` resolved per device, learn/predict run under bf16
autocast when asked, fp32 unchanged bit for bit, and the resolved precision part of every row's
setting (so rows of two precisions are never averaged together), of the checkpoint key, of the
feature cache key and of the runs a sweep decides it already has."""

from __future__ import annotations

import pytest
import torch

from clbench import Learner, leaderboard, runner
from clbench.checkpoint import run_key
from clbench.cli import main
from clbench.errors import ClbenchError
from clbench.feature_cache import FeatureCache
from clbench.learner import available_learners, get_learner
from clbench.metrics import summary
from clbench.precision import autocast, resolve_precision, with_precision
from clbench.recipes import load_jobs
from clbench.scenario import build_scenario, load_spec
from synthetic import make_scenario

CPU = torch.device("cpu")

FP32_FINETUNE_SPLIT_DIGITS_SEED_0 = [
    [100.0, 0.0, 0.0, 0.0, 0.0], [0.0, 98.87640449438203, 0.0, 0.0, 0.0], [0.0, 0.0, 100.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 100.0, 0.0], [0.0, 0.0, 0.0, 0.0, 98.86363636363636]]
"""finetune on split-digits, seed 0, on the CPU, computed by the code before precision existed (commit a29010e)."""

BF16_TOLERANCE = 2.0
"""Largest accepted |bf16 - fp32| final accuracy, in points, for one seed on split-digits. One test image
is ~0.22 points of final accuracy there (5 experiences of 88-90 images), and bf16 autocast rounds every
matmul to 8 mantissa bits, which sends SGD down another path much as another seed does: measured on
seeds 0-2 on an AMD EPYC, finetune moved by 0.23 / 0.00 / 0.91 points (0.23 / 0.45 / 0.00 on an Intel
Xeon), joint by up to 0.68, replay by up to 1.80, nmc (no autocast-affected op on flattened pixels) by 0. A broken bf16 path (a learner that stops learning)
loses ~20 points of finetune's final accuracy, far outside."""


def _digits(precision: str, **settings):
    return build_scenario(load_spec("split-digits").with_overrides({"precision": precision, **settings}))


@pytest.mark.usefixtures("single_thread")
def test_fp32_on_the_cpu_is_bit_identical_to_the_code_without_precision():
    result = runner.run(_digits("fp32"), get_learner("finetune"), seed=0, device="cpu", progress=False)
    assert result.accuracy_matrix == FP32_FINETUNE_SPLIT_DIGITS_SEED_0
    assert result.precision == "fp32"


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("learner", ["finetune", "nmc"])
def test_bf16_and_fp32_agree_within_the_stated_tolerance(learner):
    final = {}
    for precision in ("fp32", "bf16"):
        result = runner.run(_digits(precision), get_learner(learner), seed=0, device="cpu", progress=False)
        assert result.precision == precision
        final[precision] = summary(result.accuracy_matrix, None)["final_accuracy"]
    assert abs(final["bf16"] - final["fp32"]) <= BF16_TOLERANCE, final


class RecordsAutocast(Learner):
    """Records, inside every learn and predict call: whether CPU autocast is on, its dtype, and the
    dtype a matrix product of the learner's own (a layer, say) comes out in."""

    name = "records-autocast"
    seen: list[tuple[str, bool, torch.dtype, torch.dtype]] = []

    def learn(self, x, y, task):
        self._record("learn", x)

    def predict(self, x, task):
        self._record("predict", x)
        return torch.zeros(len(x), self.context.num_classes)

    def _record(self, call: str, x: torch.Tensor) -> None:
        product = x.flatten(1).float() @ torch.ones(x[0].numel(), 2)
        self.seen.append((call, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), product.dtype))


@pytest.mark.parametrize("precision,on", [("bf16", True), ("fp32", False)])
def test_learn_and_predict_run_under_autocast_only_in_bf16(precision, on):
    RecordsAutocast.seen = []
    result = runner.run(make_scenario(precision=precision), RecordsAutocast, device="cpu", progress=False)
    assert {call for call, *_ in RecordsAutocast.seen} == {"learn", "predict"}
    assert {enabled for _, enabled, _, _ in RecordsAutocast.seen} == {on}
    assert {product for *_, product in RecordsAutocast.seen} == {torch.bfloat16 if on else torch.float32}
    if on:
        assert {dtype for _, _, dtype, _ in RecordsAutocast.seen} == {torch.bfloat16}
    assert result.precision == precision
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the run


def test_auto_resolves_by_device_and_bf16_is_refused_where_autocast_cannot_give_it():
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16" and resolve_precision("fp32", CPU) == "fp32"
    if not torch.cuda.is_available():  # a sweep driver resolving for GPU workers it cannot see
        assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    with pytest.raises(ClbenchError, match="--precision bf16 on mps: .*use --precision fp32"):
        resolve_precision("bf16", torch.device("mps"))
    with pytest.raises(ValueError, match="resolved precision"):
        autocast("auto", CPU)


def test_a_scenario_that_sets_its_precision_wins_and_a_conflicting_request_is_one_line():
    assert with_precision(make_scenario(precision="bf16"), CPU).spec.precision == "bf16"
    assert with_precision(make_scenario(), CPU, "bf16").spec.precision == "bf16"
    assert with_precision(make_scenario(), CPU).spec.precision == "fp32"
    with pytest.raises(ClbenchError, match="sets precision = fp32, and --precision bf16 was asked for"):
        with_precision(make_scenario(precision="fp32"), CPU, "bf16")


def test_rows_of_two_precisions_have_two_settings_and_are_never_averaged(leaderboard_path):
    rows = []
    for precision in ("fp32", "bf16"):
        scenario = make_scenario(precision=precision)
        result = runner.run(scenario, get_learner("finetune"), seed=0, device="cpu", progress=False)
        rows.append(leaderboard.make_row(result, make_scenario(), "images"))  # an unresolved spec: the result says
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]
    assert rows[0]["setting_id"] != rows[1]["setting_id"]
    assert rows[0]["scenario_overrides"] == rows[1]["scenario_overrides"] == "{}"  # not an override: its own column
    leaderboard.append_rows(leaderboard_path, rows)
    groups = leaderboard.aggregate(leaderboard.read(leaderboard_path))
    assert len(groups) == 2 and groups["seeds"].tolist() == [1, 1]


def test_the_checkpoint_key_holds_the_resolved_precision():
    finetune = get_learner("finetune")
    keys = {p: run_key(make_scenario(precision=p), finetune, {}, 0, CPU) for p in ("fp32", "bf16", "auto")}
    assert keys["fp32"] != keys["bf16"] and keys["auto"] == keys["fp32"]  # auto is fp32 on the CPU


def test_features_encoded_in_bf16_are_cached_apart_from_fp32_ones(tmp_path):
    cache, nmc = FeatureCache(tmp_path), get_learner("nmc")

    def status(precision: str) -> str:
        scenario = make_scenario(encoder="small_cnn", precision=precision)
        return runner.run(scenario, nmc, device="cpu", progress=False, feature_cache=cache).feature_cache

    assert [status("fp32"), status("bf16"), status("fp32"), status("bf16")] == ["miss", "miss", "hit", "hit"]


def test_cli_records_the_precision_and_refuses_two_different_ones(leaderboard_path, capsys):
    base = ["run", "--no-progress", "--device", "cpu", "--leaderboard", str(leaderboard_path), "--learner", "nmc",
            "--set", "n_experiences=2"]
    assert main(base) == 0 and main([*base, "--precision", "bf16"]) == 0
    assert "on cpu in bf16" in capsys.readouterr().out
    frame = leaderboard.read(leaderboard_path)
    assert frame["precision"].tolist() == ["fp32", "bf16"] and frame["setting_id"].nunique() == 2
    assert main([*base, "--precision", "bf16", "--set", "precision=fp32"]) == 2
    assert "sets precision = fp32, and --precision bf16 was asked for: give one" in capsys.readouterr().err


def test_a_bf16_row_reproduces_in_bf16(leaderboard_path, capsys):
    assert main(["run", "--no-progress", "--device", "cpu", "--leaderboard", str(leaderboard_path), "--learner",
                 "finetune", "--set", "n_experiences=2", "--set", "epochs=1", "--precision", "bf16"]) == 0
    row = leaderboard.read(leaderboard_path).iloc[-1]
    capsys.readouterr()
    assert main(["reproduce", row["run_id"], "--leaderboard", str(leaderboard_path)]) == 0
    out = capsys.readouterr().out
    assert "same      setting" in out and "compared exactly" in out
    assert out.rstrip().splitlines()[-1].startswith("reproduced")
    assert main(["reproduce", row["run_id"], "--leaderboard", str(leaderboard_path), "--precision", "fp32"]) == 1
    assert "DIFFERENT setting" in capsys.readouterr().out


def _recipe(folder, extra: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nmc.toml").write_text('scenario = "split-digits"\nlearner = "nmc"\nseeds = [0]\n'
                                     f'[settings]\nn_experiences = 2\n{extra}')


def test_the_sweep_resolves_precision_with_its_workers_device_before_deciding_what_it_has(tmp_path, leaderboard_path,
                                                                                          capsys):
    _recipe(tmp_path / "r")
    on_cpu, on_gpu = load_jobs(tmp_path / "r", device="cpu"), load_jobs(tmp_path / "r", device="cuda")
    assert [j.precision for j in on_cpu + on_gpu] == ["fp32", "bf16"] and on_cpu[0].key != on_gpu[0].key

    def sweep(*args: str) -> str:
        assert main(["sweep", str(tmp_path / "r"), "--leaderboard", str(leaderboard_path), "--no-progress",
                     "--device", "cpu", *args]) == 0
        return capsys.readouterr().out

    assert "1 done, 0 skipped" in sweep()  # auto on the CPU: fp32
    assert "0 done, 1 skipped" in sweep("--precision", "fp32")  # the same setting: the row is there
    assert "1 done, 0 skipped" in sweep("--precision", "bf16")  # another setting: runs
    frame = leaderboard.read(leaderboard_path)
    assert frame["precision"].tolist() == ["fp32", "bf16"]
    assert [job.key[1] for job in on_cpu] == [frame["setting_id"].iloc[0]]  # what the driver expected, the row has


def test_a_recipe_that_pins_its_precision_keeps_it_on_any_device(tmp_path):
    _recipe(tmp_path / "r", 'precision = "fp32"\n')
    on_cpu, on_gpu = load_jobs(tmp_path / "r", device="cpu"), load_jobs(tmp_path / "r", device="cuda")
    assert [j.precision for j in on_cpu + on_gpu] == ["fp32", "fp32"] and on_cpu[0].key == on_gpu[0].key
    with pytest.raises(ClbenchError, match="sets precision = fp32, and --precision bf16"):
        load_jobs(tmp_path / "r", precision="bf16")


SMALL = {"protonet": {"episodes": 2, "train_way": 2}, "kv-bottleneck": {"codebooks": 8, "keys": 16, "key_dim": 4}}
"""Registered learners' hyper-parameters cut down so that each runs in a moment on the tiny scenario."""


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("name", sorted(available_learners()))
def test_every_registered_learner_runs_in_bf16(name):
    """Under autocast a learner's layers give bf16 tensors: storing one into a float32 buffer of its
    own (hnet's saved targets did, in a task's first learn call) must not fail."""
    backbone = "small_cnn" if name == "adab2n" else "mlp"  # adab2n swaps BatchNorm2d layers: the MLP has none
    scenario = make_scenario(n_experiences=2, backbone=backbone, precision="bf16")
    result = runner.run(scenario, get_learner(name), SMALL.get(name, {}), device="cpu", progress=False)
    assert result.precision == "bf16" and len(result.accuracy_matrix) == 2
