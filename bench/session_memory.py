"""Server memory under concurrent browser sessions, and whether it comes back when they end.

Starts ``streamlit run app.py`` (the bundled chest model), opens ``--sessions`` browser sessions at
once (Debian Chromium + Playwright, one browser context each), each uploading ``--images`` chest
X-rays upscaled to ``--size`` px on the Predict page (different pixels per session, so no cache is
shared between them), waits until each shows its results table and the heat map of its first
image, closes every session, and samples the server's resident memory (``VmRSS`` from
``/proc/<pid>/status``) every 0.25 s throughout.

Reported: the empty server (``baseline``), the server with the model loaded after one warm-up
session (``warm``), the ``peak`` while the sessions ran, and the memory ``--after`` seconds (default
10, 60, 150) after the sessions closed, with the seconds each session took. ``--rounds N`` opens
and closes the same sessions N times, to tell memory that stays once (TensorFlow's kernels and
traces for a new batch size) from memory that grows with every session. Streamlit keeps a
disconnected session for a reconnect and never shuts down one that expires; the app marks its
sessions as not resumable instead (``app_ui.release_on_disconnect``, ``medclf_core.server.memory``).

Images are generated from the bundled chest X-rays (CC BY 4.0); no brain MRI is used.

Usage::

    .venv/bin/python bench/session_memory.py [--sessions 10] [--images 4] [--size 2048] [--rounds 1]
        [--after 10 60 150] [--env MALLOC_ARENA_MAX=2 ...] [--json]

``--env MALLOC_ARENA_MAX=2`` gives the server the environment ``scripts/app.sh`` gives it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path

from app_server import AppServer  # bench/ is on sys.path when run as a script

from medclf_core.server.memory import rss_mb

REPO = Path(__file__).resolve().parent.parent
CHEST = sorted((REPO / "samples" / "images" / "chest_xray").glob("*.jpeg"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def make_images(folder: Path, sessions: int, per_session: int, size: int) -> list[list[Path]]:
    """``sessions`` lists of ``per_session`` JPEGs of ``size`` px: chest samples upscaled, shifted per session."""
    import numpy as np
    from PIL import Image

    out = []
    for s in range(sessions):
        files = []
        for i in range(per_session):
            src = CHEST[(s * per_session + i) % len(CHEST)]
            img = Image.open(src).convert("L").resize((size, size), Image.Resampling.BICUBIC)
            a = np.asarray(img, dtype=np.int16) + (s * per_session + i) % 7 - 3  # distinct bytes per file
            path = folder / f"s{s:02d}_{i}_{src.stem[:24]}.jpeg"
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path, quality=92)
            files.append(path)
        out.append(files)
    return out


class Sampler(threading.Thread):
    """RSS of one process every ``period`` seconds: ``samples`` = [(t, MB)]."""

    def __init__(self, pid: int, period: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.period, self.samples, self.t0 = pid, period, [], time.perf_counter()
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter() - self.t0, rss_mb(self.pid)))
            except OSError:
                return
            self._stop.wait(self.period)

    def peak(self, since: float, until: float | None = None) -> float:
        vals = [m for t, m in self.samples if t >= since and (until is None or t <= until)]
        return max(vals) if vals else float("nan")

    def now(self) -> float:
        return rss_mb(self.pid)

    def stop(self) -> None:
        self._stop.set()


async def open_predict(context, url: str, timeout_ms: int):
    page = await context.new_page()
    await page.goto(url, timeout=timeout_ms)
    await page.locator("[data-testid='stFileUploader'] input[type='file']").wait_for(state="attached",
                                                                                    timeout=timeout_ms)
    await page.get_by_text("Upload an image or click a sample").wait_for(timeout=timeout_ms)
    return page


async def one_session(browser, url: str, files: list[Path], timeout_ms: int):
    """Upload ``files`` in a fresh context; seconds until the table and the first heat map are shown."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1400})
    page = await open_predict(context, url, timeout_ms)
    t = time.perf_counter()
    await page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files([str(f) for f in files])
    want = f"Results for {len(files)} files" if len(files) > 1 else "red = regions"
    await page.get_by_text(want).first.wait_for(timeout=timeout_ms)
    await page.get_by_text("red = regions").first.wait_for(timeout=timeout_ms)
    await page.wait_for_timeout(300)
    await page.wait_for_selector("[data-testid='stStatusWidget']", state="detached", timeout=timeout_ms)
    return time.perf_counter() - t, context


