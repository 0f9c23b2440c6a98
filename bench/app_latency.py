"""Predict-page latency in a real browser (Debian Chromium + Playwright), beside the same work in one process.

One run measures, for the bundled models:

- **in process**: decode + :meth:`Predictor.predict` + :meth:`Predictor.explain` (Grad-CAM, no
  faithfulness) of one image, after the Predictor's warm-up: the floor the page cannot beat; and
  ``explain`` alone per method, the floor of a map-only change;
- **cold start**: ``streamlit run app.py`` started -> the file input usable in the browser;
- **early upload**: an image chosen one second after the file input appeared (as an impatient user
  would) -> its heat-map overlay rendered, with whether a loading message was on screen when it was
  chosen, and the time from the server's start to that overlay (the server loads and warms the default
  model as it starts: app.py);
- **first upload** in a fresh session after that (model ready, nothing of the image cached) and **warm
  uploads** (a fresh browser session per image): file set -> the heat-map overlay rendered; then the same
  images uploaded one after another in one session (**same session**: the last file removed, the next
  chosen), where the browser's scripts and styles are already warm;
- **map-only changes** on the shown image: CAM method (twice), target class (twice) and opacity (three
  times) -> the new overlay, each a map not computed before;
- **brain model**: in a fresh session per image, the sidebar switched to ``brain-mri-tumour`` (not
  timed), then the image uploaded -> overlay.

The output names each bundled model's backend (``backends``: LiteRT, or TensorFlow and why): a checkout
without ``model.tflite`` files serves on TensorFlow, ~0.1 s slower per upload, so compare runs with the same.

Each browser figure is followed by its ratio to the in-process time of the same work. Browser times are
taken on the page's own clock, from the user's action (the click, key press or file choice, seen by a
capturing listener) to the frame in which the overlay's ``<img>`` has a new source, is decoded, and its
caption names the expected method and class. ``docs/screenshots/predict-chest-model.png`` is refreshed with ``--screenshot``.

Each step waits for the page's script run to end before the next (the report button drawn, no running
indicator and no stale element for 0.5 s), so no step is timed while the previous one still computes.

Brain MRI images are never committed: ``--brain-images`` (default: the first 3 files of
``/work/shared/data/brain_tumor_mri/yes``) are skipped when missing.

Usage::

    .venv/bin/python bench/app_latency.py [--uploads 6] [--brain-images PATH ...] [--screenshot] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


@functools.cache
def _warmed_predictor(model: str):
    """The bundled ``model``'s Predictor after its warm-up (loaded once per process)."""
    from medclf_core.inference.predictor import Predictor

    predictor = Predictor.from_run(REPO / "models" / model)
    if hasattr(predictor, "warm_up"):
        predictor.warm_up()
    else:  # before the warm-up existed: one untimed pass
        from medclf_core.io.images import load_image

        pixels = load_image(CHEST[0].read_bytes()).pixels
        predictor.predict([pixels])
        predictor.explain([pixels], "gradcam")
    return predictor


def _median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        work()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def in_process(files: list[Path], model: str, repeats: int = 5) -> dict[str, float]:
    """Median seconds per file of decode + predict + explain (Grad-CAM), after the Predictor's warm-up."""
    from medclf_core.io.images import load_image

    predictor = _warmed_predictor(model)

    def work(f: Path) -> None:
        if getattr(predictor, "lite", None) is not None:  # LiteRT keeps recent forward passes: each repeat pays its own
            predictor.lite.forget()
        img = load_image(f.read_bytes()).pixels
        predictor.predict([img])
        predictor.explain([img], "gradcam")

    return {f.name: _median_seconds(lambda f=f: work(f), repeats) for f in files}


def in_process_maps(file: Path, model: str, repeats: int = 5) -> dict[str, float]:
    """Median seconds of :meth:`Predictor.explain` alone per method on one decoded image: what a map-only
    change must compute."""
    from medclf_core.io.images import load_image

    predictor = _warmed_predictor(model)
    img = load_image(file.read_bytes()).pixels
    return {m: _median_seconds(lambda m=m: predictor.explain([img], m, 0), repeats)
            for m in ("gradcam", "gradcam++", "scorecam")}


