"""Helpers shared by the tests (importable: pytest.ini puts tests/ on the path)."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
CHEST_SAMPLE = SAMPLES / "datasets" / "chest_xray"
TINY = 32  # image side used by training tests: fast on a 2-core CPU
# EfficientNet-Lite1 and Lite2 are Lite0's code with a larger table (more blocks, wider): the per-architecture
# tests that train or merge whole models run Lite0 for the family, and tests/medclf_core/models/
# test_efficientnet_lite.py and test_architectures.py build, convert, train a step, save and reload each one.
LARGER_LITE = ("efficientnet_lite1", "efficientnet_lite2")
# The house's size rules, for medclf_core (tests/medclf_core/test_layout.py) and the app side (tests/pages/
# test_app_layout.py).
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def oversized(source: str) -> tuple[int, list[str]]:
    """``(lines, functions over MAX_FUNCTION_LINES as "name (n lines)")`` of a module's source."""
    import ast

    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    return len(source.splitlines()), long


def make_pattern_dataset(root: Path, n_per_class: int = 12, size: int = 40, classes=("circle", "square"),
                         seed: int = 0) -> Path:
    """A learnable 2-class dataset: a bright circle or square on noise, at random places."""
    import cv2

    rng = np.random.default_rng(seed)
    for ci, cls in enumerate(classes):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, (size, size), dtype=np.uint8)
            cx, cy = rng.integers(10, size - 10, 2)
            if ci == 0:
                cv2.circle(img, (int(cx), int(cy)), 7, 255, -1)
            else:
                cv2.rectangle(img, (int(cx) - 6, int(cy) - 6), (int(cx) + 6, int(cy) + 6), 255, -1)
            Image.fromarray(img).save(d / f"{cls}_{i:03d}.png")
    return root


def as_older_run(src: Path, dst: Path, name: str | None = None) -> Path:
    """A copy of the run ``src`` as a run written before the trust layer: no ``ood.npz``, no ``calibration``
    or ``ood`` in the card, the threshold and the stored test predictions on the model's raw probabilities."""
    import json
    import shutil

    from medclf_core.registry.card import positive_class_index
    from medclf_core.trust.calibration import apply_temperature, map_threshold

    shutil.copytree(src, dst)
    (dst / "ood.npz").unlink(missing_ok=True)
    card = json.loads((dst / "card.json").read_text())
    cal = card.pop("calibration", None) or {}
    card.pop("ood", None)
    t = cal.get("temperature")
    if name:
        card["name"] = name
    if t:
        card["threshold"] = map_threshold(card.get("threshold"), 1.0 / t)
        if cal.get("stored_predictions") == "calibrated":
            names = card["class_names"]
            pos = positive_class_index(names, card.get("positive_class"))
            ev = json.loads((dst / "evaluation.json").read_text())
            for p in ev.get("predictions") or []:
                p["probabilities"] = apply_temperature(np.array([p["probabilities"]]), 1.0 / t,
                                                       positive=pos)[0].tolist()
            (dst / "evaluation.json").write_text(json.dumps(ev))
    (dst / "card.json").write_text(json.dumps(card))
    return dst


def rendered(markdown: str) -> str:
    """Text as a reader sees it: Markdown backslash escapes (``app_ui.md_escape``) removed."""
    import re

    return re.sub(r"\\(.)", r"\1", markdown)


def wait_for_job(job_id: str, root, timeout: float = 600, poll: float = 0.5) -> dict:
    """``jobs.job_progress`` once the job reached a final state (or at the timeout)."""
    import time

    from medclf_core.training import jobs

    deadline = time.time() + timeout
    while True:
        p = jobs.job_progress(job_id, root)
        if p["state"] in jobs.FINAL_STATES or time.time() > deadline:
            return p
        time.sleep(poll)


def server_folder(page, name: str, path, *, split: str | None = None):
    """The Train or Evaluate page (``name``, an AppTest maker such as the ``page`` fixture) with "a folder on
    this server" chosen and ``path`` typed in; on Evaluate, ``split`` chosen and the button clicked.
    Returns the AppTest after that run."""
    prefix = {"train": "train", "evaluate": "eval"}[name]
    at = page(name)
    at.run()
    at.radio(key=f"{prefix}_source").set_value("folder")
    at.run()
    if split is not None:
        at.selectbox(key="eval_split").set_value(split)
    at.text_input(key=f"{prefix}_folder").set_value(str(path))
    if name == "evaluate":
        at.button(key="eval_go").click()
    at.run()
    return at


def drawn_film(size: int = 256, seed: int = 0) -> np.ndarray:
    """A dark film with a noisy elliptical body and two darker lungs inside it (for the mark and body tests)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 20, (size, size)).astype(np.uint8)
    c = size // 2
    cv2.ellipse(img, (c, c + size // 10), (int(size * 0.34), int(size * 0.45)), 0, 0, 360, 130, -1)
    for dx in (-1, 1):
        cv2.ellipse(img, (c + dx * size // 7, c), (size // 12, size // 5), 0, 0, 360, 70, -1)
    noise = rng.integers(-8, 9, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


COLOUR_SCALE_CAPTION = "Heat-map colours"  # the Predict page's legend (its reading guide), always drawn


def result_images(at) -> list:
    """The Predict page's images of results (originals, overlays, gallery), not its colour-scale legend."""
    return [im for im in at.image if not any(COLOUR_SCALE_CAPTION in str(c) for c in im.captions)]


def page_texts(data: bytes) -> list[list[str]]:
    """The text drawn on each page of a PDF written by fpdf2 (built-in font), page by page: the (...) Tj strings
    of its content streams (fpdf2 writes one per page, in page order; an image's stream holds no text)."""
    streams = []
    # each stream's bytes by its dictionary's /Length: a compressed stream may itself end in a \r byte, which a
    # "stream ... \r?\nendstream" pattern would eat (1 PDF in ~256: the text then reads as empty)
    for m in re.finditer(rb"/Length (\d+)[^>]*>>\s*stream\r?\n", data):
        body = data[m.end():m.end() + int(m.group(1))]
        try:
            streams.append(zlib.decompress(body))
        except zlib.error:
            streams.append(body)  # an uncompressed stream, or an image (DCT)
    pages = []
    for s in streams:
        out = []
        for lit in re.findall(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", s, re.S):
            lit = re.sub(rb"\\([0-7]{1,3})", lambda g: bytes([int(g.group(1), 8)]), lit)
            out.append(re.sub(rb"\\(.)", rb"\1", lit).decode("latin-1"))
        if out:
            pages.append(out)
    return pages


def pdf_text(data: bytes) -> str:
    """All the text drawn in a PDF written by fpdf2, one string a line."""
    return "\n".join(line for page in page_texts(data) for line in page)


def page_count(data: bytes) -> int:
    """The number of page objects in a PDF (``/Type /Page``, not the ``/Type /Pages`` tree)."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))
