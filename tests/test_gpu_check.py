"""The GPU check's own pieces, on the CPU: the script parses and explains itself, and the CPU-vs-CUDA
comparison (benchmarks/agreement.py) flags exactly the learners whose difference exceeds their seed
spread."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import agreement  # noqa: E402


def test_the_script_parses_and_its_help_names_every_step():
    assert subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_check.sh")]).returncode == 0
    shown = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--quick" in shown.stdout and "pytest -n 8" in shown.stdout
    wrong = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--fast"], capture_output=True, text=True)
    assert wrong.returncode == 2 and wrong.stderr.strip() == "gpu_check.sh: unknown option '--fast' (see --help)"


def _board(path: Path, device: str, precision: str, accuracies: dict[str, tuple[float, ...]]) -> Path:
    rows = [dict(run_id=f"{device}{learner}{seed}", created_at="2026-01-01T00:00:00+00:00", scenario="split-digits",
                 scenario_fingerprint="fp", setting_id=device, scenario_overrides="{}", protocol="class-incremental",
                 learner=learner, learner_config="{}", seed=seed, final_accuracy=value, status="ok", device=device,
                 precision=precision)
            for learner, values in accuracies.items() for seed, value in enumerate(values)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_difference_beyond_the_seed_spread_is_flagged(tmp_path, capsys):
    # same: +0.5 within std 1; drifted: +3 beyond std 1; lone: one seed a side, so any difference is flagged
    cpu = _board(tmp_path / "cpu.csv", "cpu", "fp32", {"same": (90, 91, 92), "drifted": (50, 51, 52), "lone": (70,)})
    cuda = _board(tmp_path / "cuda.csv", "NVIDIA H100", "bf16",
                  {"same": (90.5, 91.5, 92.5), "drifted": (53, 54, 55), "lone": (70.2,)})
    assert agreement.compare(cpu, cuda) == 2
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in capsys.readouterr().out.splitlines()
             if line.startswith("| split-digits")]
    lines = {c[1]: " ".join(c) for c in cells}
    assert "EXCEEDS" in lines["drifted"] and "+3.00" in lines["drifted"]
    assert "EXCEEDS" in lines["lone"] and "EXCEEDS" not in lines["same"]
    assert agreement.spread_exceeded(1.0, 1.0, float("nan")) is False  # equal to the spread: not beyond it
