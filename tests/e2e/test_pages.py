"""Page defects that only a real browser on a real server shows (issue 26): a bookmarked page URL opened first
on a freshly started server, and the sidebar's model kept across a reload.

Each test starts its own server (conftest.serve_app): what happens on the first visit is the point.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from e2e.app_browser import CHROMIUM_ARGS, serve_app, wait_idle

pytestmark = pytest.mark.slow

PAGE_TITLES = ["Predict", "Train", "Evaluate", "Models"]


def _two_models(trained_run, base: Path) -> Path:
    """A models folder with two copies of the tiny run, 'tiny-a' and 'tiny-b'."""
    models = base / "models"
    for name in ("tiny-a", "tiny-b"):
        shutil.copytree(trained_run, models / name)
        card = json.loads((models / name / "card.json").read_text())
        card["name"] = name
        (models / name / "card.json").write_text(json.dumps(card))
    return models


@pytest.fixture
def fresh(tmp_path, trained_run, chromium):
    """A freshly started server (no browser has visited it) and a browser page."""
    from playwright.sync_api import sync_playwright

    with serve_app(_two_models(trained_run, tmp_path), tmp_path) as served, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            yield served, page
        finally:
            browser.close()


def _nav_labels(page) -> list[str]:
    nav = page.locator("[data-testid='stSidebarNav'] a, [data-testid='stSidebarNavLink']")
    return [t.strip().splitlines()[-1].strip() for t in nav.all_inner_texts() if t.strip()]  # after the icon


def _picker(page):
    return page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first


def _used(page) -> str:
    """The model the Evaluate page says it uses ("Model: tiny-a (the model chosen in the sidebar ...")."""
    return page.get_by_text("the model chosen in the sidebar").first.inner_text().split()[1]


def test_a_bookmarked_page_opened_first_gets_the_apps_navigation_and_model_picker(fresh):
    """Streamlit's pages/-folder mode (a pages/ folder beside the main script) ran the page alone on the first
    visit: its own page list with an entry 'app', no model picker, no notice."""
    server, page = fresh
    page.goto(f"{server['url']}/predict")
    page.wait_for_selector("[data-testid='stSidebar']")
    wait_idle(page)
    page.get_by_role("heading", name="Predict").first.wait_for()
    labels = _nav_labels(page)
    assert [x for x in labels if x in PAGE_TITLES] == PAGE_TITLES, labels
    assert "app" not in [x.lower() for x in labels] and "streamlit app" not in [x.lower() for x in labels], labels
    assert _picker(page).is_visible() and "Model" in _picker(page).inner_text()  # the shared picker
    assert "model=tiny-" in page.url  # and its pick, in the URL
    assert page.get_by_text("Research demo, not for clinical use").first.is_visible()
    assert "Traceback" not in page.content()
    # /predict names the default page, which Streamlit serves at "/": the old bookmark is sent there, without
    # Streamlit's "Page not found" dialog
    assert page.get_by_text("Page not found").count() == 0
    assert "/predict" not in page.url and page.get_by_role("link", name="Predict").count() >= 1


def test_the_picked_model_survives_a_reload_and_a_bookmark(fresh):
    """A reload starts a new session: the pick is kept in the URL (?model=...), never silently replaced."""
    server, page = fresh
    page.goto(f"{server['url']}/evaluate")
    page.wait_for_selector("[data-testid='stSidebar']")
    wait_idle(page)
    default = _used(page)
    assert default in ("tiny-a", "tiny-b") and f"model={default}" in page.url
    other = "tiny-a" if default == "tiny-b" else "tiny-b"
    _picker(page).click()
    page.get_by_role("option", name=other).first.click()
    wait_idle(page)
    page.get_by_text(f"Model: {other}").first.wait_for()
    assert f"model={other}" in page.url
    page.reload()
    page.wait_for_selector("[data-testid='stSidebar']")
    wait_idle(page)
    assert _used(page) == other, "a reload switched the model back to the default"
    assert f"model={other}" in page.url and "Traceback" not in page.content()