def overlay(page) -> dict | None:
    return page.evaluate(_OVERLAY_JS)


# The user's clock, in the page: the last click, key press or file choice (capturing listeners, so the
# widget's own handlers come after), and the moment the polling below sees the new overlay decoded.
# Timing in the page leaves out Playwright's own round trips (~50-80 ms per click action).
_CLOCK_JS = """() => {
  const mark = () => { window.__medclfT0 = performance.now(); };
  document.addEventListener('click', mark, true);
  document.addEventListener('keydown', mark, true);
  document.addEventListener('change', (e) => { if (e.target && e.target.type === 'file') mark(); }, true);
}"""


def wait_overlay(page, previous: str | None, caption: str, timeout_s: float = 120) -> float:
    """Seconds, on the page's clock, from the last user action to an overlay with a source other than
    ``previous``, decoded, whose caption has ``caption``."""
    page.wait_for_function(
        "([js, prev, cap]) => { const o = eval(js)(); const ok = o && o.ok && o.src !== prev && "
        "o.caption.includes(cap); if (ok) window.__medclfT1 = performance.now(); return ok; }",
        arg=[_OVERLAY_JS, previous, caption], timeout=timeout_s * 1000, polling="raf")
    return page.evaluate("() => (window.__medclfT1 - window.__medclfT0) / 1000")


# the run is over: no running indicator and no element left stale from the previous run, for 0.5 s in a row
_IDLE_JS = """() => {
  const busy = document.querySelector("[data-testid='stStatusWidget']") || document.querySelector("[data-stale='true']");
  const now = performance.now();
  if (busy || window.__medclfIdleSince === undefined) { window.__medclfIdleSince = busy ? null : now; return false; }
  if (window.__medclfIdleSince === null) { window.__medclfIdleSince = now; return false; }
  return now - window.__medclfIdleSince > 500;
}"""


def wait_idle(page, timeout_ms: int = 180_000, last: str | None = None) -> None:
    """Until the script run has ended. ``last``: a selector of the page's last element, waited for first
    (the running indicator appears only after a delay, so a short quiet spell alone can come too early)."""
    if last:
        page.locator(last).last.wait_for(timeout=timeout_ms)
    page.evaluate("() => { delete window.__medclfIdleSince; }")
    page.wait_for_function(_IDLE_JS, timeout=timeout_ms, polling=50)


# the end of a result: the report button (after the faithfulness check) in the heat-map panel
RESULT_END = "[data-testid='stDownloadButton']"


def fresh_session(page, url: str) -> None:
    """A new Streamlit session (nothing of the previous uploads cached in it); the model stays loaded."""
    page.goto(url)
    page.locator("[data-testid='stFileUploader'] input[type='file']").wait_for(state="attached", timeout=180_000)
    page.get_by_text("Upload an image or click a sample").wait_for(timeout=180_000)
    wait_idle(page)


def upload(page, path: Path, caption: str) -> float:
    """Seconds from the file chosen to its overlay rendered."""
    previous = (overlay(page) or {}).get("src")
    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(str(path))
    return wait_overlay(page, previous, caption)


def early_upload(page, app, image: Path, after_s: float = 1.0) -> dict:
    """``image`` chosen ``after_s`` seconds after the file input appeared (it has just appeared) -> its overlay:
    whether the model was still loading then, the seconds on the page's clock, and since the server's start."""
    page.wait_for_timeout(after_s * 1000)
    loading = page.get_by_text("Loading the model").count() > 0
    seconds = upload(page, image, "Grad-CAM for")
    return {"early_upload_loading_message": loading, "early_upload_s": seconds,
            "early_upload_overlay_since_start_s": time.perf_counter() - app.t0}


def choose(page, label: str, option: str, exact: bool = True) -> None:
    """Pick ``option`` in the Streamlit selectbox labelled ``label`` (the click on the option is the
    action :func:`wait_overlay` times from; opening the list is not counted)."""
    page.get_by_role("combobox", name=label, exact=True).click()
    choice = page.get_by_role("option", name=option, exact=exact).first
    choice.wait_for()
    choice.click()


