"""The committed leaderboard (leaderboard/): its CSV validates, holds every run of the split-digits
recipes in baselines/, every metric in it recomputes from its accuracy matrix, and the rendered
files are what `clbench leaderboard --write leaderboard/` makes from it."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clbench import leaderboard, leaderboard_tables
from clbench.recipes import load_jobs, run_key
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


def test_every_committed_row_comes_from_a_recipe(frame):
    """No row without a recipe in baselines/ that makes it (same scenario, setting, learner, config, seed)."""
    made = {job.key for job in load_jobs(ROOT / "baselines")}
    columns = ["scenario", "setting_id", "learner", "learner_config", "seed"]
    orphans = [row.run_id for row in frame.itertuples() if run_key(*(getattr(row, c) for c in columns)) not in made]
    assert not orphans, f"{len(orphans)} committed row(s) come from no recipe: {orphans[:5]}"


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


def _p_against(best: dict, other: dict, best_episodes: tuple, other_episodes: tuple) -> float:
    """The raw two-sided p of `other` against `best`, straight from scipy: paired t on the same seeds,
    else Welch's t (2 seeds or more each); else, for few-shot rows, the z-test of the episode means;
    no spread at all: tied if equal, different if not."""
    from scipy import stats as scipy_stats

    if len(best) >= 2 and len(other) >= 2:
        paired = set(best) == set(other)
        seeds = sorted(best)
        a, b = ([best[s] for s in seeds], [other[s] for s in seeds]) if paired else (list(best.values()), list(other.values()))
        spreads = [len(set(x - y for x, y in zip(a, b)))] if paired else [len(set(a)), len(set(b))]
        if max(spreads) == 1:
            return 1.0 if a[0] == b[0] else 0.0
        return (scipy_stats.ttest_rel(a, b) if paired else scipy_stats.ttest_ind(a, b, equal_var=False)).pvalue
    if best_episodes and other_episodes:
        (m1, ci1), (m2, ci2) = best_episodes, other_episodes
        return 2 * scipy_stats.norm.sf(abs(m1 - m2) / math.hypot(ci1 / 1.96, ci2 / 1.96))
    return math.nan


def test_the_committed_ranks_follow_the_rules(frame):
    """Over whatever tables the CSV holds: every row is compared with its table's best, the p-values
    are Holm-corrected over those comparisons, `=1` exactly where the adjusted p >= 0.05, no tie in
    a table that cannot be tested, every other row at its competition rank by mean."""
    summary = leaderboard.aggregate(frame)
    runs, _ = leaderboard.latest_runs(frame)
    for key, table in summary.groupby(leaderboard.TABLE):
        column = leaderboard.headline(table["protocol"].iloc[0])
        rows = runs[(runs[leaderboard.TABLE] == pd.Series(key, index=leaderboard.TABLE)).all(axis=1)]
        seeds = {c: dict(zip(r["seed"], r[column])) for c, r in rows.groupby(["learner", "learner_config"])}
        episodes = {c: (r["fewshot_accuracy"].mean(), r["fewshot_ci95"].mean()) if r["protocol"].iloc[0] == "episodes"
                    else None for c, r in rows.groupby(["learner", "learner_config"])}
        means = {c: np.mean(list(v.values())) for c, v in seeds.items()}
        best = max(means, key=means.get)
        raw = {c: _p_against(seeds[best], seeds[c], episodes[best], episodes[c]) for c in seeds if c != best}
        tested = sorted((p, c) for c, p in raw.items() if not math.isnan(p))
        holm, running = {}, 0.0
        for k, (p, c) in enumerate(tested):
            running = max(running, min(1.0, (len(tested) - k) * p))
            holm[c] = running
        table = table.set_index(["learner", "learner_config"])
        tied = {c for c, p in holm.items() if p >= 0.05}
        assert set(table.index[table["tied"] & (table.index != best)]) == tied, key
        for c, p in holm.items():
            assert table.loc[c, "p_vs_best"] == pytest.approx(p, abs=1e-9), (key, c)
        if not holm:  # nothing could be tested (one seed): no tie claimed anywhere
            assert not table["tied"].any(), key
        leading = {best} | tied | {c for c in means if means[c] == means[best]}
        for c in means:
            expected = 1 if c in leading else 1 + sum(m > means[c] for m in means.values())
            assert table.loc[c, "rank"] == expected, (key, c)
    shown = [cell for _, _, t in leaderboard_tables.tables(summary) for cell in t["rank"]]
    assert sum(cell.startswith("=") for cell in shown) == int(summary["tied"].sum())
