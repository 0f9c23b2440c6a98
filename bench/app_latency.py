"""Predict-page latency in a real browser (Debian Chromium + Playwright), beside the same work in one process.

One run measures, for the bundled models:

- **in process**: decode + :meth:`Predictor.analyse_images` + :meth:`Predictor.explain` (Grad-CAM, no
  faithfulness) of one image, after the Predictor's warm-up: the floor the page cannot beat;
- **cold start**: ``streamlit run app.py`` started -> the file input usable in the browser, and -> the
  model loaded and warmed up (the page's "Upload an image" prompt), with whether a loading message was
  on screen while it loaded;
- **first upload** after start (model ready, nothing cached) and **warm uploads** (a fresh browser
  session per image, so nothing of that image is cached): file set -> the heat-map overlay rendered;
- **map-only changes** on the shown image: CAM method, target class and opacity -> the new overlay;
- **brain model**: the sidebar switched to ``brain-mri-tumour`` (model load not timed), then one of
  its images uploaded -> overlay.

Each browser figure is followed by its ratio to the in-process time of the same image. The overlay
counts as rendered when its ``<img>`` has a new source, is decoded, and its caption names the expected
method and class. ``docs/screenshots/predict-chest-model.png`` is refreshed with ``--screenshot``.

Brain MRI images are never committed: ``--brain-image`` (default: the first file of
``/work/shared/data/brain_tumor_mri/yes``) is skipped with a note when missing.

Usage::

    .venv/bin/python bench/app_latency.py [--uploads 3] [--brain-image PATH] [--screenshot] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from app_server import AppServer  # bench/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parent.parent
CHEST = sorted((REPO / "samples" / "images" / "chest_xray").glob("*.jpeg"))
BRAIN_DIR = Path("/work/shared/data/brain_tumor_mri/yes")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# the overlay <img> (caption "... red = regions ..."): its src, whether it is decoded, and its caption
_OVERLAY_JS = """() => {
  for (const fig of document.querySelectorAll('[data-testid="stImage"], [data-testid="stFullScreenFrame"]')) {
    const cap = fig.parentElement ? fig.parentElement.innerText : '';
    const img = fig.querySelector('img');
    if (img && cap.includes('red = regions')) {
      return {src: img.src, ok: img.complete && img.naturalWidth > 0, caption: cap};
    }
  }
  return null;
}"""


def in_process(files: list[Path], model: str, repeats: int = 5) -> dict[str, float]:
    """Median seconds per file of decode + analyse_images + explain (Grad-CAM), after the Predictor's warm-up."""
    from medclf_core.images import load_image
    from medclf_core.inference import Predictor

    predictor = Predictor.from_run(REPO / "models" / model)
    if hasattr(predictor, "warm_up"):
        predictor.warm_up()
    else:  # before the warm-up existed: one untimed pass
        img = load_image(files[0]).pixels
        predictor.analyse_images([img])
        predictor.explain([img], "gradcam")
    out = {}
    for f in files:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            img = load_image(f.read_bytes()).pixels
            predictor.analyse_images([img])
            predictor.explain([img], "gradcam")
            times.append(time.perf_counter() - t)
        out[f.name] = statistics.median(times)
    return out


def overlay(page) -> dict | None:
    return page.evaluate(_OVERLAY_JS)


def wait_overlay(page, previous: str | None, caption: str, timeout_s: float = 120) -> float:
    """Seconds until an overlay with a source other than ``previous`` is decoded and its caption has ``caption``."""
    t = time.perf_counter()
    page.wait_for_function(
        "([js, prev, cap]) => { const o = eval(js)(); return o && o.ok && o.src !== prev && o.caption.includes(cap); }",
        arg=[_OVERLAY_JS, previous, caption], timeout=timeout_s * 1000, polling="raf")
    return time.perf_counter() - t


def wait_idle(page, timeout_ms: int = 180_000) -> None:
    page.wait_for_timeout(300)
    page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=timeout_ms)


def fresh_session(page, url: str) -> None:
    """A new Streamlit session (nothing of the previous uploads cached in it); the model stays loaded."""
    page.goto(url)
    page.locator("[data-testid='stFileUploader'] input[type='file']").wait_for(state="attached", timeout=180_000)
    page.get_by_text("Upload an image or click a sample").wait_for(timeout=180_000)
    wait_idle(page)


def upload(page, path: Path, caption: str) -> float:
    previous = (overlay(page) or {}).get("src")
    t = time.perf_counter()
    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(str(path))
    wait_overlay(page, previous, caption)
    return time.perf_counter() - t


def choose(page, label: str, option: str) -> float:
    """Pick ``option`` in the Streamlit selectbox labelled ``label``; returns the time of the click on it
    (opening the list is not counted)."""
    page.get_by_role("combobox", name=label, exact=True).click()
    choice = page.get_by_role("option", name=option).first
    choice.wait_for()
    t = time.perf_counter()
    choice.click()
    return t


