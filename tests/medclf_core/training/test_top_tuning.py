"""medclf_core.training.top_tuning: the transfer recipe's fine-tuning of the top blocks on cached activations.

Every architecture that declares ``cached_fine_tune_from`` is tested (from the registry, so a new one joins by
declaring it). Runs are tiny (32 px, the 80-image bundled sample, 1 cached augmented view, 2 epochs).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from medclf_core.errors import TrainingCancelled
from medclf_core.models.architectures import ARCHITECTURES, build_model
from medclf_core.training import TrainConfig, train
from medclf_core.training.config import CACHED_FINE_TUNE_LR
from medclf_core.training.events import EventLog, read_events
from medclf_core.training import top_tuning
from medclf_core.registry.store import list_runs

CACHED = [name for name, spec in ARCHITECTURES.items() if spec.cached_fine_tune_from]
SIDE = 32


def test_at_least_one_architecture_fine_tunes_on_cached_activations():
    """efficientnet_lite0 declares it (the bench measured it there); the old image path stays for the others."""
    assert "efficientnet_lite0" in CACHED
    assert ARCHITECTURES["resnet50"].cached_fine_tune_from is None


@pytest.mark.parametrize("arch", CACHED)
def test_the_rebuilt_top_reproduces_the_whole_model(arch):
    """The trunk up to the cut, then the top on its output, is the whole model (the bench's check): features and
    probabilities, so what trains on the cache is what the saved model computes."""
    from medclf_core.training.transfer import feature_extractor

    start = ARCHITECTURES[arch].cached_fine_tune_from
    model = build_model(arch, 3, 64, 1)
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 1)).astype(np.float32)
    acts = top_tuning.run_in_batches(top_tuning.trunk_to(model, start), x)
    np.testing.assert_allclose(top_tuning.run_in_batches(top_tuning.top_of(model, start), acts),
                               np.asarray(model(x, training=False)), atol=1e-6)
    np.testing.assert_allclose(top_tuning.run_in_batches(top_tuning.top_of(model, start, "gap"), acts),
                               np.asarray(feature_extractor(model, "gap")([x], training=False)), atol=1e-5)
    assert top_tuning.top_of(model, start).get_layer("top_conv") is model.get_layer("top_conv")  # shared, not copied


def test_settings_without_fine_tuning_are_todays():
    """``fine_tune_epochs: 0`` (every shipped config) resolves exactly as before and takes no cached path; with
    fine-tuning the convolutions' default rate is the bench's, and a rate the user gives is kept."""
    cfg = TrainConfig(data="x", arch="efficientnet_lite0").resolved()
    assert cfg.fine_tune_epochs == 0 and cfg.fine_tune_learning_rate == 1e-4  # the architecture's default
    session = SimpleNamespace(cfg=cfg, spec=ARCHITECTURES["efficientnet_lite0"], plan=SimpleNamespace(distributed=False))
    assert top_tuning.cached_start(session, pretrained=True) is None
    tuned = TrainConfig(data="x", arch="efficientnet_lite0", fine_tune_epochs=3).resolved()
    assert tuned.fine_tune_learning_rate == CACHED_FINE_TUNE_LR == 2e-4
    assert TrainConfig(data="x", arch="efficientnet_lite0", fine_tune_epochs=3,
                       fine_tune_learning_rate=5e-5).resolved().fine_tune_learning_rate == 5e-5
    session.cfg = tuned
    assert top_tuning.cached_start(session, pretrained=True) == "block14"
    assert top_tuning.cached_start(session, pretrained=False) is None
    session.plan.distributed = True
    assert top_tuning.cached_start(session, pretrained=True) is None


def _fake_session(tmp_path, epochs: int, lr: float, cancel_after: int | None = None):
    """What :func:`top_tuning.fine_tune_top` reads of a session and a member slot, and a best-epoch checkpoint."""
    from medclf_core.training.callbacks import BestCheckpoint

    log = EventLog(tmp_path / "events.jsonl")
    seen = []

    def check_cancel():
        done = sum(1 for e in read_events(log.path) if e["event"] == "epoch")
        if cancel_after is not None and done >= cancel_after:
            seen.append(done)
            raise TrainingCancelled("Training was cancelled.")

    s = SimpleNamespace(cfg=SimpleNamespace(fine_tune_epochs=epochs, fine_tune_learning_rate=lr), log=log,
                        check_cancel=check_cancel, class_weight={0: 2.0, 1: 0.5})
    m = SimpleNamespace(seed=3, history_path=tmp_path / "history.json")
    return s, m, BestCheckpoint.new(tmp_path)


def _cached(arch, n_train=48, n_val=24, seed=0):
    """A random-weights model and its cache for random images with a learnable label (mean brightness)."""
    rng = np.random.default_rng(seed)
    model = build_model(arch, 2, SIDE, 1, weights=None)
    cache = top_tuning.CachedActivations(model, ARCHITECTURES[arch].cached_fine_tune_from, "gap")
    x = rng.uniform(0, 255, (n_train + n_val, SIDE, SIDE, 1)).astype(np.float32)
    x[: (n_train + n_val) // 2] *= 0.5
    y = (np.arange(n_train + n_val) >= (n_train + n_val) // 2).astype(int)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    acts = top_tuning.run_in_batches(cache.trunk, x)
    cache.keep(np.stack([acts[:n_train], acts[:n_train][:, :, ::-1]]), acts[n_train:])
    return model, cache, y[:n_train], y[n_train:]


@pytest.mark.parametrize("arch", CACHED)
def test_early_stopping_keeps_the_best_epoch_and_only_the_top_trains(arch, tmp_path):
    """The weights kept are those of the epoch with the lowest calibrated validation loss (not the last one), the
    checkpoint holds them, the top's convolutions and head moved, the trunk and every BatchNorm did not."""
    model, cache, y_tr, y_val = _cached(arch)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers if layer.weights}
    s, m, best = _fake_session(tmp_path, epochs=8, lr=0.05)  # a rate that overshoots: the loss goes up again
    features, info = top_tuning.fine_tune_top(s, m, model, cache, y_tr, y_val, best)
    history = json.loads(m.history_path.read_text())
    losses = [h["val_loss_calibrated"] for h in history]
    assert [h["phase"] for h in history] == ["fine_tune"] * len(history) and info["epochs"] == len(history)
    assert info["best_epoch"] == int(np.argmin(losses)) + 1 < len(history)  # the best was not the last epoch
    assert len(history) < 8 or int(np.argmin(losses)) + 1 + top_tuning.PATIENCE >= 8  # stopped after patience
    final = top_tuning.calibrated_log_loss(y_val, top_tuning.run_in_batches(top_tuning.top_of(model, cache.start),
                                                                            cache.val))
    assert final == pytest.approx(min(losses), abs=1e-5)
    assert json.loads(best.state_path.read_text()) == {"val_loss": min(losses), "epoch": info["best_epoch"] - 1}
    start = int(cache.start.removeprefix("block"))
    for name, weights in before.items():
        moved = any(not np.array_equal(a, b) for a, b in zip(weights, model.get_layer(name).get_weights(), strict=True))
        block = int(name[5:].split("_")[0]) if name.startswith("block") else None
        trains = (name in ("top_conv", "predictions") or (block is not None and block >= start
                                                          and name.endswith("_conv")))
        assert moved == trains, name
    assert all(layer.trainable == before_flag for layer, before_flag in
               zip(model.layers, [layer.trainable for layer in build_model(arch, 2, SIDE, 1, weights=None).layers]))
    np.testing.assert_allclose(features, top_tuning.run_in_batches(top_tuning.top_of(model, cache.start, "gap"),
                                                                   cache.train[0]), atol=1e-6)


