"""The HTML report, built from a sample database and rendered in Chromium.

The browser test needs Chromium (Debian package ``chromium``). When it is
missing the test fails with the install command: a report that was never
rendered is not known to show its plots.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import conftest_db
import numpy as np
import pytest
import yaml
from conftest_db import SAMPLE, fill_sample
from matplotlib.image import imread

from txwatch import db
from txwatch.config import DEFAULT_CONFIG
from txwatch.report import build_report, main_report

pytestmark = pytest.mark.integration

# Fixtures from conftest_db, so that this module runs on its own too.
pg_admin = conftest_db.pg_admin
throwaway_db = conftest_db.throwaway_db
migrated_db = conftest_db.migrated_db
sample_db = conftest_db.sample_db

ALL_PLOTS = [
    "alerts-over-time",
    "scores-over-time",
    "score-distribution",
    "detector-precision",
    "threshold-precision-recall",
    "feature-drift",
]
CHROMIUM_NAMES = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
PAGE_WIDTH = 1200

# Appended to a copy of the report (the report itself has no script): once the
# page has loaded, write each plot's decoded size and laid-out box into the DOM.
MEASURE = """<script>
window.addEventListener("load", function () {
  var images = document.querySelectorAll("img.plot");
  var plots = Array.prototype.map.call(images, function (img) {
    var box = img.getBoundingClientRect();
    return {id: img.id, complete: img.complete, naturalWidth: img.naturalWidth,
            naturalHeight: img.naturalHeight, x: box.left + window.scrollX,
            y: box.top + window.scrollY, width: box.width, height: box.height};
  });
  var out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify(
    {plots: plots, height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "Chromium is not installed, so the report cannot be rendered; install it "
        "with `apt-get install -y chromium` (Debian/Ubuntu package) and re-run."
    )


def run_chromium(profile: Path, *args: str) -> str:
    result = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"chromium failed: {result.stderr[-2000:]}"
    return result.stdout


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def report_path(pg_admin, sample_db, tmp_path_factory) -> Path:
    conn = pg_admin.connect(sample_db.database)
    try:
        with conn.cursor() as cur:
            cur.execute("SET ROLE analyst")
        return build_report(conn, tmp_path_factory.mktemp("report") / "report.html")
    finally:
        conn.close()


def test_report_is_one_self_contained_file_with_every_plot(report_path):
    text = report_path.read_text()

    assert not re.search(r"(src|href)=\"(https?:|//|file:)", text)
    assert "<script" not in text and "<link" not in text
    images = re.findall(
        r'<img class="plot" id="plot-([\w-]+)"[^>]*src="data:image/png;'
        r'base64,([^"]+)"',
        text,
    )
    assert [slug for slug, _ in images] == ALL_PLOTS
    for slug, encoded in images:
        width, height = png_size(base64.b64decode(encoded))
        assert width >= 600 and height >= 200, slug
    assert "No fraud labels" not in text
    assert SAMPLE.risky_terminal in text


def test_report_renders_every_plot_in_headless_chromium(report_path, tmp_path):
    probe = tmp_path / "measure.html"
    probe.write_text(report_path.read_text().replace("</body>", MEASURE + "</body>"))
    dom = run_chromium(
        tmp_path / "profile-dom",
        f"--window-size={PAGE_WIDTH},900",
        "--dump-dom",
        probe.as_uri(),
    )
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found, "the page did not finish loading in Chromium"
    measured = json.loads(found[1].replace("&quot;", '"').replace("&amp;", "&"))
    plots = {p["id"].removeprefix("plot-"): p for p in measured["plots"]}
    assert list(plots) == ALL_PLOTS
    for slug, plot in plots.items():
        assert plot["complete"] and plot["naturalWidth"] > 0, f"{slug} did not decode"
        assert plot["width"] > 500 and plot["height"] > 150, f"{slug} laid out {plot}"

    height = int(measured["height"]) + 20
    shot = tmp_path / "report.png"
    run_chromium(
        tmp_path / "profile-shot",
        f"--window-size={PAGE_WIDTH},{height}",
        f"--screenshot={shot}",
        report_path.as_uri(),
    )
    pixels = imread(shot)[..., :3]
    assert pixels.shape[1] == PAGE_WIDTH and pixels.shape[0] >= height - 5
    for slug, plot in plots.items():
        top, left = int(plot["y"]), int(plot["x"])
        region = pixels[
            top : top + int(plot["height"]), left : left + int(plot["width"])
        ]
        colours = len(np.unique((region * 255).astype(np.uint8).reshape(-1, 3), axis=0))
        ink = float((region.mean(axis=2) < 0.9).mean())
        assert colours > 20, f"{slug}: only {colours} colours on screen"
        assert 0.01 < ink < 0.9, f"{slug}: {ink:.1%} of the area is drawn"


def test_report_without_labels_or_drift_metrics_says_so(
    pg_admin, throwaway_db, tmp_path
):
    settings = throwaway_db()
    db.migrate(settings, pg_admin.password, {}, force_postgres=True)
    conn = pg_admin.connect(settings.database)
    try:
        fill_sample(conn, labels=False, drift=False)
        with conn.cursor() as cur:
            cur.execute("SET ROLE analyst")
        text = build_report(conn, tmp_path / "report.html").read_text()
    finally:
        conn.close()

    assert "No fraud labels in this period" in text
    assert "No drift metrics recorded" in text
    slugs = re.findall(r'<img class="plot" id="plot-([\w-]+)"', text)
    assert slugs == [
        "alerts-over-time",
        "scores-over-time",
        "score-distribution",
        "feature-drift",
    ]
    assert "standard deviations of that first day" in text


def test_report_on_an_empty_database_says_there_is_nothing(
    pg_admin, migrated_db, tmp_path
):
    conn = pg_admin.connect(migrated_db.database)
    try:
        text = build_report(conn, tmp_path / "empty.html").read_text()
    finally:
        conn.close()

    assert "No scored transactions yet" in text
    assert "<img" not in text


def test_cli_writes_the_report_as_the_analyst(sample_db, tmp_path, capsys):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["postgres"]["database"] = sample_db.database
    config = tmp_path / "txwatch.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "cli" / "report.html"

    assert main_report(["--out", str(out), "--config", str(config), "--days", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text().count('<img class="plot"') == len(ALL_PLOTS)
