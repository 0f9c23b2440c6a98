"""access: the app reads only inside its data roots; the optional access password."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medclf_core.server import access
from medclf_core.server.access import configured_password, data_roots, password_matches, resolve_data_path
from medclf_core.errors import AccessDenied, MedclfError


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """A models folder and one extra data root in a tmp folder, and a folder outside both."""
    models = tmp_path / "models"
    data = tmp_path / "data"
    outside = tmp_path / "outside"
    for d in (models, data / "chest" / "NORMAL", outside / "secret"):
        d.mkdir(parents=True)
    monkeypatch.setenv("MEDCLF_MODELS_DIR", str(models))
    monkeypatch.delenv("MEDCLF_JOBS_DIR", raising=False)
    monkeypatch.setenv(access.DATA_ROOTS_ENV, os.pathsep.join([str(data), "", str(tmp_path / "missing-root")]))
    return {"models": models, "data": data, "outside": outside}


def test_the_roots_are_samples_models_uploads_and_the_env(roots):
    got = data_roots()
    assert got[:3] == [access.samples_dir().resolve(), roots["models"].resolve(),
                       (roots["models"] / ".jobs" / "uploads").resolve()]
    assert roots["data"].resolve() in got
    assert roots["outside"].resolve() not in got
    assert Path("") not in got and len(got) == len(set(got))


def test_paths_inside_a_root_resolve(roots):
    chest = roots["data"] / "chest"
    assert resolve_data_path(str(chest)) == chest.resolve()
    assert resolve_data_path(f"  {chest}  ") == chest.resolve()
    assert resolve_data_path(str(roots["data"] / "chest" / "NORMAL" / "..")) == chest.resolve()
    sample = access.samples_dir() / "datasets" / "chest_xray"
    assert resolve_data_path(str(sample)) == sample.resolve()
    # inside a root but not there (yet): the dataset reader says "not found" in its own words
    assert resolve_data_path(str(roots["data"] / "nothing-here")) == (roots["data"] / "nothing-here").resolve()


@pytest.mark.parametrize("text", ["/etc", "/", "/proc/1/cwd", "/proc/self/root/etc", "~", "/etc/passwd"])
def test_system_paths_are_refused_with_a_plain_message_naming_the_roots(roots, text):
    with pytest.raises(AccessDenied) as info:
        resolve_data_path(text)
    msg = str(info.value)
    assert isinstance(info.value, MedclfError)
    assert msg.startswith(f"'{text}' was not found in the folders this app may read")
    assert str(roots["data"].resolve()) in msg and str(access.samples_dir().resolve()) in msg
    assert access.DATA_ROOTS_ENV in msg
    assert "Errno" not in msg and "Permission" not in msg and "Traceback" not in msg


def test_dot_dot_out_of_a_root_is_refused(roots):
    sneaky = str(roots["data"] / ".." / "outside" / "secret")
    with pytest.raises(AccessDenied, match="not found in the folders this app may read"):
        resolve_data_path(sneaky)
    with pytest.raises(AccessDenied):
        resolve_data_path(str(access.samples_dir() / ".." / ".." / ".." / "etc"))


def test_a_symlink_inside_a_root_that_points_out_is_refused(roots):
    link = roots["data"] / "looks-inside"
    link.symlink_to(roots["outside"])
    with pytest.raises(AccessDenied, match="not found in the folders this app may read"):
        resolve_data_path(str(link / "secret"))
    etc = roots["data"] / "etc-link"
    etc.symlink_to("/etc")
    with pytest.raises(AccessDenied):
        resolve_data_path(str(etc))
    # and a link that stays inside the roots is fine
    (roots["data"] / "alias").symlink_to(roots["data"] / "chest")
    assert resolve_data_path(str(roots["data"] / "alias")) == (roots["data"] / "chest").resolve()


def test_the_refusal_does_not_tell_whether_the_path_exists(roots):
    messages = []
    for p in (roots["outside"] / "secret", roots["outside"] / "no-such-thing"):
        with pytest.raises(AccessDenied) as info:
            resolve_data_path(str(p))
        messages.append(str(info.value).replace(str(p), "<p>"))
    assert messages[0] == messages[1]


def test_a_root_given_only_by_the_environment(roots, monkeypatch):
    with pytest.raises(AccessDenied):
        resolve_data_path(str(roots["outside"] / "secret"))
    monkeypatch.setenv(access.DATA_ROOTS_ENV, str(roots["outside"]))
    assert resolve_data_path(str(roots["outside"] / "secret")) == (roots["outside"] / "secret").resolve()
    assert roots["data"].resolve() not in data_roots()


def test_home_is_expanded_before_the_check(roots, monkeypatch):
    monkeypatch.setenv("HOME", str(roots["data"]))
    assert resolve_data_path("~/chest") == (roots["data"] / "chest").resolve()


def test_empty_text_and_nul_bytes_are_plain_messages(roots):
    for text in ("", "   ", "/etc\x00/x"):
        with pytest.raises(AccessDenied):
            resolve_data_path(text)


def test_unreadable_paths_inside_a_root_give_plain_messages(roots, monkeypatch):
    target = roots["data"] / "chest"
    resolved = target.resolve()
    real_stat = Path.stat

    def stat(self, *a, **k):
        if self == resolved:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *a, **k)

    monkeypatch.setattr(Path, "stat", stat)
    with pytest.raises(AccessDenied) as info:
        resolve_data_path(str(target))
    assert "cannot be read" in str(info.value) and "Errno" not in str(info.value)


def test_the_password_comes_from_secrets_then_the_environment():
    assert configured_password({}, {}) is None
    assert configured_password(None, {"MEDCLF_PASSWORD": ""}) is None
    assert configured_password({}, {"MEDCLF_PASSWORD": "pw"}) == "pw"
    assert configured_password({"medclf_password": "sec"}, {"MEDCLF_PASSWORD": "pw"}) == "sec"
    assert configured_password({"medclf_password": ""}, {"MEDCLF_PASSWORD": "pw"}) == "pw"


def test_password_check_is_exact_and_constant_time(monkeypatch):
    calls = []
    real = access.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", spy)
    assert password_matches("correct horse", "correct horse")
    assert not password_matches("correct hors", "correct horse")
    assert not password_matches("", "correct horse")
    assert not password_matches(None, "correct horse")
    assert password_matches("pässwörd", "pässwörd")
    assert len(calls) == 4


def test_the_samples_folder_is_the_environments_or_the_working_directorys(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCLF_SAMPLES_DIR", str(tmp_path / "bundled"))
    assert access.samples_dir() == tmp_path / "bundled"
    assert access.samples_dir().resolve() in access.data_roots(tmp_path / "models")
    monkeypatch.delenv("MEDCLF_SAMPLES_DIR")
    monkeypatch.chdir(tmp_path)
    assert access.samples_dir() == tmp_path / "samples"


def test_a_relative_path_is_taken_from_the_data_root_that_holds_it(roots, monkeypatch, tmp_path):
    """Walk-through, session 21: "siteA", a folder of a data root, was refused; only its absolute path worked."""
    monkeypatch.chdir(tmp_path / "outside")  # the working directory is not a root
    assert resolve_data_path("chest") == (roots["data"] / "chest").resolve()
    assert resolve_data_path("chest/NORMAL") == (roots["data"] / "chest" / "NORMAL").resolve()
    with pytest.raises(AccessDenied, match="not found in the folders this app may read"):
        resolve_data_path("secret")  # in the working directory, outside every root: refused as before
    with pytest.raises(AccessDenied, match="not found in the folders this app may read"):
        resolve_data_path("../outside/secret")  # a root joined with ".." that leads out: refused