def map_changes(page, classes: tuple[str, str]) -> dict[str, list[tuple[str, float]]]:
    """Seconds from each control change to the new overlay, on the shown image. Every change asks for
    a map not computed before (or, for opacity, a new blend of the cached map): method twice, target
    class twice (once each way, each time under a new method), opacity three times. Each entry is
    ``(method, seconds)``, the method empty for opacity."""
    out: dict[str, list[tuple[str, float]]] = {"method": [], "target": [], "opacity": []}

    def change(kind: str, label: str, option: str, method: str, target: str) -> None:
        src = overlay(page)["src"]
        choose(page, label, option)
        out[kind].append((method, wait_overlay(page, src, f"{method} for {target}")))
        wait_idle(page, last=RESULT_END)

    shown = overlay(page)["caption"]
    first = classes[0] if f"for {classes[0]}" in shown else classes[1]
    other = classes[1] if first == classes[0] else classes[0]
    change("method", "Method", "Grad-CAM++", "Grad-CAM++", first)
    change("target", "Target class", other, "Grad-CAM++", other)
    change("method", "Method", "Score-CAM", "Score-CAM", other)
    change("target", "Target class", first, "Score-CAM", first)
    # the image's own slider: the page's reading guide (above the results) has an "Opacity for new images" one
    slider = page.locator("[data-testid='stSlider']").filter(has_text="Opacity").last.get_by_role("slider")
    for _ in range(3):
        src = overlay(page)["src"]
        slider.focus()
        slider.press("ArrowRight")
        out["opacity"].append(("", wait_overlay(page, src, "for")))
        wait_idle(page, last=RESULT_END)
    return out


def same_session_uploads(page, files: list[Path]) -> dict:
    """Warm uploads one after another in the session of the last warm upload, as a clinician works: the shown
    file removed (its x), then the next chosen -> its overlay. Each image is new to the session, as in a fresh
    one; what differs is the browser: its JavaScript already compiled and optimised, the page's styles
    already made (a fresh session's page does both again, ~0.25 s of the renderer's CPU per upload in a
    Chrome trace on the 2-core machine)."""
    times = []
    for f in files:
        remove = page.locator("[data-testid='stFileUploader'] button[aria-label^='Remove']")
        while remove.count():
            remove.first.click()
            page.wait_for_timeout(300)
        page.get_by_text("Upload an image or click a sample").wait_for(timeout=60_000)
        wait_idle(page)
        times.append(upload(page, f, "Grad-CAM for"))
        wait_idle(page, last=RESULT_END)
    return {"warm_upload_same_session_s": [round(t, 3) for t in times],
            "warm_upload_same_session_median_s": statistics.median(times)}


def brain_uploads(page, url: str, brains: list[Path], inproc: dict) -> dict:
    """Each brain MRI uploaded in a new session (nothing cached) with the brain model chosen in it."""
    times = []
    for brain in brains:
        fresh_session(page, url)
        choose(page, "Model", "brain-mri-tumour", exact=False)
        page.get_by_text("Model brain-mri-tumour").first.wait_for(timeout=300_000)
        page.get_by_text("Upload an image or click a sample").wait_for(timeout=300_000)
        wait_idle(page)
        times.append((brain.name, upload(page, brain, "Grad-CAM for")))
        wait_idle(page, last=RESULT_END)
    if not times:
        return {"brain_upload_s": None}
    return {"brain_upload_s": [round(t, 3) for _, t in times],
            "brain_upload_median_s": statistics.median(t for _, t in times),
            "brain_upload_ratio": statistics.median(t / inproc["brain"][n] for n, t in times)}


