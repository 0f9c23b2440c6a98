"""What a large film costs the Predict page at full size against display size, side by side in one process.

A heat map's overlay is blended on the image and Streamlit encodes every ``st.image`` as PNG (resizing
anything wider than 1460 px after encoding it once at full size). For a 2048 px film that was done at full
size; the page now sends :func:`medclf_core.inference.results.for_display` copies and
``HeatMap.overlay(opacity, max_side)``. This times, per film size, the overlay blend plus Streamlit's own
image marshalling (``marshall_images``, what ``st.image`` runs on the server) of the original and the
overlay, both ways, on the bundled chest sample resized up.

Usage::

    .venv/bin/python bench/display_size.py --sides 1024 2048 3000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from medclf_core.inference.results import DISPLAY_SIDE, HeatMap, for_display  # noqa: E402

SAMPLE = sorted((REPO / "samples" / "images" / "chest_xray").glob("pneumonia*.jpeg"))[0]


def marshal(image: np.ndarray) -> int:
    """Streamlit's server-side work for ``st.image(image, width="stretch")``; bytes sent."""
    from streamlit.elements.lib import image_utils
    from streamlit.elements.lib.layout_utils import LayoutConfig
    from streamlit.proto.Image_pb2 import ImageList
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    sizes = []
    manager = MediaFileManager(MemoryMediaFileStorage("/media"))
    real_add = manager.add
    manager.add = lambda data, *a, **k: (sizes.append(len(data)), real_add(data, *a, **k))[1]
    with _runtime(manager):
        image_utils.marshall_images("bench", image, None, LayoutConfig(width="stretch"), ImageList(), False)
    return sum(sizes)


class _runtime:
    """A stand-in for the Streamlit runtime's media manager (as AppTest does)."""

    def __init__(self, manager):
        from unittest.mock import MagicMock

        from streamlit.runtime import Runtime

        self.mock = MagicMock(spec=Runtime)
        self.mock.media_file_mgr = manager

    def __enter__(self):
        from streamlit.runtime import Runtime

        self.saved, Runtime._instance = Runtime._instance, self.mock

    def __exit__(self, *exc):
        from streamlit.runtime import Runtime

        Runtime._instance = self.saved


def timed(work, repeats: int) -> tuple[float, int]:
    times, out = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        out = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sides", type=int, nargs="+", default=[1024, 2048, 3000])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    base = Image.open(SAMPLE).convert("L")
    print(f"{SAMPLE.name} resized; display side {DISPLAY_SIDE} px; median of {a.repeats} repeats; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| film (px) | full size: blend + send (ms) | bytes sent | display size (ms) | bytes sent | ratio |")
    print("|---|---|---|---|---|---|")
    for side in a.sides:
        pixels = np.asarray(base.resize((side * 3 // 4, side), Image.BICUBIC))
        yy, xx = np.mgrid[0:512, 0:384]
        blob = np.exp(-(((yy - 200) / 90.0) ** 2 + ((xx - 250) / 70.0) ** 2)).astype(np.float32)  # a smooth map
        heat = HeatMap(heatmap=blob, image=pixels,
                       method="gradcam", class_index=1, class_name="PNEUMONIA")
        full_ms, full_b = timed(lambda: marshal(pixels) + marshal(heat.overlay(0.45)), a.repeats)
        shown_ms, shown_b = timed(lambda: marshal(for_display(pixels)) + marshal(heat.overlay(0.45, DISPLAY_SIDE)),
                                  a.repeats)
        print(f"| {side * 3 // 4} x {side} | {full_ms:.0f} | {full_b / 1e6:.2f} MB | {shown_ms:.0f} | "
              f"{shown_b / 1e6:.2f} MB | {full_ms / shown_ms:.1f}x |")


if __name__ == "__main__":
    main()
