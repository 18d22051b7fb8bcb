"""The rendered leaderboard tables: one table per (scenario, stream, setting) of an aggregated
leaderboard (`leaderboard.aggregate`), in a fixed order, with ranks, figures, CIs, p-values against
the best and the chance level; the notes under them; and the labels of settings and configs, which
the plots use too, so that both name a config the same way."""

from __future__ import annotations

import hashlib
import html
import json
import math
from typing import Any

import pandas as pd

from clbench import stats
from clbench.leaderboard import SEEDED_STREAM, TABLE, figures, headline

FIRST_SCENARIOS = ("split-digits", "split-digits-til", "split-digits-online")
"""The tables' order: these scenarios (embedded data: the quick check, as baselines/README.md lists
them) first, then every other scenario by name; within a scenario, the shipped spec unchanged
first, then by settings."""

RANK_NOTE = ("rank: by the headline (first figure). Each row is compared with the best of its table (highest mean): "
             "a two-sided paired t-test on the seeds both ran when they ran the same seeds (2 or more), else "
             "Welch's t-test (2 or more seeds each); few-shot episode rows with fewer seeds: a z-test of the two mean "
             "episode accuracies, standard errors = 95% episode CI / 1.96 (episodes as independent draws). The "
             "p-values are Holm-corrected over the table's comparisons with its best ('p vs best (Holm)'); alpha "
             "0.05. Rows are listed by mean. '=1': not significantly below the best (adjusted p >= 0.05): it may be "
             "first. Any other row shows its competition rank by mean (1 + the rows with a higher mean): it is not "
             "first, and nothing is claimed about its order against tied rows with lower means. A row with 1 seed (and no "
             "episode CI) is not tested and never tied; a table whose rows cannot be tested says '1 seed: no "
             "significance test'. Equal constant values over seeds count as tied, different constants as different.")
FIGURES_NOTE = ("figures: mean ± std over seeds; 95% CI: Student-t over seeds of the headline, clipped to [0, 100]; "
                "vs chance: where that CI (for 1-seed few-shot rows, the episode CI) lies against the table's chance "
                "level (100 / the classes a guess chooses among); training times are left out of the tables (they "
                "depend on the machine and its load: `--format csv` gives them, the rows name their device)")


def render(summary: pd.DataFrame, fmt: str = "text") -> str:
    """The aggregated runs as text, Markdown, HTML tables or CSV. Text, Markdown and HTML: the
    tables of `tables`, then the `notes`. CSV: every column of `aggregate`, one line per
    (scenario, stream, setting, learner, config)."""
    if fmt == "csv":
        return summary.to_csv(index=False, lineterminator="\n")
    from tabulate import tabulate

    if summary.empty:
        return "no finished runs in the leaderboard"
    sections = []
    for _, title, table in tables(summary):
        if fmt == "html":
            sections.append(f"<h4>{html.escape(title)}</h4>\n{table.to_html(index=False)}")
        else:
            style = "github" if fmt == "markdown" else "simple"
            body = tabulate(table, headers="keys", tablefmt=style, showindex=False, disable_numparse=True)
            sections.append(f"{'#### ' if fmt == 'markdown' else ''}{title}\n\n{body}")
    sections.extend(f"<p>{html.escape(note)}</p>" if fmt == "html" else note for note in notes(summary))
    return "\n\n".join(sections)


def notes(summary: pd.DataFrame) -> list[str]:
    """The lines printed under the tables: how ranks are made, what the figures are, and duplicates set aside."""
    duplicates = summary.attrs.get("duplicates", 0)
    return [RANK_NOTE, FIGURES_NOTE] + ([f"{duplicates} duplicate run(s) set aside: same setting, learner, config "
                                         "and seed as a newer row (each seed counts once)"] if duplicates else [])


def tables(summary: pd.DataFrame) -> list[tuple[tuple[str, str, str], str, pd.DataFrame]]:
    """(key, title, table of text cells) per key (scenario, stream, setting), in the order of
    `FIRST_SCENARIOS`. The title names the scenario and its overrides, the protocol, the chance
    level (and whether every row is at chance), the stream and the setting; rows go best first
    with their rank, figures (mean ± std over seeds; few-shot episodes: accuracy ± the runs' mean
    95% CI, and the std over seeds), the headline's 95% CI, the Holm-adjusted p-value against the
    best and where the row stands against chance. A learner's configs are labelled by what differs
    among them in that table (`config_labels`)."""
    out = []
    for key, group in sorted(summary.groupby(TABLE, dropna=False), key=_section_order):
        scenario, stream, setting = key
        configs = config_labels(group)
        protocol = group["protocol"].iloc[0]
        column = headline(protocol)
        group = group.sort_values(f"{column}_mean", ascending=False, na_position="last", kind="stable")
        mean, half = group[f"{column}_mean"], group[f"{column}_ci95"]
        if protocol == "episodes":  # one seed: the run's own episode CI says where it stands against chance
            half = half.where(group["seeds"] >= 2, group["fewshot_ci95_mean"])
        chance = group["chance_accuracy"].iloc[0]
        versus = [_versus_chance(m, h, chance) for m, h in zip(mean, half)]
        table = pd.DataFrame({"rank": [f"={r}" if t else str(r) for r, t in zip(group["rank"], group["tied"])],
                              "learner": group["learner"], "config": configs[group.index].replace("", "-"),
                              "seeds": group["seeds"], **_figure_cells(protocol, group),
                              "95% CI": [_interval(m, h) for m, h in zip(mean, group[f"{column}_ci95"])],
                              "p vs best (Holm)": [_p_cell(r) for _, r in group.iterrows()], "vs chance": versus})
        untested = len(group) > 1 and not group["test_vs_best"].isin(stats.TESTS).any()
        title = " · ".join([setting_label(scenario, group["scenario_overrides"].iloc[0]), str(protocol),
                            _chance_title(chance, versus), _stream_label(stream), f"setting {setting}",
                            *(["1 seed: no significance test"] if untested else [])])
        out.append((key, title, table))
    return out


