"""Who may use the app, and which server folders it may read.

The app is reached through a browser, possibly by several people on a shared server, so a path
typed into a page is not trusted: :func:`resolve_data_path` accepts it only inside one of the
configured data roots (:func:`data_roots`): the bundled samples, the models folder, the folder
the app writes its own uploads to, and the folders in ``$MEDCLF_DATA_ROOTS``
(``os.pathsep``-separated, e.g. ``/data/chest:/data/brain``). Symbolic links and ``..`` are
resolved before the check, so neither leads out of a root, and the refusal is the same message
whether or not the path exists. The command line is used by a local user and is not restricted.

An optional access password (:func:`configured_password`): Streamlit's secret
``medclf_password`` (``.streamlit/secrets.toml``) or ``$MEDCLF_PASSWORD``; when set, the app asks
for it before any page (:func:`password_matches`, a constant-time comparison).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from medclf_core.errors import AccessDenied
from medclf_core.registry.store import default_models_dir

DATA_ROOTS_ENV = "MEDCLF_DATA_ROOTS"
PASSWORD_ENV = "MEDCLF_PASSWORD"
PASSWORD_SECRET = "medclf_password"
SAMPLES_DIR_ENV = "MEDCLF_SAMPLES_DIR"


def samples_dir() -> Path:
    """The bundled samples folder: ``$MEDCLF_SAMPLES_DIR``, else ``samples`` in the working directory.

    The same rule as the models folder (:func:`medclf_core.registry.store.default_models_dir`); the app
    sets ``$MEDCLF_SAMPLES_DIR`` to its checkout's ``samples/`` unless it is set already (app.py).
    """
    env = os.environ.get(SAMPLES_DIR_ENV)
    return Path(env) if env else Path.cwd() / "samples"


class _Unresolvable(Exception):
    """A symbolic link on the way cannot be read (``/proc/1/cwd``): where it leads is unknown."""

    def __init__(self, lexical: Path):
        super().__init__(str(lexical))
        self.lexical = lexical


def _real(path: str | os.PathLike) -> Path:
    """``path`` made absolute with every symbolic link and ``..`` resolved (no error if it is missing).

    Raises :class:`_Unresolvable` (with the lexically normalised path) when a link cannot be read.
    """
    absolute = os.path.abspath(os.path.expanduser(os.fspath(path)))
    try:
        return Path(os.path.realpath(absolute))
    except OSError:
        raise _Unresolvable(Path(absolute)) from None


def data_roots(models_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders the app may read from, resolved, without repeats, in a fixed order.

    The bundled samples (:func:`samples_dir`), the models folder (``models_dir``, else the default
    one), the app's own upload folder (``<jobs dir>/uploads``, where the Train page writes uploaded
    zips), then each folder of ``$MEDCLF_DATA_ROOTS``. Empty entries are ignored; relative ones are taken from the
    working directory.
    """
    from medclf_core.training.jobs import jobs_dir  # here: it imports scikit-learn and OpenCV

    models = Path(models_dir) if models_dir else default_models_dir()
    wanted: list[str | os.PathLike] = [samples_dir(), models, jobs_dir(models) / "uploads"]
    wanted += [p for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    roots: list[Path] = []
    for entry in wanted:
        try:
            root = _real(entry)
        except (_Unresolvable, ValueError):
            continue
        if root not in roots:
            roots.append(root)
    return roots


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def refusal(text: str, roots: list[Path]) -> str:
    """The one message for a path outside the roots: it says nothing about whether the path exists."""
    listed = "; ".join(str(r) for r in roots) or "none"
    return (f"'{text}' was not found in the folders this app may read ({listed}). To read another folder, "
            f"add it to {DATA_ROOTS_ENV} (folders separated by '{os.pathsep}') before starting the app.")


def resolve_data_path(text: str | os.PathLike, roots: list[Path] | None = None) -> Path:
    """The real path of a dataset folder or file typed into a page, if it lies inside a data root.

    ``~`` is expanded and symbolic links and ``..`` are resolved *before* the containment check, so a
    link inside a root that points out of it is refused like the path it points to. A relative path is taken
    from the first data root that holds it (``siteA`` for ``<root>/siteA``), else from the working directory. Raises
    :class:`~medclf_core.errors.AccessDenied` (a ``MedclfError``) with a plain message: outside every
    root (the same message whether the path exists or not), or inside a root but not readable
    (permission denied, an I/O error: no operating-system text, no traceback).

    >>> resolve_data_path(samples_dir() / "datasets" / "chest_xray" / ".." / "chest_xray") == \\
    ...     samples_dir().resolve() / "datasets" / "chest_xray"
    True
    >>> try:
    ...     resolve_data_path("/etc")
    ... except AccessDenied as exc:
    ...     print(str(exc).split(" (")[0])
    '/etc' was not found in the folders this app may read
    """
    shown = " ".join(str(text).split())[:300]
    if not shown or "\x00" in str(text):
        raise AccessDenied("Type the path of a dataset folder or zip.")
    roots = data_roots() if roots is None else [_real(r) for r in roots]
    typed = str(text).strip()
    if not os.path.isabs(os.path.expanduser(typed)):  # relative: in the first data root that has it
        typed = next((str(root / typed) for root in roots if os.path.lexists(root / typed)), typed)
    try:
        path = _real(typed)
    except _Unresolvable as exc:  # never followed: refused like any path outside, or unreadable inside
        if not any(_inside(exc.lexical, root) for root in roots):
            raise AccessDenied(refusal(shown, roots)) from None
        raise AccessDenied(f"'{shown}' cannot be read: the server does not allow this app to read it.") from None
    if not any(_inside(path, root) for root in roots):
        raise AccessDenied(refusal(shown, roots))
    try:
        path.stat()
    except FileNotFoundError:
        pass  # inside a root: the reader says "not found" in its own words
    except PermissionError:
        raise AccessDenied(f"'{shown}' cannot be read: the server does not allow this app to read it.") from None
    except OSError as exc:
        raise AccessDenied(f"'{shown}' cannot be read ({exc.strerror or type(exc).__name__}).") from None
    return path


def configured_password(secrets: Mapping | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The access password, or None when the app is open.

    ``secrets`` (Streamlit's ``st.secrets``, key ``medclf_password``) wins over ``$MEDCLF_PASSWORD``;
    an empty value means no password.

    >>> configured_password({}, {"MEDCLF_PASSWORD": "s3cret"})
    's3cret'
    >>> configured_password({"medclf_password": "from-secrets"}, {"MEDCLF_PASSWORD": "s3cret"})
    'from-secrets'
    >>> configured_password({}, {}) is None
    True
    """
    environ = os.environ if environ is None else environ
    for value in ((secrets or {}).get(PASSWORD_SECRET), environ.get(PASSWORD_ENV)):
        if value is not None and str(value) != "":
            return str(value)
    return None


def password_matches(given: str | None, expected: str) -> bool:
    """Whether ``given`` is the password, compared in constant time (``hmac.compare_digest``).

    >>> password_matches("s3cret", "s3cret"), password_matches("s3cre", "s3cret"), password_matches(None, "x")
    (True, False, False)
    """
    if given is None:
        return False
    return hmac.compare_digest(str(given).encode("utf-8"), str(expected).encode("utf-8"))
