"""medclf_core.io.stale: one answer to "is this process alive", and stale temporary folders removed, live ones never."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medclf_core.io.stale import STALE_AFTER_S, owner_pid, pid_alive, remove_stale_folders
from medclf_core.registry.store import REGISTRATION_TMP_PREFIX, write_run_atomically

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see a zombie")


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _zombie() -> subprocess.Popen:
    """A child that has exited and was not reaped yet."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while _state(child.pid) != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    return child


def test_a_running_process_is_alive():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert pid_alive(child.pid)
        assert pid_alive(os.getpid())
    finally:
        child.kill()
        child.wait()


def test_a_reaped_child_and_impossible_pids_are_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
    # 0 and negative pids name process groups (os.kill would succeed), not one process
    assert not any(pid_alive(pid) for pid in (None, 0, -1, 2**40))


@needs_proc
def test_a_finished_child_not_yet_reaped_is_not_alive():
    """The zombie case: os.kill(pid, 0) still succeeds, so a check without it called the worker alive."""
    child = _zombie()
    os.kill(child.pid, 0)  # the premise: signalling the zombie still works
    assert not pid_alive(child.pid)
    child.wait()


def test_another_users_process_is_alive():
    assert pid_alive(1)  # init: PermissionError for a normal user, a live process for root


def test_owner_pid_only_from_a_pid_and_a_dash():
    assert owner_pid("medclf-zip-123-abc", "medclf-zip-") == 123
    assert [owner_pid(n, "medclf-zip-") for n in ("medclf-zip-123", "medclf-zip-abc-1", "other-123-x")] == [None] * 3


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
    assert remove_stale_folders(tmp_path, REGISTRATION_TMP_PREFIX) == [".tmp-chest-abc123"]
    assert not killed.exists() and live.is_dir() and run.is_dir()
    assert remove_stale_folders(tmp_path, REGISTRATION_TMP_PREFIX, max_age_s=0) == [".tmp-chest-def456"]
    assert run.is_dir()  # a registered run is never a leftover


def test_a_registration_removes_what_a_killed_one_left(tmp_path):
    killed = tmp_path / f"{REGISTRATION_TMP_PREFIX}chest-abc123"
    (killed / "sub").mkdir(parents=True)
    _age(killed, STALE_AFTER_S + 60)

    def write(folder: Path) -> None:
        for name in ("model.keras", "card.json"):
            (folder / name).write_bytes(b"x")

    write_run_atomically(tmp_path, "other", write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]


def test_missing_or_unreadable_folder_is_not_an_error(tmp_path):
    assert remove_stale_folders(tmp_path / "nope", REGISTRATION_TMP_PREFIX) == []


@needs_proc
def test_a_folder_of_a_gone_or_zombie_process_goes_whatever_its_age(tmp_path):
    zombie = _zombie()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    names = {pid: f"medclf-zip-{pid}-x" for pid in (zombie.pid, gone.pid, os.getpid())}
    for name in names.values():
        (tmp_path / name).mkdir()
    removed = remove_stale_folders(tmp_path, "medclf-zip-", max_age_s=1e9, pid_in_name=True)
    zombie.wait()
    assert removed == sorted([names[zombie.pid], names[gone.pid]])
    assert (tmp_path / names[os.getpid()]).is_dir()


def test_a_link_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    _age(outside, 7200)
    (tmp_path / "temp").mkdir()
    (tmp_path / "temp" / "medclf-zip-link").symlink_to(outside, target_is_directory=True)
    assert remove_stale_folders(tmp_path / "temp", "medclf-zip-", max_age_s=0) == []
    assert (outside / "sub").is_dir()


def test_kept_folders_are_spared(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _age(tmp_path / name, 7200)
    assert remove_stale_folders(tmp_path, keep=lambda folder: folder.name == "b") == ["a"]