def browser(args, inproc: dict) -> dict:
    from playwright.sync_api import sync_playwright

    res: dict = {}
    app = AppServer(args.port, "/tmp/medclf-bench-streamlit.log")
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = b.new_page(viewport={"width": 1400, "height": 1450})
            app.wait_health()
            res["server_health_s"] = time.perf_counter() - app.t0
            page.goto(app.url)
            page.locator("[data-testid='stFileUploader'] input[type='file']").wait_for(state="attached",
                                                                                      timeout=180_000)
            res["cold_file_input_s"] = time.perf_counter() - app.t0
            res["loading_message_shown"] = page.get_by_text("Loading the model").count() > 0
            page.get_by_text("Upload an image or click a sample").wait_for(timeout=180_000)
            res["cold_model_ready_s"] = time.perf_counter() - app.t0
            wait_idle(page)
            first = CHEST[3]
            res["first_upload_s"] = upload(page, first, "Grad-CAM for")
            res["first_upload_ratio"] = res["first_upload_s"] / inproc["chest"][first.name]
            wait_idle(page)
            if args.screenshot:
                page.wait_for_timeout(1500)
                page.screenshot(path=str(REPO / "docs" / "screenshots" / "predict-chest-model.png"))

            # map-only changes on the shown image
            src = overlay(page)["src"]
            t = choose(page, "Method", "Grad-CAM++")
            wait_overlay(page, src, "Grad-CAM++ for")
            res["change_method_s"] = time.perf_counter() - t
            wait_idle(page)
            shown = overlay(page)
            other = "NORMAL" if "for PNEUMONIA" in shown["caption"] else "PNEUMONIA"
            t = choose(page, "Target class", other)
            wait_overlay(page, shown["src"], f"Grad-CAM++ for {other}")
            res["change_target_s"] = time.perf_counter() - t
            wait_idle(page)
            src = overlay(page)["src"]
            slider = page.locator("[data-testid='stSlider']").filter(has_text="Opacity").get_by_role("slider")
            slider.focus()
            t = time.perf_counter()
            slider.press("ArrowRight")
            wait_overlay(page, src, "for")
            res["change_opacity_s"] = time.perf_counter() - t
            wait_idle(page)

            warm = []
            for f in CHEST[:args.uploads]:
                fresh_session(page, app.url)
                warm.append((f.name, upload(page, f, "Grad-CAM for")))
                wait_idle(page)
            res["warm_upload_s"] = {n: s for n, s in warm}
            res["warm_upload_median_s"] = statistics.median(s for _, s in warm)
            res["warm_upload_ratio"] = statistics.median(s / inproc["chest"][n] for n, s in warm)

            if args.brain_image and Path(args.brain_image).is_file():
                fresh_session(page, app.url)
                choose(page, "Model", "brain-mri-tumour")
                page.get_by_text("Model brain-mri-tumour").first.wait_for(timeout=300_000)
                page.get_by_text("Upload an image or click a sample").wait_for(timeout=300_000)
                wait_idle(page)
                brain = Path(args.brain_image)
                res["brain_upload_s"] = upload(page, brain, "Grad-CAM for")
                res["brain_upload_ratio"] = res["brain_upload_s"] / inproc["brain"][brain.name]
            else:
                res["brain_upload_s"] = None
            b.close()
    finally:
        app.stop()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uploads", type=int, default=3, help="warm uploads (one fresh session each)")
    ap.add_argument("--brain-image", default=next(iter(sorted(BRAIN_DIR.glob("*.jpg"))), None) if BRAIN_DIR.is_dir()
                    else None)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--screenshot", action="store_true", help="refresh docs/screenshots/predict-chest-model.png")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()
    # the in-process floor first, in a subprocess so the server's cold start is not helped by this process
    code = ("import json, runpy; from pathlib import Path; a = runpy.run_path('bench/app_latency.py'); "
            f"c = a['in_process'](a['CHEST'][:{max(args.uploads, 4)}], 'chest-xray-pneumonia'); "
            f"b = a['in_process']([Path({str(args.brain_image)!r})], 'brain-mri-tumour') "
            f"if {bool(args.brain_image and Path(args.brain_image).is_file())} else {{}}; "
            "print(json.dumps({'chest': c, 'brain': b}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=True)
    inproc = json.loads(out.stdout.strip().splitlines()[-1])
    res = {"load_average_before": [round(v, 2) for v in load], "in_process_s": inproc, **browser(args, inproc)}
    res["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        print(json.dumps(res, indent=2))
        return
    for k, v in res.items():
        if isinstance(v, float):
            v = round(v, 3)
        elif isinstance(v, dict):
            v = {a: (round(b, 3) if isinstance(b, float) else b) for a, b in v.items()}
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