def _section_order(item: tuple[tuple[str, str, str], pd.DataFrame]) -> tuple:
    (scenario, stream, setting), group = item
    first = FIRST_SCENARIOS.index(scenario) if scenario in FIRST_SCENARIOS else len(FIRST_SCENARIOS)
    overrides = group["scenario_overrides"].iloc[0]
    changed = isinstance(overrides, str) and bool(json.loads(overrides))
    return first, str(scenario), changed, setting_label(scenario, overrides), str(stream), str(setting)


def _stream_label(stream: str) -> str:
    return "class order seeded: one stream per seed" if stream == SEEDED_STREAM else f"stream {str(stream)[:8]}"


def _interval(mean: float, half: float) -> str:
    """The 95% CI [mean - half, mean + half] of a percentage, clipped to [0, 100]."""
    if pd.isna(half):
        return "-"
    return f"[{max(mean - half, 0.0):.2f}, {min(mean + half, 100.0):.2f}]"


def _versus_chance(mean: float, half: float, chance: float) -> str:
    """"above", "at chance" or "below": where the interval mean ± half lies against `chance`."""
    if pd.isna(half) or pd.isna(chance):
        return "-"
    return "above" if mean - half > chance else "below" if mean + half < chance else "at chance"


def _chance_title(chance: float, versus: list[str]) -> str:
    if pd.isna(chance):
        return "chance unknown"
    every = " (every row at chance)" if all(v in ("at chance", "below") for v in versus) else ""
    return f"chance {chance:.2f} %{every}"


def _p_cell(row: pd.Series) -> str:
    """The Holm-adjusted p-value against the best and its test; "best"; or why it is untested."""
    if row["test_vs_best"] == "":
        return "best"
    if row["test_vs_best"] == stats.UNTESTED.test:
        return "untested (1 seed)" if row["seeds"] < 2 else "untested"
    p = row["p_vs_best"]
    return f"{'< 0.001' if p < 0.001 else f'{p:.3f}'} ({row['test_vs_best']})"


def _figure_cells(protocol: str, group: pd.DataFrame) -> dict[str, list[str]]:
    if protocol == "episodes":
        return {"episode acc ± 95% CI": [_pm(m, ci) for m, ci in zip(group["fewshot_accuracy_mean"], group["fewshot_ci95_mean"])],
                "std over seeds": [_pm(s, math.nan) for s in group["fewshot_accuracy_std"]]}
    return {label: [_pm(m, s) for m, s in zip(group[f"{column}_mean"], group[f"{column}_std"])]
            for label, column in figures(protocol).items()}


def _pm(mean: float, spread: float) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.2f}" if pd.isna(spread) else f"{mean:.2f} ± {spread:.2f}"


def setting_label(scenario: str, overrides: Any, limit: int = 60) -> str:
    """The scenario and the settings it was run with, short: `split-digits (encoder=small_cnn)`."""
    parsed = json.loads(overrides) if isinstance(overrides, str) else {}
    if not parsed:
        return str(scenario)
    return f"{scenario} ({_shorten(', '.join(f'{k}={_text(v)}' for k, v in sorted(parsed.items())), limit)})"


def config_labels(frame: pd.DataFrame, limit: int = 40) -> pd.Series:
    """A label of each row's `learner_config`, unique among the frame's configs of its learner:
    `key=value` for the hyper-parameters whose values differ among them ("" where a learner ran
    with one config). Values are never cut; if a label would be longer than `limit`, the keys are
    shortened to their shortest unique prefix of at least `_KEY_PREFIX` letters (`generator` ->
    `gener.`); configs whose labels would still read the same get their hash appended."""
    labels = pd.Series("", index=frame.index, dtype=object)
    for _, rows in frame.groupby("learner", sort=False):
        configs = rows["learner_config"].fillna("{}")
        parsed = {c: json.loads(c) for c in configs.unique()}
        keys = sorted({k for config in parsed.values() for k in config})
        varying = [k for k in keys if len({json.dumps(c.get(k)) for c in parsed.values()}) > 1]
        text = {c: _label(config, dict(zip(varying, varying))) for c, config in parsed.items()}
        if any(len(t) > limit for t in text.values()):
            text = {c: _label(config, _short_keys(varying)) for c, config in parsed.items()}
        repeated = {t for t in text.values() if list(text.values()).count(t) > 1}
        text = {c: f"{t} #{hashlib.sha256(c.encode()).hexdigest()[:6]}" if t in repeated else t for c, t in text.items()}
        labels[rows.index] = configs.map(text)
    return labels


_KEY_PREFIX = 5


def _label(config: dict[str, Any], names: dict[str, str]) -> str:
    return ", ".join(f"{name}={_text(config.get(key))}" for key, name in names.items())


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Each key cut to its shortest prefix of at least `_KEY_PREFIX` letters that no other key
    starts with, marked with "." where cut."""
    def short(key: str) -> str:
        for end in range(_KEY_PREFIX, len(key)):
            if not any(other != key and other.startswith(key[:end]) for other in keys):
                return key[:end] + "."
        return key

    return {key: short(key) for key in keys}


def _text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
