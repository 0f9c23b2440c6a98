"""The model registry: one folder per run under ``models/``.

::

    models/<run name>/
        model.keras        the trained model (raw uint8-range images in, softmax out)
        card.json          machine-readable model card (medclf_core.registry.card.ModelCard)
        history.json       per-epoch training metrics
        evaluation.json    metrics on the run's test (or validation) split
        evaluations/       recorded evaluations on other data (medclf_core.registry.evaluations)
        ood.npz            the out-of-distribution gate (medclf_core.trust.ood), when fitted

A run folder appears all at once: it is written into a hidden temporary folder
beside its final place and then renamed, so a crash or a cancel never leaves a
half-written model where :func:`list_runs` would find it. Folders starting with a
dot (work areas, temporaries) are never listed. A run whose card is damaged or not
valid is never listed as a model and never stops the others from being listed:
:func:`list_unreadable_runs` (or :func:`scan_registry`) names it with the reason.

Example::

    >>> import tempfile
    >>> list_runs(tempfile.mkdtemp())                  # a new, empty models folder
    []
    >>> model, card = load_run("chest-xray-pneumonia", "models")   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from medclf_core.errors import ModelError, brief
from medclf_core.io.archive import ZipLimits, limit_violation, unsafe_member_reason
from medclf_core.io.stale import remove_stale_folders
from medclf_core.registry.card import MAX_CARD_BYTES, CardError, ModelCard, parse_card_text
from medclf_core.registry.model_limits import check_model_config, read_config
from medclf_core.registry.names import check_run_name

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
HISTORY_FILE = "history.json"
EVALUATION_FILE = "evaluation.json"
TRAINING_IMAGES_FILE = "training_images.json"  # pixel digests of the run's train/val/test images (inference.overlap)
GATE_FILE = "ood.npz"  # the out-of-distribution gate: written and read by medclf_core.trust.ood, exported too
REGISTRATION_TMP_PREFIX = ".tmp-"  # write_run_atomically writes a run here first; a killed one leaves it
MODELS_DIR_ENV = "MEDCLF_MODELS_DIR"
# A .keras file is a zip: bound what a user-supplied one may unpack to (ResNet50 is ~100 MB).
MODEL_MAX_UNPACKED_BYTES = 2 * 2**30
MODEL_MAX_RATIO = 100  # weights barely compress; a far higher ratio is a zip bomb
MODEL_MAX_MEMBERS = 10_000  # a .keras file holds a config, the weights and a few assets


def default_models_dir() -> Path:
    """The models folder: ``$MEDCLF_MODELS_DIR``, else ``models`` in the working directory.

    One rule for a checkout and an installed package alike (the package never looks for the folder it
    was installed from). The app sets ``$MEDCLF_MODELS_DIR`` to its checkout's ``models/`` unless it is
    set already (app.py), so ``streamlit run /path/to/app.py`` serves the bundled models from any folder.
    """
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env) if env else Path.cwd() / "models"


def unique_run_name(base: str, models_dir: str | os.PathLike) -> str:
    """``base`` if free, else ``base-2``, ``base-3``, ..."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._") or "run"
    models_dir = Path(models_dir)
    name, k = base, 2
    while (models_dir / name).exists():
        name, k = f"{base}-{k}", k + 1
    return name


