"""The rendered leaderboard: one self-contained HTML page (sortable tables, one per setting, with
the setting shown and the plots embedded as PNG data; no network needed to open it), and the
folder `clbench leaderboard --write DIR` fills: LEADERBOARD.md, leaderboard.html and plots/."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
from pathlib import Path

import pandas as pd

from clbench import leaderboard, leaderboard_tables
from clbench.files import AtomicFile

MARKDOWN, PAGE, PLOTS = "LEADERBOARD.md", "leaderboard.html", "plots"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
td:nth-child(2), td:nth-child(3), th:nth-child(2), th:nth-child(3) { text-align: left; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
.setting { font-family: monospace; font-size: 0.85em; color: #555; }
figure { display: inline-block; margin: 0.5em; } img { max-width: 560px; }
section { border-top: 2px solid #ddd; padding-top: 0.5em; }
"""

_SORT = """
document.querySelectorAll("table.sortable th").forEach((th, column) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0];
  const ascending = th.getAttribute("aria-sort") !== "ascending";
  th.closest("tr").querySelectorAll("th").forEach(other => other.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const key = row => { const text = row.cells[column].textContent.trim();
                       const number = parseFloat(text.replace(/^=/, "")); return isNaN(number) ? text : number; };
  const rows = Array.from(body.rows).sort((a, b) => { const x = key(a), y = key(b);
    if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
    return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1); });
  rows.forEach(row => body.appendChild(row));
}));
"""


Plots = dict[tuple[str, str, str], list[tuple[str, bytes]]]
"""PNG images by setting key: (name, PNG bytes) each."""


def render_plots(frame: pd.DataFrame) -> Plots:
    """Every plot of `frame` (`plots.figures`) as PNG bytes, by setting."""
    import matplotlib.pyplot as plt

    from clbench.plots import figures, save_png

    out: Plots = {}
    for key, name, fig in figures(frame):
        buffer = io.BytesIO()
        save_png(fig, buffer)
        plt.close(fig)
        out.setdefault(key, []).append((name, buffer.getvalue()))
    return out


def _setting_lines(summary: pd.DataFrame, key: tuple[str, str, str]) -> str:
    scenario, stream, setting = key
    rows = summary[(summary["scenario"] == scenario) & (summary["stream"] == stream) & (summary["setting_id"] == setting)]
    overrides = rows["scenario_overrides"].iloc[0]
    changed = json.loads(overrides) if isinstance(overrides, str) else {}
    settings = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(changed.items())) or "the shipped spec, unchanged"
    fingerprint = ("one per seed (class order drawn from each run's seed)" if stream == leaderboard.SEEDED_STREAM
                   else stream)
    return (f"scenario {scenario} · protocol {rows['protocol'].iloc[0]} · stream fingerprint {fingerprint} · "
            f"setting {setting} · settings: {settings}")


def html_page(frame: pd.DataFrame, plots: Plots | None = None, title: str = "clbench leaderboard") -> str:
    """The whole leaderboard of `frame` as one HTML page that needs nothing else to open, with
    `plots` (default: `render_plots(frame)`) embedded as PNG data."""
    summary = leaderboard.aggregate(frame)
    plots = render_plots(frame) if plots is None else plots
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>",
             f"<p>{len(leaderboard.latest_runs(frame)[0])} finished runs in {len(summary)} (setting, learner, config) "
             "groups; click a column header to sort.</p>"]
    for key, heading, table in leaderboard_tables.tables(summary) if not summary.empty else []:
        images = "\n".join(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
                           f'{base64.b64encode(png).decode("ascii")}"><figcaption>{html.escape(name)}</figcaption></figure>'
                           for name, png in plots.get(key, []))
        parts.append(f"<section>\n<h2>{html.escape(heading)}</h2>\n"
                     f"<p class=\"setting\">{html.escape(_setting_lines(summary, key))}</p>\n"
                     f"{table.to_html(index=False, classes='sortable', border=0)}\n{images}\n</section>")
    parts.extend(f"<p>{html.escape(note)}</p>" for note in leaderboard_tables.notes(summary))
    parts.append(f"<script>{_SORT}</script>\n</body>\n</html>\n")
    return "\n".join(parts)


def markdown_page(frame: pd.DataFrame, plots: Plots, source: str) -> str:
    """LEADERBOARD.md: the tables in Markdown, each followed by its plots (files under plots/)."""
    from tabulate import tabulate

    summary = leaderboard.aggregate(frame)
    parts = ["# clbench leaderboard", "",
             f"Rendered from `{source}` by `clbench leaderboard --write` (see leaderboard/README.md); do not edit by hand.",
             ""]
    for key, heading, table in leaderboard_tables.tables(summary) if not summary.empty else []:
        parts += [f"## {heading}", "", f"`{_setting_lines(summary, key)}`", "",
                  tabulate(table, headers="keys", tablefmt="github", showindex=False, disable_numparse=True), ""]
        parts += [f"![{name}]({PLOTS}/{name}.png)" for name, _ in plots.get(key, [])] + [""]
    parts += [note + "\n" for note in leaderboard_tables.notes(summary)]
    return "\n".join(parts).rstrip("\n") + "\n"


PROVENANCE = re.compile(r"<!-- rendered from the first (\d+) rows of the CSV, sha256 ([0-9a-f]{64}) -->")


def provenance(csv_path: Path) -> str:
    """The line that says which rows a rendering was made from (their count and the SHA-256 of the
    file up to them): rows appended later (a user's own runs) leave that prefix, and so the check
    that the rendered files are current, intact."""
    data = csv_path.read_bytes()
    rows = max(data.count(b"\n") - 1, 0)
    return f"\n<!-- rendered from the first {rows} rows of the CSV, sha256 {hashlib.sha256(data).hexdigest()} -->\n"


def rendered_prefix(markdown: str, csv_path: Path) -> bytes:
    """The bytes of `csv_path` that the rendering `markdown` was made from (header + its first rows);
    a ValueError if those rows have changed since (the files need rendering again)."""
    found = PROVENANCE.search(markdown)
    if not found:
        raise ValueError("the rendering does not say which rows it was made from: render it again")
    rows, digest = int(found.group(1)), found.group(2)
    lines = csv_path.read_bytes().splitlines(keepends=True)
    prefix = b"".join(lines[: rows + 1])
    if hashlib.sha256(prefix).hexdigest() != digest:
        raise ValueError(f"the first {rows} rows of {csv_path.name} changed since they were rendered: render again")
    return prefix


def write_site(csv_path: Path, folder: Path) -> list[Path]:
    """Write LEADERBOARD.md, leaderboard.html and plots/*.png for the leaderboard at `csv_path` into
    `folder`, each file replaced atomically; PNGs in plots/ that this rendering no longer makes are
    removed. Returns the written paths."""
    import os

    frame = leaderboard.read(csv_path)
    source = Path(os.path.relpath(Path(csv_path).resolve(), Path(folder).resolve())).as_posix()
    plots = render_plots(frame)
    files = {f"{PLOTS}/{name}.png": png for pngs in plots.values() for name, png in pngs}
    files[MARKDOWN] = (markdown_page(frame, plots, source) + provenance(Path(csv_path))).encode("utf-8")
    files[PAGE] = html_page(frame, plots).encode("utf-8")
    plots_folder = folder / PLOTS
    for stale in set(plots_folder.glob("*.png")) - {folder / name for name in files} if plots_folder.is_dir() else ():
        stale.unlink()
    for name, data in files.items():
        with AtomicFile(folder / name) as tmp:
            tmp.write_bytes(data)
    return [folder / name for name in files]
