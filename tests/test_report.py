"""``vectorize report``: the page opens in headless Chromium (Debian's ``chromium``) with no
network, draws every chart without a script error, and its screenshot shows them."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.corpus import commit_rows, write_jsonl
from tests.helpers import run
from vectorize.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLOTLY_BLUE = (0x63, 0x6E, 0xFA)  # Plotly's first trace colour
pytestmark = [
    pytest.mark.usefixtures("ray_cluster"),
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it where it can)"),
]


def chromium(*args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--virtual-time-budget=15000", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def test_the_report_renders_its_charts_offline(tmp_path, tiny_model, pg_dsn, table_name, capsys):
    rows = commit_rows(60)
    rows[5]["text"] = ""  # one row in the errors table
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    run(source, table_name, tiny_model, pg_dsn, text="{text}", batch_size=8)

    page = tmp_path / "report.html"
    assert main(["report", "--table", table_name, "--dsn", pg_dsn, "--out", str(page), "--sample", "100"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {page} (59 vectors; checks ")
    text = page.read_text()
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?https?:""", text), "the page loads from the network"
    assert 'id="checks"' in text and 'id="runs"' in text

    dom = chromium("--dump-dom", page.as_uri()).stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert "data-script-errors" not in body, body
    assert 'data-charts-expected="5"' in body and 'data-charts-rendered="5"' in body, body
    for chart in ("throughput", "norms", "neighbours", "errors", "runs"):
        drawn = re.search(rf'id="chart-{chart}".*?class="main-svg"', dom, re.S)
        assert drawn, f"chart {chart} has no SVG"

    from PIL import Image

    shot = tmp_path / "report.png"
    chromium("--window-size=1200,3400", f"--screenshot={shot}", page.as_uri())
    pixels = Image.open(shot).convert("RGB").getdata()
    blue = sum(1 for p in pixels if p == PLOTLY_BLUE)
    assert blue > 20_000, f"the screenshot shows {blue} pixels of the charts' colour"


def test_report_bad_input(pg_dsn, tmp_path, capsys):
    assert main(["report", "--table", "no_such_collection", "--dsn", pg_dsn, "--out", str(tmp_path / "r.html")]) == 2
    assert "no collection 'no_such_collection'" in capsys.readouterr().err
    assert main(["report", "--table", "x", "--dsn", pg_dsn, "--out", str(tmp_path / "absent" / "r.html")]) == 2
    assert "give a file in a folder that exists" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