@pytest.mark.parametrize("arch", CACHED)
def test_cancel_between_fine_tuning_epochs_stops_it(arch, tmp_path):
    """A cancel asked for during fine-tuning stops it after the running epoch, before any weights are recorded."""
    model, cache, y_tr, y_val = _cached(arch, n_train=16, n_val=8)
    s, m, best = _fake_session(tmp_path, epochs=5, lr=2e-4, cancel_after=1)
    with pytest.raises(TrainingCancelled):
        top_tuning.fine_tune_top(s, m, model, cache, y_tr, y_val, best)
    assert len(json.loads(m.history_path.read_text())) == 1 and not best.weights_path.exists()


@pytest.mark.parametrize("arch", CACHED)
def test_a_run_with_fine_tune_epochs_saves_the_fine_tuned_model(arch, chest_sample, tmp_path, monkeypatch):
    """``train`` with ``fine_tune_epochs``: the trunk runs once (to the cut), the head then the top train, and the
    registered model is the fine-tuned one in memory (same outputs), its card and history say how; the gate's
    training features are the final model's."""
    from medclf_core.inference.predictor import Predictor
    from medclf_core.training.transfer import cache_features, feature_extractor

    seen = {}
    original = top_tuning.fine_tune_top
    x = np.random.default_rng(1).uniform(0, 255, (6, SIDE, SIDE, 1)).astype(np.float32)

    def spy(s, m, model, cache, y_train, y_val, best, **kwargs):
        features, info = original(s, m, model, cache, y_train, y_val, best, **kwargs)
        seen["probs"] = np.asarray(model(x, training=False))
        seen["features"] = features
        seen["direct"] = cache_features(feature_extractor(model, "gap"), [it.path for it in s.splits["train"]],
                                        image_size=SIDE, channels=1, batch_size=32)[0]
        return features, info

    monkeypatch.setattr(top_tuning, "fine_tune_top", spy)
    events = tmp_path / "events.jsonl"
    run = train(TrainConfig(data=str(chest_sample), arch=arch, image_size=SIDE, epochs=1, feature_views=1,
                            small_data_images=0, fine_tune_epochs=2), models_dir=tmp_path / "models",
                events=EventLog(events))
    card = json.loads((run / "card.json").read_text())
    ft = card["recipe"]["fine_tune"]
    assert ft["method"] == top_tuning.METHOD and ft["from"] == ARCHITECTURES[arch].cached_fine_tune_from
    assert 1 <= ft["best_epoch"] <= ft["epochs"] <= 2 and ft["conv_learning_rate"] == CACHED_FINE_TUNE_LR
    assert ("mark_projection" in ft) == bool(card["config"]["augment_resolved"].get("mark_directions"))
    history = json.loads((run / "history.json").read_text())
    assert [h["phase"] for h in history][-ft["epochs"]:] == ["fine_tune"] * ft["epochs"]
    assert card["training"]["best_epoch"] == len(history) - ft["epochs"] + ft["best_epoch"]
    log = read_events(events)
    assert any(e["event"] == "phase" and e["phase"] == "fine_tune" for e in log)
    assert sum(e["event"] == "epoch" and e.get("phase") == "fine_tune" for e in log) == ft["epochs"]
    np.testing.assert_allclose(np.asarray(Predictor.from_run(run).model(x, training=False)), seen["probs"], atol=1e-6)
    np.testing.assert_allclose(seen["features"], seen["direct"], atol=1e-4)


@pytest.mark.parametrize("arch", CACHED[:1])
def test_cancel_during_fine_tuning_registers_nothing(arch, chest_sample, tmp_path):
    """Cancelled after the first fine-tuning epoch: no model registered, the work folder removed."""
    log = EventLog(tmp_path / "events.jsonl")

    def cancel():
        return any(e["event"] == "epoch" and e.get("phase") == "fine_tune" for e in read_events(log.path))

    with pytest.raises(TrainingCancelled):
        train(TrainConfig(data=str(chest_sample), arch=arch, image_size=SIDE, epochs=1, feature_views=1,
                          small_data_images=0, fine_tune_epochs=3), models_dir=tmp_path / "models", events=log,
              cancel=cancel)
    assert list_runs(tmp_path / "models") == [] and not (tmp_path / "models" / ".work").exists()
    assert sum(e["event"] == "epoch" and e.get("phase") == "fine_tune" for e in read_events(log.path)) == 1
