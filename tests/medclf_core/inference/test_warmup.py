"""The model ready after its first map, the rest of the warm-up between real images (issue 22, item 7)."""

from __future__ import annotations

import threading
import time

from medclf_core.inference.predictor import Predictor
from medclf_core.io.images import load_image
from medclf_core.inference.warmup import ModelLock, warm_in_steps, warm_up_plan, warm_up_steps


def test_the_warm_up_steps_come_in_the_order_a_first_image_needs_them(trained_run):
    p = Predictor.from_run(trained_run)
    assert list(warm_up_steps(p)) == warm_up_plan(p) == ["predict", "gradcam", "faithfulness", "gradcam++", "scorecam"]


class _NoGradCam:
    """A predictor stand-in without a Grad-CAM map: what each warm-up step called."""

    image_size, channels, lite = 8, 1, None

    def __init__(self):
        self.calls = []

    def predict(self, images):
        self.calls.append("predict")

    def explain(self, images, method, index):
        if method == "gradcam":
            raise ValueError("no Grad-CAM for this model")
        self.calls.append(method)
        return [method]

    def check_faithfulness(self, maps):
        self.calls.append(("faithfulness", maps))


def test_a_first_method_without_a_map_skips_its_faithfulness_step_and_warms_the_rest():
    p = _NoGradCam()
    assert list(warm_up_steps(p)) == ["predict", "gradcam++", "scorecam"]
    assert p.calls == ["predict", "gradcam++", "scorecam"]  # no faithfulness check on another method's map


def test_ready_after_the_first_map_and_the_rest_waits_for_the_models_lock(trained_run, sample_images, traces):
    fresh = Predictor.from_run(trained_run)
    lock, done = ModelLock(), []
    img = load_image(sample_images[0]).pixels
    with lock:  # a real image holds the model: the background steps must wait for it
        rest = warm_in_steps(fresh, lock, ready_after="gradcam", when_done=lambda: done.append(1))
        ready = len(traces)
        assert ready >= 2  # the forward pass and the Grad-CAM map were traced before it returned
        fresh.predict([img])
        fresh.explain([img], "gradcam")
        assert len(traces) == ready, traces[ready:]  # the first image traces nothing
        rest.join(timeout=1.0)
        assert rest.is_alive() and not done  # blocked on the lock the image holds
    rest.join(timeout=300)
    assert not rest.is_alive() and done == [1]
    warmed = len(traces)
    assert warmed > ready
    for method in ("gradcam++", "scorecam"):
        fresh.explain([img], method, faithfulness=True)
    assert len(traces) == warmed, traces[warmed:]  # the background steps traced every other graph


def test_a_model_without_that_map_is_warmed_entirely_before_it_is_ready(trained_run):
    done = []
    rest = warm_in_steps(Predictor.from_run(trained_run), ModelLock(), ready_after="no-such-method",
                         when_done=lambda: done.append(1))
    assert rest is None and done == [1]


def test_a_real_call_waiting_for_the_model_goes_before_the_next_background_step():
    """A plain Lock let the background loop take the model again at once, so an image waited for every step."""
    lock, events, started = ModelLock(), [], threading.Event()

    def step(k):
        events.append(f"step {k}")
        started.set()
        time.sleep(0.3)

    def background():
        for k in range(3):
            lock.run_when_idle(lambda k=k: step(k), quiet_s=0.0)

    worker = threading.Thread(target=background)
    worker.start()
    started.wait(5)
    with lock:  # blocks while step 0 runs
        events.append("image")
    worker.join(10)
    assert events == ["step 0", "image", "step 1", "step 2"]


def test_the_background_waits_until_the_model_has_been_quiet():
    lock = ModelLock()
    with lock:
        pass
    t0 = time.monotonic()
    ran = lock.run_when_idle(lambda: time.monotonic(), quiet_s=0.4)
    assert ran - t0 >= 0.35  # not at once after the image's call


def test_a_page_that_has_just_fetched_the_model_keeps_the_background_waiting():
    """The page fetches the model (app_ui.load_predictor touches its lock) a moment before it calls it."""
    lock = ModelLock()
    time.sleep(0.5)  # quiet for longer than quiet_s below ...
    lock.touch()  # ... but a page has just fetched the model
    t0 = time.monotonic()
    ran = lock.run_when_idle(lambda: time.monotonic(), quiet_s=0.4)
    assert ran - t0 >= 0.35


def test_the_graphs_are_shared_so_a_method_switch_traces_little(trained_run, sample_images, traces):
    """Grad-CAM and Grad-CAM++ come from one traced function; Score-CAM's masked passes reuse the faithfulness
    check's traced forward pass (explain.views.view_forward): only Score-CAM's activations model is new."""
    fresh = Predictor.from_run(trained_run)
    img = load_image(sample_images[0]).pixels
    (shown,) = fresh.explain([img], "gradcam")
    fresh.check_faithfulness([shown])
    before = len(traces)
    fresh.explain([img], "gradcam++")
    assert len(traces) == before, traces[before:]
    fresh.explain([img], "scorecam")
    assert len(traces) <= before + 1, traces[before:]