async def drive(url: str, groups: list[list[Path]], timeout_ms: int, sampler: Sampler, marks: dict,
                rounds: int = 1) -> list[float]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        warm = await browser.new_context()  # loads (and warms up) the model; nothing uploaded
        await open_predict(warm, url, timeout_ms)
        await warm.close()
        await asyncio.sleep(3)
        marks["warm"] = sampler.now()
        marks["t_start"] = time.perf_counter() - sampler.t0
        seconds, marks["rounds"] = [], []
        for r in range(rounds):
            done = await asyncio.gather(*(one_session(browser, url, g, timeout_ms) for g in groups))
            marks["before_close"] = sampler.now()
            for _, context in done:
                await context.close()
            marks["t_closed"] = time.perf_counter() - sampler.t0
            seconds += [s for s, _ in done]
            if r < rounds - 1:  # the same sessions again: does what stays grow with every round?
                await asyncio.sleep(10)
                marks["rounds"].append(round(sampler.now(), 1))
        await browser.close()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--images", type=int, default=4, help="images per session")
    ap.add_argument("--size", type=int, default=2048, help="image side in px")
    ap.add_argument("--after", type=float, nargs="+", default=[10, 60, 150],
                    help="seconds after the sessions closed at which memory is read")
    ap.add_argument("--rounds", type=int, default=1, help="open and close the sessions this many times")
    ap.add_argument("--env", nargs="*", default=[], help="extra server environment, NAME=VALUE")
    ap.add_argument("--port", type=int, default=8790)
    ap.add_argument("--timeout", type=float, default=600, help="seconds a session may take")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    extra = dict(e.split("=", 1) for e in args.env)
    with tempfile.TemporaryDirectory(prefix="medclf-session-memory-") as tmp:
        groups = make_images(Path(tmp), args.sessions, args.images, args.size)
        server = AppServer(args.port, "/tmp/medclf-bench-session-memory.log", extra)
        try:
            server.wait_health()
            time.sleep(1)
            sampler = Sampler(server.proc.pid)
            sampler.start()
            baseline = sampler.now()
            marks: dict = {}
            seconds = asyncio.run(drive(server.url, groups, int(args.timeout * 1000), sampler, marks, args.rounds))
            after = {}
            for a in sorted(args.after):
                wait = marks["t_closed"] + a - (time.perf_counter() - sampler.t0)
                if wait > 0:
                    time.sleep(wait)
                after[f"{a:g}s"] = round(sampler.now(), 1)
            sampler.stop()
        finally:
            server.stop()
    result = {
        "sessions": args.sessions, "images_per_session": args.images, "size_px": args.size, "env": extra,
        "rss_mb": {"baseline": round(baseline, 1), "warm": round(marks["warm"], 1),
                   "peak": round(sampler.peak(marks["t_start"], marks["t_closed"]), 1),
                   "before_close": round(marks["before_close"], 1), "after_close": after,
                   "10s_after_each_earlier_round": marks["rounds"]},
        "session_seconds": {"min": round(min(seconds), 1), "median": round(sorted(seconds)[len(seconds) // 2], 1),
                            "max": round(max(seconds), 1)},
    }
    if args.json:
        print(json.dumps(result))
        return
    r = result["rss_mb"]
    print(f"{args.sessions} sessions x {args.images} images of {args.size} px"
          + (f" ({' '.join(args.env)})" if args.env else "") + ":")
    print(f"  server RSS: baseline {r['baseline']:.0f} MB, model loaded {r['warm']:.0f} MB, peak {r['peak']:.0f} MB, "
          f"when the sessions closed {r['before_close']:.0f} MB")
    if r["10s_after_each_earlier_round"]:
        print("  10 s after each earlier round closed: " + ", ".join(f"{v:.0f} MB" for v in
                                                                    r["10s_after_each_earlier_round"]))
    print("  after the (last) sessions closed: " + ", ".join(f"{k} {v:.0f} MB" for k, v in r["after_close"].items()))
    s = result["session_seconds"]
    print(f"  seconds per session (upload -> table and heat map): min {s['min']}, median {s['median']}, max {s['max']}")


if __name__ == "__main__":
    main()
