"""A model made ready for its first image, then warmed further in the background, one step at a time.

Tracing a model's graphs costs seconds on a CPU (forward pass ~1 s, each heat-map method ~1.7 s, the
faithfulness check ~0.7 s: ``bench/app_latency.py``). The server warms its default model as it starts
(app.py), and an image uploaded during that warm-up waits for it. :func:`warm_in_steps` returns as soon as
the prediction and the first heat-map method are traced (what the Predict page shows first), and a daemon
thread does the rest (the faithfulness check, the other methods), one step at a time and only while no real
image uses the model (:class:`ModelLock`): an image uploaded meanwhile waits at most for the one step under way.
A model on LiteRT traces nothing and has no rest (:func:`warm_up_steps`).

    >>> lock = ModelLock()                                                  # doctest: +SKIP
    >>> rest = warm_in_steps(predictor, lock)   # predict + Grad-CAM traced # doctest: +SKIP
    >>> rest.join()                             # everything traced         # doctest: +SKIP

:func:`warm_up_steps` is the warm-up itself (``Predictor.warm_up`` runs it to the end).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: Seconds without a real call before the background warm-up takes the model for its next step.
QUIET_S = 2.0

#: The heat-map methods a warm-up traces, the page's default first.
WARM_METHODS = ("gradcam", "gradcam++", "scorecam")


def warm_up_steps(predictor, methods: Sequence[str] = WARM_METHODS) -> Iterator[str]:
    """The warm-up one traced graph at a time, on a dummy image, what a first image needs first: ``"predict"``,
    then ``methods[0]`` (its map), ``"faithfulness"`` (its score, which a page shows after the map), then the
    other methods. Each step is done when its name is yielded. A method this model has no map for is skipped
    (the page says so when that map is asked for).

    A model on LiteRT (``predictor.lite``) stops after ``methods[0]``: it traces nothing, so the later steps
    would only spend CPU (the faithfulness check ~0.4 s, Score-CAM ~0.2 s, the same every time), and in the
    background they ran just when an image uploaded soon after the page opened needed the model and the CPU
    (docs/BENCHMARKS.md, session 15: such an upload 0.89 s -> 0.46 s, median of 7 server starts with the file
    cache dropped)."""
    side = predictor.image_size
    ramp = np.add.outer(np.arange(side), np.arange(side)) * (255.0 / max(2 * side - 2, 1))
    dummy = np.repeat(ramp.astype(np.uint8)[..., None], predictor.channels, axis=2)
    first_maps = None
    for step in warm_up_plan(predictor, methods):
        if step == "predict":
            predictor.predict([dummy])
        elif step == "faithfulness":
            if first_maps is None:  # the first method had no map to score
                continue
            predictor.check_faithfulness(first_maps)
        else:
            try:
                maps = predictor.explain([dummy], step, 0)
            except Exception:  # noqa: BLE001 - no heat map of this kind for this model
                continue
            if step == methods[0]:
                first_maps = maps
        yield step


def warm_up_plan(predictor, methods: Sequence[str] = WARM_METHODS) -> list[str]:
    """The steps :func:`warm_up_steps` runs, in order; it yields each name when that step is done (a method this
    model has no map for is skipped, and with it a faithfulness step it would have led to).

    >>> class OnLiteRT: lite = object()
    >>> warm_up_plan(OnLiteRT())
    ['predict', 'gradcam']
    """
    if _on_litert(predictor):
        return ["predict", *methods[:1]]
    return ["predict", *methods[:1], "faithfulness", *methods[1:]]


def _on_litert(predictor) -> bool:
    return getattr(predictor, "lite", None) is not None


class ModelLock:
    """The lock that serialises a loaded model's calls (``with lock:``), which also knows whether a real call
    holds it, waits for it, or used it lately.

    A plain :class:`threading.Lock` is not fair: the background warm-up, releasing it and taking it again
    at once, kept an image uploaded meanwhile waiting for every remaining step (13 s in
    ``bench/app_latency.py``). :meth:`run_when_idle` takes the model only when no call holds it or waits for
    it and none has used it (or fetched it: :meth:`touch`) for ``quiet_s``, so a page's calls for one image
    (prediction, then its map) are not split by a step.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._state = threading.Lock()
        self._waiting = 0
        self.last_used = time.monotonic()

    def __enter__(self) -> ModelLock:
        with self._state:
            self._waiting += 1
        self._lock.acquire()
        with self._state:
            self._waiting -= 1
        return self

    def __exit__(self, *exc) -> None:
        self.last_used = time.monotonic()
        self._lock.release()

    def touch(self) -> None:
        """Say that a real call is about to come (a page run that has just fetched the model): the background
        warm-up waits ``quiet_s`` from now, so it does not take the model between the page's start and its call."""
        self.last_used = time.monotonic()

    def run_when_idle(self, work: Callable[[], object], quiet_s: float = QUIET_S, poll_s: float = 0.05):
        """``work()`` under the lock, once the model has had no call for ``quiet_s`` and none waits; its result."""
        while True:
            if self._waiting == 0 and time.monotonic() - self.last_used >= quiet_s and self._lock.acquire(False):
                try:
                    if self._waiting == 0:
                        return work()
                finally:
                    self._lock.release()
            time.sleep(poll_s)


def warm_in_steps(predictor, lock: ModelLock, ready_after: str = "gradcam",
                  when_done: Callable[[], None] | None = None) -> threading.Thread | None:
    """Run :func:`warm_up_steps` up to and including the step ``ready_after`` here, the rest in a
    daemon thread that runs each step when the model is idle (:meth:`ModelLock.run_when_idle`); ``when_done``
    runs after the last step.

    Returns that thread, or None when nothing was left (``ready_after`` is the plan's last step, as on
    LiteRT, or the model has no ``ready_after`` map, so every step ran here). An error in a background step
    ends the warm-up with a log line: the page traces that graph when it is first asked for, as it would without
    a warm-up.
    """
    steps = warm_up_steps(predictor)
    nothing_after = warm_up_plan(predictor)[-1] == ready_after  # a LiteRT model: no thread that finds no work
    for step in steps:
        if step == ready_after and not nothing_after:
            lock.touch()  # ready: the background steps wait until the model has been quiet since
            break
    else:
        if when_done is not None:
            when_done()
        return None
    thread = threading.Thread(target=_finish, args=(steps, lock, when_done), name="medclf-warm-up-rest",
                              daemon=True)
    thread.start()
    return thread


def _finish(steps: Iterator[str], lock: ModelLock, when_done: Callable[[], None] | None) -> None:
    try:
        while lock.run_when_idle(lambda: next(steps, None)) is not None:
            pass
    except Exception:  # noqa: BLE001 - a warm-up step failing only means that graph is traced on first use
        log.warning("The model's background warm-up stopped early", exc_info=True)
    if when_done is not None:
        when_done()
