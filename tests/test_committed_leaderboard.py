"""The committed leaderboard (leaderboard/): its CSV validates, holds every run of the split-digits
recipes in baselines/, every metric in it recomputes from its accuracy matrix, and the rendered
files are what `clbench leaderboard --write leaderboard/` makes from it."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import pytest

from clbench import leaderboard
from clbench.recipes import load_jobs
from clbench.report import MARKDOWN, PAGE, PLOTS, rendered_prefix, write_site
from clbench.sweep import pending

ROOT = Path(__file__).resolve().parents[1]
BOARD = ROOT / "leaderboard"
CSV = BOARD / "leaderboard.csv"


@pytest.fixture(scope="module")
def frame():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a malformed line would be skipped with a warning
        return leaderboard.read(CSV)


def test_the_csv_validates_and_holds_every_split_digits_recipe_run(frame):
    assert (frame["status"] == "ok").all() and frame["run_id"].is_unique
    assert pending(load_jobs(ROOT / "baselines", "split-digits*"), CSV, force=False) == []


def test_every_metric_recomputes_from_the_accuracy_matrix(frame):
    for _, row in frame.iterrows():
        for name, value in leaderboard.recompute_metrics(row).items():
            stored = row[name]
            assert (math.isnan(value) and math.isnan(stored)) or stored == pytest.approx(value, abs=1e-3), (row["run_id"], name)


def _without_images(page: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,...", page)


def test_the_rendered_files_are_what_the_command_makes(tmp_path):
    """Rendered from the CSV's rows as they were then: rows appended since (a user's own `clbench run`,
    README's first command) do not count, a changed row does."""
    (tmp_path / CSV.name).write_bytes(rendered_prefix((BOARD / MARKDOWN).read_text(), CSV))
    write_site(tmp_path / CSV.name, tmp_path)
    assert (tmp_path / MARKDOWN).read_text() == (BOARD / MARKDOWN).read_text()
    assert _without_images((tmp_path / PAGE).read_text()) == _without_images((BOARD / PAGE).read_text())
    assert sorted(p.name for p in (tmp_path / PLOTS).iterdir()) == sorted(p.name for p in (BOARD / PLOTS).iterdir())


def test_the_rendered_prefix_survives_appends_and_catches_changes(tmp_path):
    from clbench.report import provenance

    csv = tmp_path / "board.csv"
    csv.write_bytes(b"h\nrow1\nrow2\n")
    markdown = "tables" + provenance(csv)
    csv.write_bytes(b"h\nrow1\nrow2\nappended\n")
    assert rendered_prefix(markdown, csv) == b"h\nrow1\nrow2\n"
    csv.write_bytes(b"h\nrow1\nchanged\nappended\n")
    with pytest.raises(ValueError, match="changed since they were rendered"):
        rendered_prefix(markdown, csv)
