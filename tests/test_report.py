"""The HTML report, opened in a real headless Chromium (Debian's), from a real tiny campaign.

The campaign is answered by the scripted model, a stand-in for an LLM.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hpcagents.views.report import render, write_report

pytestmark = pytest.mark.slow

PAGE_SCRIPT = """JSON.stringify({
  images: [...document.querySelectorAll('figure img')].map(i => ({
    figure: i.closest('figure').dataset.figure, complete: i.complete,
    width: i.naturalWidth, height: i.naturalHeight})),
  fields: [...document.querySelectorAll('[data-field]')].map(e => ({
    field: e.dataset.field, value: e.dataset.value, text: e.textContent.trim(),
    row: e.closest('tr') ? e.closest('tr').dataset.row || null : null,
    server: e.closest('tr') ? e.closest('tr').dataset.server || null : null,
    table: e.closest('table') ? e.closest('table').dataset.table || null : null})),
  standIn: !!document.querySelector('[data-stand-in]'),
  text: document.body.innerText,
})"""


@pytest.fixture
def campaign(small_finished_campaign) -> Path:
    """A real campaign: 1 iteration x 2 PGs at bench size 128 (one PG needs a repair), the
    session's one (conftest), which these tests only read."""
    return small_finished_campaign / "results" / "dgemm"


def test_workflow_writes_a_self_contained_html_report(campaign):
    page = (campaign / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    # self-contained: no fetch of anything from anywhere
    for needle in ("http://", "https://", "<script src", "<link"):
        assert needle not in page.replace("http://127.0.0.1", ""), needle
    assert page.count("data:image/png;base64,") == 4


def test_report_shows_each_final_round_verdict_as_best_json_records_it(campaign):
    import re

    page = (campaign / "report.html").read_text()
    best = json.loads((campaign / "iter1" / "best.json").read_text())
    decision = best["decision"]
    assert decision["decided_by"] == "final_round"
    row = re.search(r'<tr data-round="1">(.*?)</tr>', page)
    assert row, "no final-round row for iteration 1"
    used = re.search(r'data-field="rounds_used">(\d+)<', row.group(1))
    assert used and int(used.group(1)) == decision["rounds_used"] >= 1
    assert decision.get("outcome", "not timed") in row.group(1)
    from html import escape

    assert escape(best["reason"]) in row.group(1)


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("Debian's chromium is not installed (make test installs it as root)")
    return path


def test_report_in_chromium_no_console_error_plots_rendered_figures_equal_summary(
    campaign, tmp_path
):
    _chromium()
    from chromium import Browser

    summary = json.loads((campaign / "summary.json").read_text())
    browser = Browser()
    try:
        result = browser.load((campaign / "report.html").as_uri(), PAGE_SCRIPT)
    finally:
        browser.close()
    shot = tmp_path / "report.png"
    shot.write_bytes(result.screenshot)
    print(f"screenshot of the report: {shot}")
    assert result.errors == []
    page = json.loads(result.value)

    figures = {img["figure"]: img for img in page["images"]}
    assert set(figures) == {"progress", "candidates", "servers", "timeline"}
    for img in figures.values():
        assert img["complete"] and img["width"] > 200 and img["height"] > 100, img

    rows = {r["iteration"]: r for r in summary["rows"]}
    seen = 0
    for f in page["fields"]:
        if f["table"] == "iterations":
            want = rows[int(f["row"])][f["field"]]
        elif f["table"] == "servers":
            want = summary["totals"]["per_server"][f["server"]][f["field"]]
        elif "." in f["field"]:
            head, key = f["field"].split(".")
            want = summary[head][key]
        elif f["field"] == "speedup":
            want = summary["speedup"]
        else:
            continue
        seen += 1
        if isinstance(want, bool):
            assert f["value"] == str(want).lower()
        elif isinstance(want, int | float):
            assert float(f["value"]) == want, f
            # what a person reads is the same figure, rounded for display
            digits = len(f["text"].split(".")[1]) if "." in f["text"] else 0
            assert float(f["text"].split()[0]) == round(want, digits), f
        else:
            assert f["value"] == want, f
    assert seen >= 3 * len(summary["rows"]) + 4
    assert page["standIn"] and "stand-in" in page["text"]
    # provenance: the compiler, its flags, the reference library and the CPU are named
    for needle in ("-march=native", "gcc", "MKL", "cores"):
        assert needle in page["text"], needle
    assert len(result.screenshot) > 10_000


def test_report_command_writes_one_page_for_all_kernels(campaign, tmp_path):
    out = tmp_path / "all.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpcagents",
            "report",
            "--results",
            str(campaign.parent),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and 'data-kernel="dgemm"' in out.read_text()


def test_report_command_names_a_results_dir_without_campaign(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hpcagents", "report", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "no finished campaign under" in proc.stderr


def test_report_of_a_campaign_without_timestamps_says_so_instead_of_a_timeline(campaign, tmp_path):
    """An older campaign (no started_at/ended_at, no evaluation start) still renders."""
    old = tmp_path / "dgemm"
    shutil.copytree(campaign, old)
    for path in old.glob("iter*/**/*.json"):
        data = json.loads(path.read_text())
        for rec in data.get("llm_calls") or []:
            rec.pop("started_at", None), rec.pop("ended_at", None)
        if isinstance(data.get("llm"), dict):
            data["llm"].pop("started_at", None), data["llm"].pop("ended_at", None)
        if isinstance(data.get("provenance"), dict):
            data["provenance"].pop("started_at", None)
        path.write_text(json.dumps(data))
    page = render([old])
    assert "No timestamps recorded" in page
    assert 'data-figure="timeline"' not in page
    assert 'data-figure="progress"' in page
    write_report([old], tmp_path / "r.html")


def test_the_browser_check_sees_a_console_error_and_a_broken_image(tmp_path):
    """The Chromium check itself can fail: a page with both faults is caught."""
    _chromium()
    from chromium import Browser

    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><figure data-figure='x'>"
        "<img src='data:image/png;base64,AAAA'></figure>"
        "<script>console.error('boom')</script></body></html>"
    )
    browser = Browser()
    try:
        result = browser.load(page.as_uri(), PAGE_SCRIPT)
    finally:
        browser.close()
    assert any("boom" in e for e in result.errors), result.errors
    (img,) = json.loads(result.value)["images"]
    assert img["width"] == 0
