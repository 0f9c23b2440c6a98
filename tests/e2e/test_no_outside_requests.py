"""Issue 26 items 2 and 6: no page makes the browser ask any host but the app's own, even with a model card full of
Markdown and HTML.

The models folder holds one tiny run whose card has Markdown images, HTML images, bare links, LaTeX, emoji
shortcodes and ``:material/...:`` directives in every free-text field (class names, task, intended use,
training data, data path, threshold method ...), each pointing at its own ``*.evil.test`` host so a leak
names the field. Every page is visited (Predict with that model picked, an upload with a hostile file name and
a bad file, the heat map; Train; Evaluate; Models with the full card), and Playwright's request log must hold
only 127.0.0.1. Requests elsewhere are aborted (recorded first), so the test never reaches the network.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from e2e.app_browser import CHROMIUM_ARGS, go, serve_app, wait_idle
from helpers import SAMPLES

pytestmark = pytest.mark.slow

JPEG = sorted((SAMPLES / "images" / "chest_xray").glob("*.jpeg"))[0]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def hostile(tag: str) -> str:
    """Text that would make the browser fetch ``<tag>-*.evil.test`` if it reached Markdown or HTML."""
    return (f"![{tag}](http://{tag}-md.evil.test/x.png) <img src='http://{tag}-html.evil.test/x.png'> "
            f"![{tag}](http:{tag}-rel.evil.test) <https://{tag}-auto.evil.test> www.{tag}-www.evil.test "
            f"**bold** $x^2$ :material/warning: :smile: <b>b</b>")


def _hostile_card(card: dict) -> dict:
    """``card`` with every free-text field (and the class names, wherever they are keys or values) hostile."""
    classes = card["class_names"]
    renamed = {c: hostile(f"class{i}") for i, c in enumerate(classes)}

    def swap(v):
        if isinstance(v, dict):
            return {renamed.get(k, k): swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return renamed.get(v, v) if isinstance(v, str) else v

    card = swap(card)
    card["task"] = hostile("task")
    card["training_data"] = hostile("training")
    card["threshold_method"] = hostile("method")
    card["intended_use"] = {"summary": hostile("use"), "population": hostile("population"),
                            "not_for": [hostile("notfor")], "modalities": ["DX"]}
    card["config"]["data"] = "/nowhere/" + hostile("datapath").replace("/", "_")
    card["config"]["task"] = hostile("configtask")
    return card


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory, trained_run, chromium):
    base = tmp_path_factory.mktemp("hostile-app")
    run = base / "models" / "m.__bold__.x"
    shutil.copytree(trained_run, run)
    card = _hostile_card(json.loads((run / "card.json").read_text()))
    card["name"] = run.name
    (run / "card.json").write_text(json.dumps(card))
    with serve_app(run.parent, base) as served:
        yield served


def test_no_page_asks_another_host(hostile_server, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    requested: list[tuple[str, str]] = []  # (the page being visited, the URL asked for)
    where = ["start"]
    named = tmp_path / "![file](http:file-md.evil.test) <img src=http:file-html.evil.test>.jpeg"
    shutil.copy(JPEG, named)
    bad = tmp_path / "![bad](http:badfile-md.evil.test).png"
    bad.write_bytes(b"not an image ![err](http:error-md.evil.test)")

    def route(r):
        if urlsplit(r.request.url).hostname in LOCAL_HOSTS:
            r.continue_()
        else:
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.on("request", lambda req: requested.append((where[0], req.url)))
            context.route("**/*", route)
            page = context.new_page()
            page.set_default_timeout(90_000)
            _visit_every_page(page, hostile_server, [named, bad], where)
        finally:
            browser.close()
    outside = sorted({(w, u) for w, u in requested if urlsplit(u).scheme in ("http", "https", "ws", "wss")
                      and urlsplit(u).hostname not in LOCAL_HOSTS})
    assert len(requested) > 20, requested  # the log did record the app's own requests
    assert not outside, "\n".join(f"{w}: {u}" for w, u in outside)


def _visit_every_page(page, server, uploads: list[Path], where: list[str]) -> None:
    """Every page in turn; ``where[0]`` names the one being visited (for the request log)."""
    where[0] = "predict"
    go(page, server, "")  # Predict, with the hostile model picked (the only one)
    page.get_by_text("Images are resized to").wait_for()
    page.get_by_text("What this model is for").click()
    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files([str(u) for u in uploads])
    page.get_by_text("could not be used").first.wait_for()
    # the detail of the good file: its heat map's score (the reading guide's hidden caption also names faithfulness)
    page.get_by_text(re.compile(r"^Faithfulness")).first.wait_for(timeout=120_000)
    wait_idle(page)
    page.wait_for_timeout(1500)
    where[0] = "train"
    go(page, server, "train")
    page.wait_for_timeout(1500)
    where[0] = "evaluate"
    go(page, server, "evaluate")
    page.wait_for_timeout(1500)
    where[0] = "models"
    go(page, server, "models")
    page.get_by_text("The full model card").first.click()
    wait_idle(page)
    page.wait_for_timeout(2000)
    assert "Traceback" not in page.content()
