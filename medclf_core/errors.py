"""Exceptions whose message is meant for the person using the app or the CLI.

Anything raised as a :class:`MedclfError` is shown as its message alone (no
traceback). Everything else is a bug and is reported as one.

Third-party exceptions (Keras, TensorFlow, h5py, the operating system) can carry kilobytes of
internals and server paths. :func:`brief` turns one into a short clause that is safe to embed in a
``MedclfError`` message, and :func:`user_message` turns any exception into the plain, bounded text
a page shows; both write the full detail to the server log (logger ``medclf``) only.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger("medclf")
#: ``extra=`` of a log record whose plain meaning the user was already given (a damaged file, a summarised
#: third-party error): the server log keeps the detail, the CLI leaves it off the terminal beside the message.
SHOWN_TO_USER = {"shown_to_user": True}

MAX_MESSAGE = 600  # characters of a message shown to a user
MAX_DETAIL = 160  # characters of a third-party exception's text kept in a message
TRAINING_OUT_OF_MEMORY = "Training ran out of memory. Try a smaller batch size or image size."


class MedclfError(Exception):
    """Base class: the message is a complete, plain-language sentence."""


class ImageError(MedclfError):
    """An input file cannot be used as an image (unreadable, unsupported, unsafe)."""


class DatasetError(MedclfError):
    """A dataset folder or archive cannot be used for training or evaluation."""


class ModelError(MedclfError):
    """A model or run folder is missing, damaged, or does not fit the input."""


class TrainingCancelled(MedclfError):
    """Raised inside training when a cancel was requested; nothing is registered."""


class AccessDenied(MedclfError):
    """A path outside the folders the app may read, or a wrong access password."""


_SERVER_PATH = re.compile(r"(?<![\w:/.])(?:~|\.{1,2})?/[^\s'\",;()\[\]]+")


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def brief(exc: BaseException, limit: int = MAX_DETAIL) -> str:
    """A short, one-line description of a third-party exception, to embed in a plain message.

    An ``OSError`` gives its reason without the file name (``PermissionError: Permission denied``,
    never the server path); any other exception its type and the first ``limit`` characters of its
    first line, with server paths replaced by ``<path>``. The full text goes to the server log.

    >>> brief(PermissionError(13, "Permission denied", "/proc/1/cwd"))
    'PermissionError: Permission denied'
    >>> len(brief(ValueError("x" * 3000))) <= MAX_DETAIL
    True
    """
    log.warning("third-party error, shown to the user as a summary: %s: %s", type(exc).__name__, exc,
                extra=SHOWN_TO_USER)
    return _summary(exc, limit)


def _summary(exc: BaseException, limit: int) -> str:
    name = type(exc).__name__
    if isinstance(exc, OSError):
        reason = exc.strerror or (exc.args[0] if exc.args and isinstance(exc.args[0], str) else "")
        reason = _SERVER_PATH.sub("<path>", reason)
        return _clip(f"{name}: {reason}" if reason else name, limit)
    lines = str(exc).strip().splitlines()
    first = _SERVER_PATH.sub("<path>", lines[0]) if lines else ""
    return _clip(f"{name}: {first}" if first else name, limit)


def user_message(exc: BaseException, what: str = "This could not be done", limit: int = MAX_MESSAGE) -> str:
    """The plain text a page shows for ``exc``.

    A :class:`MedclfError` is shown as its own message (bounded to ``limit`` characters): it was
    written for the user. Anything else is a bug or a third-party refusal: the user reads ``what``
    with a short reason (:func:`brief`), and the full exception with its traceback goes to the
    server log.

    >>> user_message(ModelError("The model file is missing."))
    'The model file is missing.'
    >>> user_message(PermissionError(13, "Permission denied", "/proc/1/cwd"), "The folder cannot be read")
    'The folder cannot be read (PermissionError: Permission denied).'
    """
    if isinstance(exc, MedclfError):
        return _clip(str(exc), limit) or _clip(what, limit) + "."
    log.error("%s: unexpected %s", what, type(exc).__name__, exc_info=exc)
    return _clip(f"{what} ({_summary(exc, MAX_DETAIL)}).", limit)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the host or an accelerator running out of memory (``MemoryError``, TensorFlow's
    ``ResourceExhaustedError`` or an "OOM" message).

    >>> is_out_of_memory(MemoryError()), is_out_of_memory(RuntimeError("OOM when allocating tensor"))
    (True, True)
    >>> is_out_of_memory(ValueError("bad shape"))
    False
    """
    return isinstance(exc, MemoryError) or "ResourceExhausted" in type(exc).__name__ or "OOM" in str(exc)


_missing_apis_reported: set[tuple[str, str]] = set()


def warn_missing_api(logger: logging.Logger, library: str, what: str, consequence: str) -> None:
    """Log once per process that a private API a compatibility patch relies on is gone, and what that costs.

    The patches (``server/streamlit_compat``, ``training/tf_compat``) then change nothing: the app keeps
    working, slower or with more memory, and the log says why instead of failing silently.
    """
    if (library, what) not in _missing_apis_reported:
        _missing_apis_reported.add((library, what))
        logger.warning("%s compatibility: %s is missing in this %s version; %s", library, what, library, consequence)


def private_attribute(logger: logging.Logger, library: str, module: str, attr: str, consequence: str):
    """``module.attr`` of a library's private API that a compatibility patch replaces, or None when the module
    or the attribute is gone (then :func:`warn_missing_api` has said so, naming ``<last module part>.<attr>``)."""
    import importlib

    try:
        owner = importlib.import_module(module)
    except ImportError:
        warn_missing_api(logger, library, module, consequence)
        return None
    found = getattr(owner, attr, None)
    if found is None:
        warn_missing_api(logger, library, f"{module.rpartition('.')[2]}.{attr}", consequence)
    return found
