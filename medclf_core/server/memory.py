"""Giving memory back to the operating system when the app's sessions end.

Two causes kept a server's memory after its browser sessions had closed (``bench/session_memory.py``):

- Streamlit keeps a disconnected session for a reconnect, and a stored session that expires is
  dropped without being shut down, so its uploaded files and media stay in memory. The app marks
  each session as not resumable (``app_ui.release_on_disconnect``): a closed tab ends its session at
  once and Streamlit frees its state, uploads and images.
- glibc keeps freed memory in its per-thread malloc arenas instead of returning it (a session
  decodes and classifies on its own script thread). :func:`trim` (``malloc_trim(0)``) returns the
  free pages of every arena; :func:`start_trimmer` does it every few seconds in one daemon thread.
  ``scripts/app.sh`` also caps the arenas (``MALLOC_ARENA_MAX``).

What a session keeps per image is bounded too: its heat maps at display size
(:func:`medclf_core.explain.render.compact_map`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading

_libc = None
_trimmer: threading.Thread | None = None
_lock = threading.Lock()


def _malloc_trim():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            _libc = False
    return getattr(_libc, "malloc_trim", None) if _libc else None


def trim() -> bool:
    """Return the free memory of every malloc arena to the system; False where there is no glibc.

    >>> isinstance(trim(), bool)
    True
    """
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(ctypes.c_size_t(0))
    return True


def start_trimmer(period_s: float = 10.0) -> bool:
    """Start (once per process) a daemon thread that calls :func:`trim` every ``period_s`` seconds.

    Returns whether a trimmer runs (False without glibc). A trim of a process with a few GB of heap
    takes milliseconds.
    """
    global _trimmer
    if _malloc_trim() is None:
        return False
    with _lock:
        if _trimmer is None or not _trimmer.is_alive():
            stop = threading.Event()

            def loop() -> None:
                while not stop.wait(period_s):
                    trim()

            _trimmer = threading.Thread(target=loop, name="medclf-malloc-trim", daemon=True)
            _trimmer.start()
    return True


def freeze_long_lived() -> int:
    """Collect garbage once, then move every object alive now into the collector's permanent generation
    (:func:`gc.freeze`), so that later collections skip them. Returns how many objects were frozen.

    Streamlit runs a full collection after every script run (``runner.postScriptGC``). With TensorFlow,
    Keras and a model loaded, that walks about 500 000 objects, 0.2 s of one core after each run, and a
    click that comes in the meantime waits for it. What is alive once a model is loaded (modules, the
    models in ``st.cache_resource``) stays for the life of the process and needs no collecting; the
    objects of each session come later and are still collected. The app calls this after each model
    load. Unfreezing first lets what became garbage since the last call (a model dropped from the cache)
    be collected now; until then a reference cycle among frozen objects is kept, nothing more.

    >>> import gc
    >>> frozen = freeze_long_lived(); 0 < gc.get_freeze_count() <= frozen  # other threads may free frozen objects
    True
    >>> gc.unfreeze()
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process in MB (Linux ``/proc``), for benchmarks and tests.

    >>> rss_mb() > 0
    True
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS for process {pid}")
