"""The rendered leaderboard: the aggregated CSV, the self-contained HTML page (sortable tables with
their settings, plots embedded), the folder `clbench leaderboard --write` fills, and the page as a
real browser (headless Chromium) shows it."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from clbench.cli import main
from clbench.report import write_site


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    """Two learners x three seeds on a 2-experience split-digits."""
    folder = tmp_path_factory.mktemp("report")
    path = folder / "leaderboard.csv"
    assert main(["run", "--no-progress", "--leaderboard", str(path), "--data-root", str(folder / "data"),
                 "--learner", "nmc,finetune", "--seed", "0,1,2", "--set", "n_experiences=2", "--set", "epochs=1"]) == 0
    return path


@pytest.fixture(scope="module")
def site(board, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    write_site(board, folder)
    return folder


def test_csv_output_has_the_statistics_of_every_figure_and_cost(board, capsys):
    capsys.readouterr()
    assert main(["leaderboard", "--leaderboard", str(board), "--format", "csv"]) == 0
    summary = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(summary) == 2 and summary["seeds"].tolist() == [3, 3]
    for column in ("final_accuracy", "forgetting", "train_seconds", "peak_memory_mb", "n_parameters"):
        assert {f"{column}_mean", f"{column}_std", f"{column}_ci95"} <= set(summary.columns)
    nmc = summary[summary["learner"] == "nmc"].iloc[0]
    assert nmc["rank"] == 1 and not nmc["tied"]  # nmc far ahead of finetune on every seed


def test_the_page_is_self_contained_with_a_sortable_table_per_setting(site, board):
    page = (site / "leaderboard.html").read_text()
    assert len(re.findall(r'<table [^>]*class="dataframe sortable"', page)) == 1 and page.count("<tbody>") == 1
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert "stream fingerprint " in page and "settings: epochs=1, n_experiences=2" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4  # the curves, the training curves, and a heatmap per learner
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)
    assert "<script>" in page and "aria-sort" in page


def test_the_written_folder_is_what_the_command_makes_and_stale_plots_go(site, board, tmp_path):
    names = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert names[:2] == ["LEADERBOARD.md", "leaderboard.html"] and len(names) == 6
    assert all(n.startswith("plots/") and n.endswith(".png") for n in names[2:])
    markdown = (site / "LEADERBOARD.md").read_text()
    assert "| rank " in markdown and markdown.count("](plots/") == 4
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "old-setting-curves.png").write_bytes(b"stale")
    assert main(["leaderboard", "--leaderboard", str(board), "--write", str(tmp_path)]) == 0
    assert not (tmp_path / "plots" / "old-setting-curves.png").exists()
    again = (tmp_path / "LEADERBOARD.md").read_text()
    assert again.split("\n", 3)[3] == markdown.split("\n", 3)[3]  # the same but for the line naming the CSV
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [n[len("plots/"):] for n in names[2:]]


CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
PROBE = """<script>
window.addEventListener("load", () => {
  const table = document.querySelector("table.sortable");
  const learners = () => Array.from(table.tBodies[0].rows, r => r.cells[1].textContent);
  const before = learners();
  table.tHead.rows[0].cells[1].click();
  document.body.setAttribute("data-probe", JSON.stringify({
    rows: Array.from(document.querySelectorAll("table.sortable tbody tr")).length,
    images: Array.from(document.images, i => [i.complete, i.naturalWidth, i.naturalHeight]),
    before: before, after: learners()}));
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to open the page (Debian: apt-get install chromium; .ci/run "
                                             "installs it when missing)")
def test_the_page_renders_in_headless_chromium(site, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text((site / "leaderboard.html").read_text().replace("</body>", PROBE + "\n</body>"))
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([*browser, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["rows"] == 2
    plots = len(list((site / "plots").glob("*.png")))
    assert plots == 4 and len(seen["images"]) == plots and all(done and w > 100 and h > 100 for done, w, h in seen["images"])
    assert sorted(seen["before"]) == seen["after"] and seen["before"] == ["nmc", "finetune"]  # sorted by a click
    shot = tmp_path / "shot.png"
    subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1280,1600", (site / "leaderboard.html").as_uri()],
                   capture_output=True, timeout=180)
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 1600)
    assert len(image.getcolors(1 << 16)) > 50  # text, table lines and plots: not a blank page


def test_the_page_gives_the_tests_and_the_chance_level_and_no_training_time(site):
    markdown = (site / "LEADERBOARD.md").read_text()
    assert "| p vs best (Holm)" in markdown and "| vs chance" in markdown and "chance 10.00 %" in markdown
    assert "train s" not in markdown and "Holm-corrected" in markdown
    assert "train s" not in (site / "leaderboard.html").read_text()


def test_a_seeded_setting_is_one_section_with_one_stream_per_seed():
    from clbench.report import markdown_page

    rows = [dict(scenario="split-digits", scenario_fingerprint=f"fp{seed}", setting_id="seeded-0123456789ab",
                 scenario_overrides=json.dumps({"class_order": "seeded"}), protocol="class-incremental",
                 learner="nmc", learner_config="{}", seed=seed, status="ok", created_at="2024-01-01T00:00:00+00:00",
                 final_accuracy=60.0 + seed) for seed in range(3)]
    page = markdown_page(pd.DataFrame(rows), {}, "board.csv")
    assert page.count("## split-digits (class_order=seeded)") == 1
    assert "class order seeded: one stream per seed" in page and "stream fingerprint one per seed" in page
    assert re.search(r"\|\s*1\s*\|\s*nmc\s*\|\s*-\s*\|\s*3\s*\|", page)  # rank 1, three seeds in one row
