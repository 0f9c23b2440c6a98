"""Export a registered model for use outside medclf: TensorFlow SavedModel or TensorFlow Lite.

:func:`export_model` writes one export of a run, with the model card travelling with it:

- ``savedmodel``: ``OUTPUT/`` is a SavedModel folder (``saved_model.pb``, ``variables/``,
  signature ``serve`` / ``serving_default``, from Keras 3 ``model.export(format="tf_saved_model")``).
  The medclf files go into the SavedModel's own folder for auxiliary files, ``OUTPUT/assets/``:
  ``card.json`` (the model card plus an ``"export"`` entry), ``ood.npz`` (the out-of-distribution
  gate, when the run has one) and ``EXPORT.md`` (how to use it). Tools that copy a SavedModel
  copy its ``assets/`` with it.
- ``tflite``: ``OUTPUT`` is the ``.tflite`` file (converted from the SavedModel by
  ``tf.lite.TFLiteConverter.from_saved_model``, float32, no quantisation); beside it
  ``<stem>.card.json``, ``<stem>.EXPORT.md`` and ``<stem>.ood.npz`` (when the run has one).

What the exported model computes is exactly the registry model: float32 pixels ``0-255`` of
shape ``(N, S, S, C)`` in (rescaling is a layer inside the model), the softmax probabilities
``(N, K)`` out, in the card's ``class_names`` order. What medclf's :class:`~medclf_core.inference.predictor.Predictor`
adds on top, and a consumer must add too, is written in the exported card's ``"export"`` entry and
in ``EXPORT.md``: the calibration temperature (``card["calibration"]["temperature"]``; the card's
binary ``threshold`` is on the *calibrated* probability), the test-time views (``card["tta"]``)
and the operating threshold.

Every file is written under a temporary name beside its final place and then renamed, so a
crash never leaves half an export where the output should be. An existing output is refused
unless ``overwrite=True``.

:func:`export_archive` makes the same export inside a temporary folder and returns it as zip
bytes (the Models page's download).

Example::

    >>> export_model("chest-xray-pneumonia", "tflite", "out/chest.tflite")   # doctest: +SKIP
    PosixPath('out/chest.tflite')
    >>> probs = run_tflite("out/chest.tflite", batch)                       # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from medclf_core import __version__
from medclf_core.errors import MedclfError, brief
from medclf_core.io.atomic import json_text, write_bytes_atomically
from medclf_core.registry.store import CARD_FILE, GATE_FILE, load_run, read_card, resolve_run

FORMATS = ("savedmodel", "tflite")
EXPORT_NOTE = "EXPORT.md"
ASSETS_DIR = "assets"


def export_model(run, fmt: str, output: str | os.PathLike, *, models_dir: str | os.PathLike | None = None,
                 overwrite: bool = False) -> Path:
    """Export the run ``run`` (a run folder or a run name in ``models_dir``) as ``fmt`` to ``output``.

    Returns the export's path: the SavedModel folder, or the ``.tflite`` file. Raises
    :class:`MedclfError` for an unknown format, an existing output (without ``overwrite``) or a
    model that cannot be converted.
    """
    fmt = _check_format(fmt)
    output = Path(output)
    if output.exists() and not overwrite:
        raise MedclfError(f"{output} already exists; choose another output or pass --overwrite.")
    model, card = load_run(run, models_dir)
    run_dir = Path(card["run_dir"])
    output.parent.mkdir(parents=True, exist_ok=True)
    exported_card = _exported_card(card, model, fmt)
    note = _export_note(exported_card, fmt, output.name)
    gate_path = run_dir / GATE_FILE
    gate = gate_path.read_bytes() if gate_path.is_file() else None  # read with the model, not minutes later

    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.export-", dir=output.parent))
    try:
        saved = work / "savedmodel"
        _save_savedmodel(model, saved)
        if fmt == "savedmodel":
            assets = saved / ASSETS_DIR
            assets.mkdir(exist_ok=True)
            (assets / CARD_FILE).write_text(json_text(exported_card))
            (assets / EXPORT_NOTE).write_text(note)
            if gate is not None:
                (assets / gate_path.name).write_bytes(gate)
            _replace_folder(saved, output)
        else:
            stem = output.stem if output.suffix else output.name
            data = _convert_tflite(saved)
            sidecars = {output.with_name(f"{stem}.{CARD_FILE}"):
                        json_text(exported_card).encode(),
                        output.with_name(f"{stem}.{EXPORT_NOTE}"): note.encode()}
            gate_side = output.with_name(f"{stem}.{gate_path.name}")
            if gate is not None:
                sidecars[gate_side] = gate
            for path, blob in sidecars.items():  # the card first: a .tflite never appears without it
                write_bytes_atomically(path, blob)
            if gate is None:
                gate_side.unlink(missing_ok=True)  # an overwritten export's gate belongs to another model
            write_bytes_atomically(output, data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output


def export_files(path: str | os.PathLike, fmt: str) -> list[Path]:
    """Every file of the export at ``path`` (as :func:`export_model` returned it), for zipping."""
    path = Path(path)
    if _check_format(fmt) == "savedmodel":
        return sorted(p for p in path.rglob("*") if p.is_file())
    stem = path.stem if path.suffix else path.name
    side = [path.with_name(f"{stem}.{s}") for s in (CARD_FILE, EXPORT_NOTE, GATE_FILE)]
    return [path, *(p for p in side if p.is_file())]


def export_archive(run, fmt: str, *, models_dir: str | os.PathLike | None = None) -> tuple[bytes, str]:
    """``(zip bytes, file name)``: the export of ``run`` as ``fmt``, made in a temporary folder and zipped.

    The zip holds one folder ``<run>-savedmodel/`` (the SavedModel with its ``assets/``), or
    ``<run>.tflite`` with ``<run>.card.json``, ``<run>.EXPORT.md`` (and ``<run>.ood.npz``).
    """
    fmt = _check_format(fmt)
    run_dir = resolve_run(run, models_dir)
    name = read_card(run_dir)["name"] or run_dir.name
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in str(name)) or "model"
    with tempfile.TemporaryDirectory(prefix="medclf-export-") as tmp:
        target = Path(tmp) / (f"{safe}-savedmodel" if fmt == "savedmodel" else f"{safe}.tflite")
        path = export_model(run_dir, fmt, target)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in export_files(path, fmt):
                zf.write(f, f.relative_to(Path(tmp)).as_posix())
    return buf.getvalue(), f"{safe}-{fmt}.zip"


def run_tflite(path: str | os.PathLike, batch: np.ndarray) -> np.ndarray:
    """The probabilities ``(N, K)`` of an exported ``.tflite`` model for float32 pixels ``(N, S, S, C)``
    (0-255): raw model outputs, without the card's temperature."""
    import warnings

    import tensorflow as tf

    x = np.ascontiguousarray(batch, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (LiteRT)
        interpreter = tf.lite.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise MedclfError(f"Unknown export format '{fmt}': choose one of {', '.join(FORMATS)}.")
    return fmt


def _save_savedmodel(model, folder: Path) -> None:
    """The SavedModel with one endpoint ``serve(image)``: a plain (N, S, S, C) float32 tensor in, not a list."""
    import tensorflow as tf

    shape = model.input_shape[0] if isinstance(model.input_shape, list) else model.input_shape
    spec = tf.TensorSpec([None, *shape[1:]], tf.float32, name="image")
    try:
        model.export(str(folder), format="tf_saved_model", verbose=False, input_signature=[spec])
    except Exception as exc:  # noqa: BLE001 - TensorFlow raises many types; the user gets one line
        raise MedclfError(f"The model could not be exported as a SavedModel ({brief(exc)}).") \
            from None


def _convert_tflite(saved: Path) -> bytes:
    import tensorflow as tf

    try:
        return bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
    except Exception as exc:  # noqa: BLE001
        raise MedclfError(f"The model could not be converted to TensorFlow Lite ({brief(exc)}).") \
            from None


def _exported_card(card, model, fmt: str) -> dict:
    """The card as written with an export: the registry card (without the server's ``run_dir``)
    plus ``"export"``: what goes in and out and what the consumer must apply."""
    data = card.to_dict() if hasattr(card, "to_dict") else dict(card)
    data.pop("run_dir", None)
    shape = [None if d is None else int(d) for d in model.input_shape]
    temperature = (data.get("calibration") or {}).get("temperature")
    classes = list(data.get("class_names") or [])
    data["export"] = {
        "format": fmt,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "medclf_version": __version__,
        "source_run": data.get("name"),
        "input": {"shape": shape, "dtype": "float32", "range": "0-255 (raw pixels; rescaling is inside the model)",
                  "channels": "grayscale" if shape[-1] == 1 else "RGB"},
        "output": {"shape": [None, len(classes)], "meaning": "softmax probabilities, raw (not calibrated)",
                   "class_names": classes},
        "signature": "serve (also serving_default)" if fmt == "savedmodel" else "single input, single output",
        "calibration_temperature": temperature,
        "consumer_must_apply": _consumer_steps(data),
        "notice": "Research demo, not for clinical use.",
    }
    return data


def _consumer_steps(card: dict) -> list[str]:
    steps = ["Squash the whole image to the square input size (aspect ratio not kept; OpenCV INTER_AREA when "
             "shrinking, INTER_LINEAR when enlarging, as medclf_core.io.images.to_model_input), convert to grayscale "
             "or RGB as 'input.channels' says, and pass float32 pixels 0-255."]
    t = (card.get("calibration") or {}).get("temperature")
    if t:
        steps.append(f"Apply the calibration temperature T = {float(t):.6g} to the model's probabilities p: "
                     "q = p ** (1/T), renormalised per row (for two classes, q_pos = sigmoid(logit(p_pos) / T)). "
                     "medclf's Predictor does this; the exported model does not.")
    else:
        steps.append("No calibration temperature: use the model's probabilities as they are.")
    if card.get("tta"):
        steps.append(f"Average the probabilities over the test-time views {', '.join(card['tta'])} "
                     "(hflip: the image mirrored left-right) before the temperature, as medclf does.")
    if card.get("threshold") is not None and card.get("positive_class"):
        steps.append(f"Decide '{card['positive_class']}' when its (calibrated) probability is >= "
                     f"{float(card['threshold']):.6g}; otherwise the other class.")
    else:
        steps.append("Decide the most probable class.")
    return steps


def _export_note(card: dict, fmt: str, output_name: str) -> str:
    ex = card["export"]
    where = ("`assets/card.json`, `assets/ood.npz` (when present) and this file sit in the SavedModel's "
             "`assets/` folder" if fmt == "savedmodel" else
             f"the card (`<stem>.card.json`), the out-of-distribution gate (`<stem>.ood.npz`, when present) and this "
             f"note sit beside `{output_name}`")
    usage = ("```python\nimport tensorflow as tf\nm = tf.saved_model.load(PATH)\np = m.serve(x).numpy()   "
             "# x: float32 (N, S, S, C), pixels 0-255\n```" if fmt == "savedmodel" else
             "```python\nimport tensorflow as tf\nit = tf.lite.Interpreter(model_path=PATH)\n"
             "i = it.get_input_details()[0]\nit.resize_tensor_input(i['index'], x.shape); it.allocate_tensors()\n"
             "it.set_tensor(i['index'], x); it.invoke()\np = it.get_tensor(it.get_output_details()[0]['index'])\n```")
    steps = "\n".join(f"{k}. {s}" for k, s in enumerate(ex["consumer_must_apply"], 1))
    return f"""# {card.get('name')} ({fmt})

> **Research demo, not for clinical use.** This model is not a medical device.

Exported by medclf {ex['medclf_version']} on {ex['created']}. Task: {card.get('task') or 'not stated'}.
Classes (output order): {', '.join(ex['output']['class_names'])}. Input: {ex['input']['shape']} float32,
pixels 0-255, {ex['input']['channels']}. Output: softmax probabilities, **raw, not calibrated**.
Where the files are: {where}.

{usage}

## What the consumer must apply (medclf does this in `Predictor`)

{steps}

The out-of-distribution gate (`ood.npz`: class means, shared precision matrix and threshold of a
Mahalanobis distance on the input of the `predictions` layer) needs those penultimate features, which this
export does not output; see `medclf_core/trust/ood.py`.
"""


def _replace_folder(src: Path, dst: Path) -> None:
    """Move the finished folder ``src`` to ``dst`` in one rename (an old ``dst`` is moved aside first)."""
    old = None
    if dst.exists() or dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        if old is not None:
            os.rename(old, dst)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