def write_run_atomically(models_dir: str | os.PathLike, name: str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_folder)`` and then move the folder to ``models_dir/name`` in one rename.

    If ``write`` raises, the temporary folder is removed and nothing is registered.
    """
    check_run_name(name)
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(models_dir, REGISTRATION_TMP_PREFIX)  # left by registrations killed mid-write
    final = models_dir / name
    if final.exists():
        raise ModelError(f"A run named '{name}' already exists in {models_dir}.")
    tmp = Path(tempfile.mkdtemp(prefix=f"{REGISTRATION_TMP_PREFIX}{name}-", dir=models_dir))
    try:
        write(tmp)
        missing = [f for f in (MODEL_FILE, CARD_FILE) if not (tmp / f).is_file()]
        if missing:
            raise ModelError(f"Run '{name}' is incomplete (missing {', '.join(missing)}); not registered.")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        os.rename(tmp, final)  # atomic on one filesystem; fails if final appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def resolve_run(model: str | os.PathLike, models_dir: str | os.PathLike | None = None) -> Path:
    """A run folder from a path, or from a run name in ``models_dir``."""
    p = Path(model)
    if p.is_dir() and (p / CARD_FILE).is_file():
        return p
    if p.is_file() and p.name == MODEL_FILE and (p.parent / CARD_FILE).is_file():
        return p.parent
    base = Path(models_dir) if models_dir else default_models_dir()
    q = base / str(model)
    if q.is_dir() and (q / CARD_FILE).is_file() and not q.name.startswith("."):
        return q
    known = ", ".join(r["name"] for r in list_runs(base)) or "none"
    raise ModelError(f"No model run '{model}' (looked for a run folder, and in {base}; available: {known}).")


def read_card(run_dir: str | os.PathLike) -> ModelCard:
    """The validated card of a run folder (a :class:`ModelCard`, a dict with every known key).

    No card: :class:`ModelError`. A card that is damaged, not valid, too large or
    unreadable: :class:`CardError` (a ``ModelError``) whose ``reason`` says why.
    """
    path = Path(run_dir) / CARD_FILE
    label = f"of run '{Path(run_dir).name}'"
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CARD_BYTES + 1)
    except FileNotFoundError:
        raise ModelError(f"{run_dir} has no {CARD_FILE}; it is not a model run.") from None
    except OSError as exc:
        reason = f"it cannot be read ({exc.strerror or type(exc).__name__})"
        raise CardError(f"The model card {label} cannot be used: {reason}.", reason) from None
    return parse_card_text(data, source=label)


def scan_registry(models_dir: str | os.PathLike | None = None) -> tuple[list[ModelCard], list[dict]]:
    """``(runs, unreadable)`` of a models folder, in one pass; never raises for one bad run.

    ``runs``: the validated cards of every complete run, newest first, each with ``run_dir``.
    ``unreadable``: ``{"name" (the folder's), "run_dir", "reason", "unreadable": True}`` for each
    folder that looks like a run (it has a card or a model file) but cannot be used: a damaged
    or invalid card, a missing card or model file, or a model file refused before building it (a damaged
    archive, or an input shape or size over the limits of :mod:`medclf_core.registry.model_limits`). Sorted by name.
    """
    base = Path(models_dir) if models_dir else default_models_dir()
    runs: list[ModelCard] = []
    unreadable: list[dict] = []
    try:
        entries = list(base.iterdir()) if base.is_dir() else []
    except OSError:
        return [], []
    for d in entries:
        try:
            if d.name.startswith(".") or not d.is_dir():
                continue
            has_card, has_model = (d / CARD_FILE).is_file(), (d / MODEL_FILE).is_file()
        except OSError:
            continue
        if not has_card and not has_model:
            continue  # not a run folder at all
        reason = None
        if not has_card:
            reason = f"it has a {MODEL_FILE} but no {CARD_FILE}"
        else:
            try:
                card = read_card(d)
            except CardError as exc:
                reason = f"its {CARD_FILE} is not usable: {exc.reason}"
            except ModelError as exc:
                reason = str(exc)
            else:
                reason = _model_file_problem(d / MODEL_FILE) if has_model else f"its {MODEL_FILE} is missing"
        if reason:
            unreadable.append({"name": d.name, "run_dir": str(d), "reason": reason, "unreadable": True})
            continue
        card["run_dir"] = str(d)
        runs.append(card)
    runs.sort(key=lambda c: c["created"] or "", reverse=True)
    unreadable.sort(key=lambda u: u["name"])
    return runs, unreadable


def _model_file_problem(path: Path) -> str | None:
    """Why a run's model file cannot be used (refused before building it), or None."""
    try:
        check_model_file(path)
    except ModelError as exc:
        return str(exc)
    return None


def list_runs(models_dir: str | os.PathLike | None = None) -> list[ModelCard]:
    """Validated cards of every complete run, newest first, each with ``run_dir`` added.

    A run whose card is damaged or not valid is left out (see :func:`list_unreadable_runs`).
    """
    return scan_registry(models_dir)[0]


def list_unreadable_runs(models_dir: str | os.PathLike | None = None) -> list[dict]:
    """Run folders that cannot be used, each ``{"name", "run_dir", "reason", "unreadable": True}``."""
    return scan_registry(models_dir)[1]


def load_model_file(path: str | os.PathLike, *, safe_mode: bool = True):
    """Load a ``.keras`` file in Keras safe mode (no arbitrary code from the file).

    A missing file, a file that is not a Keras archive, or a model with a Lambda
    layer (Python code) gives a plain :class:`ModelError`, never a traceback.
    """
    import keras

    _check_keras_archive(Path(path), allow_code=not safe_mode)
    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=safe_mode)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise ModelError("This model contains custom Python code (a Lambda layer) and was refused: "
                             "loading it could run arbitrary code.") from None
        raise ModelError(f"The model file cannot be loaded ({brief(exc)}).") from None
    except (OSError, KeyError, TypeError) as exc:
        raise ModelError(f"The model file is damaged or not a Keras model ({brief(exc)}).") from None
    except Exception as exc:  # noqa: BLE001 - zipfile, h5py and Keras raise many types on hostile files
        raise ModelError(f"The model file is damaged or not a Keras model ({type(exc).__name__}).") from None


def _check_keras_archive(path: Path, *, allow_code: bool = False) -> None:
    """Refuse, with a message a person can act on, what Keras would misreport."""
    import zipfile

    if not path.is_file():
        raise ModelError(f"The model file {path.name} does not exist.")
    if path.suffix.lower() != ".keras":
        return  # legacy formats (.h5) are left to Keras
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise ModelError(f"The model file {path.name} is damaged or not a Keras model (not a .keras archive).") \
            from None
    if "config.json" not in {i.filename for i in infos}:
        raise ModelError(f"The model file {path.name} is damaged or not a Keras model (no config.json inside).")
    broken = limit_violation(infos, ZipLimits(MODEL_MAX_MEMBERS, MODEL_MAX_UNPACKED_BYTES, MODEL_MAX_RATIO))
    if broken is not None and broken.kind == "members":
        raise ModelError(f"The model file {path.name} has {broken.members} entries (limit {MODEL_MAX_MEMBERS}); "
                         "it is not a Keras model, refused.")
    if broken is not None:
        raise ModelError(f"The model file {path.name} would unpack to {broken.unpacked / 2**20:.0f} MB "
                         f"(limit {MODEL_MAX_UNPACKED_BYTES // 2**20} MB, or a suspicious compression ratio); refused.")
    if any(unsafe_member_reason(i) for i in infos):
        raise ModelError(f"The model file {path.name} holds links, unsafe paths or encrypted entries; "
                         "it is not a Keras model, refused.")
    try:
        with zipfile.ZipFile(path) as zf:  # input shape and size stated by the config, before Keras builds it
            check_model_config(read_config(zf, path.name), path.name, allow_code=allow_code)
    except (zipfile.BadZipFile, OSError, EOFError):
        raise ModelError(f"The model file {path.name} is damaged or not a Keras model (its config cannot be read).") \
            from None


def check_model_file(path: str | os.PathLike) -> None:
    """Refuse (:class:`ModelError`, with the reason) a model file that :func:`load_model_file` would refuse
    before building it: a damaged or hostile archive, or a config over the limits of
    :mod:`medclf_core.registry.model_limits`. Reads the zip's directory and config only; a file checked
    before and unchanged since (same size and modification time) is not read again."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise ModelError(f"The model file {path.name} does not exist.") from None
    _checked_model_file(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _checked_model_file(path: str, size: int, mtime_ns: int) -> None:
    _check_keras_archive(Path(path))  # raises (and an exception is never cached)


def load_run(model: str | os.PathLike, models_dir: str | os.PathLike | None = None):
    """``(keras_model, card)`` for a run folder or run name."""
    run_dir = resolve_run(model, models_dir)
    card = read_card(run_dir)
    card["run_dir"] = str(run_dir)
    return load_model_file(run_dir / MODEL_FILE), card


def delete_run(model: str | os.PathLike, models_dir: str | os.PathLike | None = None) -> Path:
    """Remove a run folder. It is first renamed to a hidden name so a reader never sees half of it."""
    run_dir = resolve_run(model, models_dir)
    trash = run_dir.with_name(f".deleted-{run_dir.name}-{uuid.uuid4().hex[:8]}")
    os.rename(run_dir, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return run_dir


def stored_test_predictions(card, evaluation: dict | None,
                            search_roots: Sequence[str | os.PathLike] = ()) -> dict | None:
    """The test-split predictions stored with a run (its evaluation.json), in the shape of
    :func:`medclf_core.inference.folder.predict_folder`, with each image's path on this server.

    (Not named ``test_*``: pytest would collect it wherever a test module imports it.)

    Training records every file relative to the dataset root, and the root as it was given:
    absolute for a run trained from the app, relative to the repository for the bundled
    models. On another machine (a fresh clone) that root does not exist, so it is looked
    for: as recorded (a relative one also against the repository root: the folder that holds
    the run's models folder), then every tail of it under the repository root, so that a run trained on
    ``/home/a/medclf/samples/datasets/chest_xray`` finds this checkout's
    ``samples/datasets/chest_xray``. ``search_roots`` are searched the same way after it (the app passes its
    data roots, so a run kept in another models folder still finds the bundled samples). The candidate that
    holds the most recorded files wins.

    Extra keys: ``n_found`` (how many of the images are on this server) and
    ``dataset_root`` (the folder they were found in, None when none was). ``files``
    still names every image (under the recorded root where it was not found).
    """
    import numpy as np

    preds = (evaluation or {}).get("predictions") or []
    names = list(card.get("class_names") or [])
    if not preds or not names:
        return None
    rows = [p for p in preds if isinstance(p, dict) and p.get("label") in names and isinstance(p.get("file"), str)]
    if not rows:
        return None
    recorded = str((card.get("dataset") or {}).get("source", "") or "")
    rels = [p["file"] for p in rows]
    run_dir = card.get("run_dir")
    home = Path(run_dir).resolve().parents[1] if run_dir else Path.cwd()  # the folder holding the models folder
    root, found = max((_locate_dataset(recorded, rels, Path(r)) for r in [home, *search_roots]),
                      key=lambda located: located[1])
    base = root if root is not None else Path(recorded)
    return {"files": [str(base / r) for r in rels], "rel": rels,
            "y_true": np.array([names.index(p["label"]) for p in rows], dtype=int),
            "probs": np.array([p["probabilities"] for p in rows], dtype=np.float64), "skipped": [],
            "split": (evaluation or {}).get("split", "test"), "class_names": names, "dataset": recorded,
            "n_found": found, "dataset_root": None if root is None else str(root)}


def _locate_dataset(recorded: str, rels: list[str], repo: Path) -> tuple[Path | None, int]:
    """``(folder, n)``: the candidate root for a recorded dataset path that holds the most of ``rels``;
    ``repo``: the folder that holds the models folder (the checkout, for the bundled models)."""
    if not recorded:
        return None, 0
    path = Path(recorded).expanduser()
    candidates = [path] if path.is_absolute() else [repo / path, path]
    parts = [p for p in path.parts if p not in (path.anchor, "", ".", "..")]
    candidates += [repo.joinpath(*parts[i:]) for i in range(len(parts))]
    best, best_n, seen = None, 0, set()
    for folder in candidates:
        key = os.path.normpath(str(folder))
        if key in seen:
            continue
        seen.add(key)
        try:
            if not folder.is_dir():
                continue
            n = sum(1 for r in rels if ".." not in Path(r).parts and (folder / r).is_file())
        except OSError:
            continue
        if n > best_n:
            best, best_n = folder.resolve(), n
    return best, best_n
