"""memory: freed memory that glibc keeps is returned by trim(); one trimmer thread per process."""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

import pytest

from medclf_core.server import memory

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
glibc = hasattr(libc, "malloc_trim")


@pytest.mark.skipif(not glibc, reason="malloc_trim is glibc's; other C libraries return memory differently")
def test_freed_heap_memory_stays_until_trimmed():
    """The cause seen in bench/session_memory.py: 100 KB blocks (below glibc's mmap threshold) freed in
    the middle of the heap stay resident; trim() gives them back."""
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    block, n = 100_000, 1500  # 150 MB
    memory.trim()
    blocks = [libc.malloc(block) for _ in range(n)]
    for b in blocks:
        ctypes.memset(b, 1, block)  # resident
    for b in blocks[:-1]:  # the last block pins the top of the heap: glibc cannot shrink it by itself
        libc.free(b)
    before = memory.rss_mb()
    assert memory.trim() is True
    after = memory.rss_mb()
    libc.free(blocks[-1])
    assert before - after > 100, (before, after)


def test_one_trimmer_per_process():
    assert memory.start_trimmer(period_s=3600) is glibc
    assert memory.start_trimmer(period_s=3600) is glibc
    names = [t.name for t in threading.enumerate() if t.name == "medclf-malloc-trim"]
    assert len(names) == (1 if glibc else 0)
    assert all(t.daemon for t in threading.enumerate() if t.name == "medclf-malloc-trim")


def test_rss_of_a_missing_process_is_an_error():
    with pytest.raises(OSError):
        memory.rss_mb(2**31 - 1)


def test_freeze_long_lived_skips_what_is_alive_and_still_collects_what_comes_later():
    """What is alive at a model load is skipped by later collections (Streamlit collects after every run);
    a cycle made afterwards is still collected, and a frozen one dropped later is collected at the next call."""
    import gc
    import weakref

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return a

    try:
        kept = cycle()
        frozen = memory.freeze_long_lived()
        # Only a freeze adds to the permanent generation; another thread (pytest-xdist's channel, Streamlit's
        # server) may free frozen objects in the meantime, so the count read now is at most the one returned.
        assert 0 < gc.get_freeze_count() <= frozen

        later = weakref.ref(cycle())  # made after the freeze: collected as usual
        gc.collect()
        assert later() is None

        dropped = weakref.ref(kept)
        del kept
        gc.collect()
        assert dropped() is not None  # frozen: kept until the next freeze_long_lived
        memory.freeze_long_lived()
        assert dropped() is None
    finally:
        gc.unfreeze()
