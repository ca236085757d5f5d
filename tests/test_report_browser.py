"""The report page in headless Chromium: every image loads, nothing overflows horizontally.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and the
``selenium`` package; skips with a message saying so when they are absent.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "camus224-test"
CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason=f"headless Chromium not found ({CHROMIUM}, {CHROMEDRIVER}); install the Debian "
    "packages chromium and chromium-driver (.ci/run does)",
)

PAGE_STATE = """
return {
  images: document.images.length,
  broken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))
               .map(i => i.getAttribute('src')),
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
};
"""


@pytest.fixture(scope="module")
def report_index(tmp_path_factory) -> Path:
    """Report of a ``--segmentation gt`` run on 4 bundled patients."""
    if not (SAMPLE / "database_nifti").is_dir():
        pytest.skip(f"bundled sample not found: {SAMPLE}")
    from echo_batch.domain import SegmentationSource
    from echo_batch.io.discovery import discover
    from echo_batch.report import write_report
    from echo_batch.run.options import ChunkOptions, RunOptions
    from echo_batch.run.serial import run_cohort

    manifest = discover(SAMPLE)
    manifest = dataclasses.replace(manifest, patients=manifest.patients[:4])
    out = tmp_path_factory.mktemp("run")
    run_cohort(
        RunOptions(SAMPLE, out, ChunkOptions(segmentation=SegmentationSource.GT)), manifest=manifest
    )
    return write_report(out, worst=3)


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.parametrize("width", [1280, 400], ids=["desktop", "phone"])
def test_report_renders_without_broken_images_or_overflow(report_index, browser, tmp_path, width):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(width, 900)
    browser.get(report_index.as_uri())
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && "
            "Array.from(document.images).every(i => i.complete)"
        )
    )
    state = browser.execute_script(PAGE_STATE)
    shot = tmp_path / f"report-{width}.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert state["images"] >= 6, state  # plots and the gallery
    assert state["broken"] == [], state
    assert state["scrollWidth"] <= state["innerWidth"], state
