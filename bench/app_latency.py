"""App cold start and upload-to-overlay time, measured in a real browser (Debian Chromium + Playwright).

Starts ``streamlit run app.py`` on the bundled models, opens the Predict page, uploads a sample chest
X-ray and waits for the Grad-CAM overlay; saves docs/screenshots/predict-chest-model.png.

Usage::

    .venv/bin/python bench/app_latency.py
"""
import os, subprocess, sys, time, urllib.request, signal
from playwright.sync_api import sync_playwright
port = 8765
env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MEDCLF_JOBS_DIR": "/tmp/medclf-bench-jobs"}
env.pop("MEDCLF_MODELS_DIR", None)
t0 = time.time()
proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.address", "127.0.0.1",
                         "--server.port", str(port), "--server.fileWatcherType", "none"], env=env, stdout=open("/tmp/medclf-bench-streamlit.log", "wb"),
                        stderr=subprocess.STDOUT, start_new_session=True)
try:
    for _ in range(180):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read().strip() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = b.new_page(viewport={"width": 1400, "height": 1450})
        page.goto(f"http://127.0.0.1:{port}/")
        page.get_by_text("Upload one or more images").wait_for(timeout=120000)
        print("cold start to first page", round(time.time() - t0, 1), "s")
        t1 = time.time()
        page.locator("input[type=file]").set_input_files("samples/images/chest_xray/pneumonia_person1029_bacteria_2961.jpeg")
        page.get_by_text("Decision at the model").wait_for(timeout=120000)
        page.get_by_text("red = regions").wait_for(timeout=120000)
        print("upload to overlay", round(time.time() - t1, 1), "s")
        time.sleep(2)
        page.screenshot(path="docs/screenshots/predict-chest-model.png")
        b.close()
finally:
    os.killpg(proc.pid, signal.SIGTERM)
