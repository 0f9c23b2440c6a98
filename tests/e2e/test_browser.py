"""End to end in a real browser: `streamlit run app.py` driven by Playwright and Debian's headless Chromium.

Uploads an image and waits for the prediction and the Grad-CAM overlay; launches a tiny training
run and waits for it to finish; visits every page. Screenshots of each page go to
``$MEDCLF_SCREENSHOTS_DIR`` (``scripts/screenshots.sh`` sets it to docs/screenshots), else to a
temporary folder.

Skipped, with the reason, when Playwright or Chromium is missing, unless ``MEDCLF_REQUIRE_BROWSER=1``
(CI sets it), in which case it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from e2e.app_browser import CHROMIUM_ARGS, serve_app
from e2e.app_browser import go as _go
from e2e.app_browser import wait_idle as _wait_idle
from helpers import SAMPLES

JPEG = sorted((SAMPLES / "images" / "chest_xray").glob("*.jpeg"))[0]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_run, chromium):
    """`streamlit run app.py` on a free local port, with its own models folder (one tiny run) and jobs folder."""
    base = tmp_path_factory.mktemp("app")
    models = base / "models"
    shutil.copytree(trained_run, models / Path(trained_run).name)
    with serve_app(models, base) as served:
        yield served


@pytest.fixture(scope="module")
def browser_page(server, chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    d = Path(os.environ.get("MEDCLF_SCREENSHOTS_DIR") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it first."""
    height = page.evaluate("() => Math.max(...Array.from(document.querySelectorAll('[data-testid=\"stMain\"], "
                           "[data-testid=\"stAppViewContainer\"], section')).map(e => e.scrollHeight), 1000)")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(int(height) + 40, 4000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def test_upload_shows_prediction_and_overlay(browser_page, server, shots):
    page = browser_page
    _go(page, server, "")
    page.get_by_text("Research demo, not for clinical use").first.wait_for()
    assert page.locator("[data-testid='stSidebar']").get_by_text("Model").first.is_visible()
    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(str(JPEG))
    page.get_by_text("Decision at the model's operating threshold").wait_for(timeout=120_000)
    page.get_by_text("Grad-CAM for").wait_for(timeout=120_000)
    _wait_idle(page)
    images = page.locator("[data-testid='stImage'] img")
    assert images.count() >= 2  # the original and the overlay
    page.locator("[data-testid='stPlotlyChart']").first.wait_for(timeout=60_000)  # the probability bars
    assert "Traceback" not in page.content()
    _screenshot(page, shots / "predict.png")


def test_bad_upload_shows_a_message(browser_page, server, tmp_path):
    page = browser_page
    _go(page, server, "")
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"definitely not a PNG")
    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(str(bad))
    page.get_by_text("could not be used").wait_for(timeout=60_000)
    assert "Traceback" not in page.content()


def test_train_a_tiny_run_to_completion(browser_page, server, shots):
    page = browser_page
    _go(page, server, "train")
    page.get_by_text("No problems found").wait_for(timeout=120_000)
    page.get_by_label("Epochs", exact=True).fill("2")
    page.get_by_label("Epochs", exact=True).press("Tab")
    slider = page.get_by_role("slider").first  # image size: 64 -> 48 -> 32 px
    slider.focus()
    slider.press("ArrowLeft")
    slider.press("ArrowLeft")
    page.get_by_label("Run name (optional)").fill("browser-run")
    page.get_by_role("button", name="Launch training").click()
    page.get_by_text("Training job: browser-run").wait_for(timeout=60_000)
    page.get_by_text("Training finished").wait_for(timeout=240_000)
    _wait_idle(page)
    page.get_by_text("Final metrics").wait_for()
    assert (server["models"] / "browser-run" / "model.keras").is_file()
    card = json.loads((server["models"] / "browser-run" / "card.json").read_text())
    assert card["config"]["epochs"] == 2
    assert "Traceback" not in page.content()
    _screenshot(page, shots / "train.png")


def test_evaluate_and_models_pages(browser_page, server, shots):
    page = browser_page
    _go(page, server, "evaluate")
    page.get_by_text("Confusion matrix (counts)").first.wait_for(timeout=120_000)
    _wait_idle(page)
    page.locator("[data-testid='stPlotlyChart']").nth(3).wait_for(timeout=60_000)  # 2 matrices, threshold, ROC
    page.get_by_text("Misclassified images").wait_for()
    page.wait_for_timeout(2000)
    _screenshot(page, shots / "evaluate.png")
    _go(page, server, "models")
    page.get_by_text("The full model card").wait_for()
    page.locator("[data-testid='stPlotlyChart']").first.wait_for(timeout=60_000)  # training curves
    page.wait_for_timeout(3000)
    assert "Traceback" not in page.content()
    _screenshot(page, shots / "models.png")


def test_the_site_panel_stays_open_while_its_name_is_typed(browser_page, server, tmp_path):
    """Walk-through: after an evaluation by upload, typing the site's name (Enter) collapsed "Adopt as this site's
    calibration", hiding the button the user was about to press."""
    import zipfile

    from helpers import CHEST_SAMPLE

    archive = tmp_path / "site.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(CHEST_SAMPLE.glob("*/*"))[::4]:
            z.write(f, f"{f.parent.name}/{f.name}")
    page = browser_page
    _go(page, server, "evaluate")
    page.locator("label").filter(has_text="upload a zip or images").click()
    _wait_idle(page)
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(archive))
    _wait_idle(page)
    page.get_by_role("button", name="Evaluate", exact=True).click()
    page.get_by_text("Adopt as this site's calibration").wait_for(timeout=120_000)
    _wait_idle(page)
    page.get_by_text("Adopt as this site's calibration").click()
    page.get_by_role("textbox", name="Site name").fill("ward-b")
    page.keyboard.press("Enter")
    _wait_idle(page)
    page.wait_for_timeout(1500)
    assert page.get_by_role("button", name="Fit and check").is_visible()
    assert "Traceback" not in page.content()
