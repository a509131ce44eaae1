"""The report: rendered from a tiny results set of real (small) runs and opened in headless
Chromium (playwright driving Debian's /usr/bin/chromium; CI installs both)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mfsched.experiments.reproduce import reproduce
from mfsched.experiments.spec import parse_experiment

if not os.environ.get("CI"):  # CI installs the report extra: there a missing one fails
    pytest.importorskip("matplotlib")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

COMMON = """
scenario = "testbed"
models = ["mixtral-8x7b"]
reference = true
warmup = 6
requests = 12
[config]
tail = 0
"""

EXPERIMENTS = {
    # kind attainment: 2 rates x 2 seeds (a band), one panel; one figure
    "t-attain": """description = "attainment"
figure = "Fig. 1"
kind = "attainment"
workloads = ["agent"]
rates_per_gpu = [0.5, 1.5]
schedulers = ["fs", "karuna", "mfs"]
seeds = [0, 1]
""" + COMMON + """
[[claims]]
text = "sustains more"
metric = "sustainable_rate_ratio"
paper_low = 1.17
paper_high = 1.46
[[claims]]
text = "attains more"
metric = "attainment_ratio"
paper_low = 1.4
paper_high = 1.8
denominator = "best-baseline"
""",
    # kind breakdown: one point; one figure
    "t-break": """description = "breakdown"
figure = "Fig. 2"
kind = "breakdown"
workloads = ["conv"]
rates_per_gpu = [0.5]
schedulers = ["fs", "sjf", "mfs"]
details = true
seeds = [0]
""" + COMMON + """
[[claims]]
text = "CCT"
metric = "mean_reduction"
column = "stage2_cct_mean_s"
paper_low = 0.52
denominator = "fs"
[[claims]]
text = "earliness"
metric = "nonneg_earliness_reduction"
paper_low = 0.42
denominator = ["fs", "sjf"]
""",
    # kind normalized: two workloads at one rate; one figure (bars + TTFT CDFs)
    "t-norm": """description = "normalized"
figure = "Fig. 3"
kind = "normalized"
normalize_to = "no-contention"
workloads = ["conv", "agent"]
rates_per_gpu = [1.0]
schedulers = ["fs"]
details = true
seeds = [0]
""" + COMMON + """
[[claims]]
text = "TTFT"
metric = "mean_ratio"
column = "ttft_mean_s"
numerator = "fs"
denominator = "no-contention"
paper_low = 1.5
""",
}
FIGURES_EXPECTED = 3  # one per experiment above


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    for name, text in EXPERIMENTS.items():
        exp = parse_experiment(text, f"{name}.toml", name)
        reproduce(exp, quick=False, out_dir=root / name, jobs=1)
    return root


def _chromium():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed in CI (scripts/install-test-deps.sh)")
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    return sync_playwright


def test_report_renders_in_headless_chromium(results, tmp_path):
    sync_playwright = _chromium()
    out = tmp_path / "report"
    res = subprocess.run([sys.executable, "-m", "mfsched.cli", "report", str(results), "--out",
                          str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    page_path = Path(res.stdout.strip())
    assert page_path == out / "report.html" and page_path.is_file()

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(page_path.as_uri(), wait_until="load")
            images = page.evaluate("""() => Array.from(document.images).map(i => ({
                complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
                file: i.dataset.file, alt: i.alt}))""")
            headings = page.locator("h2").all_inner_texts()
            text = page.inner_text("body")
        finally:
            browser.close()
    assert errors == []
    assert len(images) == FIGURES_EXPECTED
    for img in images:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img
        assert img["alt"]
        assert (out / img["file"]).stat().st_size > 0  # the PNG beside the page
    assert [h.split(":")[1].split("(")[0].strip() for h in headings] == \
        ["t-attain", "t-break", "t-norm"]
    assert text.count("The paper's stated numbers next to ours") == 3
    assert "Sustainable rate" in text and "1.17-1.46x" in text
    assert "Qwen-Bailian traces" in text  # says the paper's traces are not available


def test_report_figures_are_not_blank_and_markdown_links_them(results, tmp_path):
    import matplotlib.image as mpimg

    from mfsched.report import write_report

    page = write_report(results, tmp_path / "r")
    pngs = sorted((tmp_path / "r" / "figures").glob("*.png"))
    assert len(pngs) == FIGURES_EXPECTED and page.is_file()
    markdown = (tmp_path / "r" / "report.md").read_text()  # the same report, for docs/
    assert all(f"](figures/{png.name})" in markdown for png in pngs)
    assert markdown.count("*The paper's stated numbers next to ours*") == 3
    for png in pngs:
        pixels = mpimg.imread(png)
        assert pixels.std() > 0.05, png  # drawn, not a uniform canvas


def test_report_of_an_interrupted_run_says_it_is_partial(results, tmp_path):
    from mfsched.report import write_report

    partial = tmp_path / "partial"
    shutil.copytree(results / "t-attain", partial)
    (partial / "results.parquet").unlink()  # as after a kill: only point files
    for f in sorted((partial / "points").glob("*__s1.parquet")):
        f.unlink()
    html = write_report(partial, tmp_path / "r").read_text()
    assert "Partial: 2 of 4 points finished" in html


def test_report_errors_are_one_line_exit_2(tmp_path):
    for target, fragment in [(tmp_path / "none", "no such results directory"),
                             (tmp_path, "holds no results of 'mfsched reproduce'")]:
        res = subprocess.run([sys.executable, "-m", "mfsched.cli", "report", str(target)],
                             capture_output=True, text=True)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert fragment in res.stderr and "Traceback" not in res.stderr