def browser(args, inproc: dict) -> dict:
    from playwright.sync_api import sync_playwright

    from app_server import AppServer  # bench/ is on sys.path when run as a script (not in the in-process run)

    res: dict = {}
    app = AppServer(args.port, "/tmp/medclf-bench-streamlit.log")
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            res["browser"] = f"Chromium {b.version}"  # the browser's share of an upload moves with its release
            page = b.new_page(viewport={"width": 1400, "height": 1450})
            page.add_init_script(f"({_CLOCK_JS})()")
            app.wait_health()
            res["server_health_s"] = time.perf_counter() - app.t0
            page.goto(app.url)
            page.locator("[data-testid='stFileUploader'] input[type='file']").wait_for(state="attached",
                                                                                      timeout=180_000)
            res["cold_file_input_s"] = time.perf_counter() - app.t0
            first = CHEST[3]
            res.update(early_upload(page, app, first))
            wait_idle(page, last=RESULT_END)
            fresh_session(page, app.url)
            res["first_upload_s"] = upload(page, first, "Grad-CAM for")
            res["first_upload_ratio"] = res["first_upload_s"] / inproc["chest"][first.name]
            wait_idle(page, last=RESULT_END)
            if args.screenshot:
                page.wait_for_timeout(1500)
                page.screenshot(path=str(REPO / "docs" / "screenshots" / "predict-chest-model.png"))

            changes = map_changes(page, ("NORMAL", "PNEUMONIA"))
            keys = {"Grad-CAM": "gradcam", "Grad-CAM++": "gradcam++", "Score-CAM": "scorecam"}
            for kind, timed in changes.items():
                res[f"change_{kind}_s"] = [f"{m + ' ' if m else ''}{t:.3f}" for m, t in timed]
                res[f"change_{kind}_median_s"] = statistics.median(t for _, t in timed)
                if kind != "opacity":
                    res[f"change_{kind}_ratio"] = [round(t / inproc["maps"][keys[m]], 2) for m, t in timed]

            warm = []
            for f in (CHEST * 2)[:args.uploads]:
                fresh_session(page, app.url)
                warm.append((f.name, upload(page, f, "Grad-CAM for")))
                wait_idle(page, last=RESULT_END)
            res["warm_upload_s"] = [round(s, 3) for _, s in warm]
            res["warm_upload_median_s"] = statistics.median(s for _, s in warm)
            res["warm_upload_max_s"] = max(s for _, s in warm)
            res["warm_upload_ratio"] = statistics.median(s / inproc["chest"][n] for n, s in warm)
            res.update(same_session_uploads(page, (CHEST * 2)[:args.uploads]))

            res.update(brain_uploads(page, app.url, [Path(f) for f in args.brain_images if Path(f).is_file()],
                                     inproc))
            b.close()
    finally:
        app.stop()
    return res


def backends() -> dict[str, str]:
    """How the server will run each bundled model: "LiteRT", or "TensorFlow (why)". A checkout whose
    ``model.tflite`` files were never made (they are not committed; ``scripts/app.sh`` makes them) serves on
    TensorFlow and its uploads are ~0.1 s slower: compare figures only between runs with the same backends."""
    from medclf_core.inference.lite import lite_mismatch

    out = {}
    for run in sorted(p for p in (REPO / "models").iterdir() if (p / "model.keras").is_file()):
        why = lite_mismatch(run)[0]
        out[run.name] = "LiteRT" if why is None else f"TensorFlow ({why})"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uploads", type=int, default=6, help="warm uploads (one fresh session each)")
    ap.add_argument("--brain-images", nargs="*", default=[str(p) for p in sorted(BRAIN_DIR.glob("*.jpg"))[:3]]
                    if BRAIN_DIR.is_dir() else [], help="brain MRIs to upload (never committed; default: 3 of %s)"
                    % BRAIN_DIR)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--screenshot", action="store_true", help="refresh docs/screenshots/predict-chest-model.png")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()
    brains = [f for f in args.brain_images if Path(f).is_file()]
    # the in-process floor first, in a subprocess so the server's cold start is not helped by this process
    code = ("import json, runpy; from pathlib import Path; a = runpy.run_path('bench/app_latency.py'); "
            f"c = a['in_process'](a['CHEST'], 'chest-xray-pneumonia'); "
            f"b = a['in_process']([Path(f) for f in {brains!r}], 'brain-mri-tumour') if {brains!r} else {{}}; "
            "m = a['in_process_maps'](a['CHEST'][3], 'chest-xray-pneumonia'); "
            "print(json.dumps({'chest': c, 'brain': b, 'maps': m}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=True)
    inproc = json.loads(out.stdout.strip().splitlines()[-1])
    res = {"load_average_before": [round(v, 2) for v in load], "backends": backends(), "in_process_s": inproc,
           **browser(args, inproc)}
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
