"""medclf_core.server.housekeeping: what a killed registration left behind is removed, a live one never."""

from __future__ import annotations

import os
import time

from medclf_core.server.housekeeping import remove_stale_registrations


def _age(path, seconds: float) -> None:
    past = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (past, past))


def test_old_registration_leftovers_are_removed_and_live_ones_kept(tmp_path):
    killed = tmp_path / ".tmp-chest-abc123"
    live = tmp_path / ".tmp-chest-def456"
    run = tmp_path / "chest"
    for d in (killed, live, run):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "model.keras").write_bytes(b"x")
    _age(killed, 7200)
    _age(run, 7200)
    _age(live, 7200)
    (live / "sub" / "model.keras").write_bytes(b"still being written")  # touched just now
    assert remove_stale_registrations(tmp_path) == [".tmp-chest-abc123"]
    assert not killed.exists() and live.is_dir() and run.is_dir()
    assert remove_stale_registrations(tmp_path, max_age_s=0) == [".tmp-chest-def456"]
    assert run.is_dir()  # a registered run is never a leftover


def test_missing_or_unreadable_models_folder_is_not_an_error(tmp_path):
    assert remove_stale_registrations(tmp_path / "nope") == []


def test_stale_uploads_go_but_a_running_jobs_data_and_recent_uploads_stay(tmp_path):
    from medclf_core.server.housekeeping import remove_stale_uploads

    day_ago = time.time() - 2 * 86400
    for name in ("old", "busy", "fresh"):
        (tmp_path / name / "data").mkdir(parents=True)
        (tmp_path / name / "data.zip").write_bytes(b"x")
    for name in ("old", "busy"):
        for path in (tmp_path / name, tmp_path / name / "data", tmp_path / name / "data.zip"):
            os.utime(path, (day_ago, day_ago))
    removed = remove_stale_uploads(tmp_path, in_use=[tmp_path / "busy" / "data.zip"])
    assert removed == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "fresh"]
    assert remove_stale_uploads(tmp_path / "missing") == []
