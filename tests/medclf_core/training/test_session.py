"""medclf_core.training.session: one run's state, opened once from settings validated once."""

from __future__ import annotations

import pytest
from helpers import TINY

from medclf_core.errors import TrainingCancelled
from medclf_core.training import TrainConfig, train
from medclf_core.training.events import EventLog
from medclf_core.training.session import TrainingSession


class _Stop(Exception):
    """Raised by a listener at the ``start`` event: the session is open, nothing else has run."""


def _open_then_stop(cfg, models_dir) -> list[dict]:
    seen: list[dict] = []

    def listener(ev):
        seen.append(ev)
        if ev["event"] == "start":
            raise _Stop

    with pytest.raises(_Stop):
        train(cfg, models_dir=models_dir, events=EventLog(listeners=[listener]))
    return seen


def test_a_config_is_validated_once_per_path(pattern_dataset, tmp_path, monkeypatch):
    """The CLI validates and then trains: train does not validate again, unless a setting changed since or the
    run goes to another models folder; a config nobody validated is validated by train."""
    models = tmp_path / "m"
    cfg = TrainConfig(data=str(pattern_dataset), arch="simple_cnn", epochs=1, image_size=TINY).validate(models)
    real_validate = TrainConfig.validate
    calls: list[str] = []

    def counted(self, *args, **kwargs):
        calls.append(self.name or "")
        return real_validate(self, *args, **kwargs)

    monkeypatch.setattr(TrainConfig, "validate", counted)
    seen = _open_then_stop(cfg, models)
    assert calls == [] and seen[0]["event"] == "start"
    assert seen[0]["config"]["epochs"] == 1 and seen[0]["config"]["batch_size"] == 32  # resolved
    _open_then_stop(cfg, tmp_path / "elsewhere")
    assert calls == [""]
    cfg.name = "renamed"
    _open_then_stop(cfg, models)
    assert calls == ["", "renamed"]
    _open_then_stop(TrainConfig(data=str(pattern_dataset), arch="simple_cnn", image_size=TINY, name="fresh"), models)
    assert calls == ["", "renamed", "fresh"]


def test_the_session_carries_the_run_and_gives_each_member_its_seed_and_folder(pattern_dataset, tmp_path):
    models = tmp_path / "m"
    cfg = TrainConfig(data=str(pattern_dataset), arch="simple_cnn", epochs=1, image_size=TINY, ensemble=2, seed=7)
    events: list[dict] = []
    cancelled = {"now": False}
    session = TrainingSession.open(cfg.validate(models), models, EventLog(listeners=[events.append]),
                                   cancel=lambda: cancelled["now"])
    assert session.cfg.batch_size == 32 and session.global_batch == 32 * session.plan.replicas
    with session.dataset():
        session.audit_and_split()
        assert session.class_names == ["circle", "square"]
        assert sum(session.counts["val"].values()) == len(session.splits["val"]) > 0
        with pytest.raises(TrainingCancelled), session.work_folder() as work:
            assert (work / "config.json").is_file() and work.parent == models / ".work"
            slots = [session.slot(k) for k in (1, 2)]
            assert [(m.k, m.seed, m.members) for m in slots] == [(1, 7, 2), (2, 8, 2)]
            assert [m.work for m in slots] == [work / "member-1", work / "member-2"]
            assert all(m.work.is_dir() for m in slots)
            session.check_cancel()
            cancelled["now"] = True
            session.check_cancel()
    assert not work.exists()  # a cancel removes the work folder
    assert [e["event"] for e in events if e["event"] != "audit_progress"] == ["start", "audit", "split"]
