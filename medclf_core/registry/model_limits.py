"""What a ``.keras`` file says about its model, read before the model is built, and the limits it must keep.

Keras builds a model from its ``config.json`` before it loads a single weight: a config that claims an
input of 100 000 x 100 000 pixels, or a layer of a billion units, allocates that much memory on the
first prediction (or already while loading) and the process is killed for memory; in the app that
takes the server down for every user. So the config is read from the zip as JSON, without Keras, and
checked against the limits below (and for a Lambda layer: Python code); a model that breaks one is refused with a plain :class:`ModelError`
(:func:`check_model_config`) and is listed as unusable with the reason
(:func:`medclf_core.registry.store.scan_registry`).

Limits (the bundled models take 224 x 224 images and have about 4 million parameters):

- :data:`MAX_INPUT_SIDE`: each side of the input image, in pixels; the input is one image
  ``(batch, side, side, 1 or 3)``;
- :data:`MAX_TENSOR_ELEMENTS`: the values of any one tensor the config states (per image);
- :data:`MAX_PARAMETERS`: the parameters counted from the config (dense, convolution,
  normalisation and embedding layers, from each layer's stated input shape; a layer of another kind counts 0);
- :data:`MAX_CONFIG_BYTES`: the size of ``config.json`` itself.

Example::

    >>> cfg = {"class_name": "Functional", "config": {"layers": [
    ...     {"class_name": "InputLayer", "config": {"batch_shape": [None, 50000, 50000, 3]}}]}}
    >>> model_facts(cfg)
    ModelFacts(input_shapes=[(50000, 50000, 3)], parameters=0, largest_tensor=7500000000)
    >>> check_model_config(cfg, "big.keras")
    Traceback (most recent call last):
    ...
    medclf_core.errors.ModelError: The model file big.keras takes 50000 x 50000 x 3 images (limit 1024 x 1024, 1 or 3 channels); refused before building it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from medclf_core.errors import ModelError

MAX_INPUT_SIDE = 1024
MAX_TENSOR_ELEMENTS = 2**25  # 33.5 M values (128 MB in float32) per image in any one stated tensor
MAX_PARAMETERS = 150_000_000  # ResNet50 has 25 M, EfficientNet-B7 66 M
MAX_CONFIG_BYTES = 16 * 2**20  # the bundled models' configs are about 150 kB


@dataclass
class ModelFacts:
    """``input_shapes``: the stated input shapes without the batch dimension; ``parameters``: the count
    from the config; ``largest_tensor``: the most values per image of any stated tensor shape."""

    input_shapes: list[tuple] = field(default_factory=list)
    parameters: int = 0
    largest_tensor: int = 0


def read_config(zf, label: str) -> dict:
    """The parsed ``config.json`` of an open ``.keras`` zip, bounded in size; a plain error otherwise."""
    info = zf.getinfo("config.json")
    if info.file_size > MAX_CONFIG_BYTES:
        raise ModelError(f"The model file {label} has a {info.file_size / 2**20:.0f} MB config "
                         f"(limit {MAX_CONFIG_BYTES // 2**20} MB); refused.")
    try:
        with zf.open(info) as fh:
            cfg = json.loads(fh.read(MAX_CONFIG_BYTES + 1))
    except (ValueError, OSError, RecursionError, EOFError):
        raise ModelError(f"The model file {label} is damaged or not a Keras model (its config is not JSON).") \
            from None
    if not isinstance(cfg, dict):
        raise ModelError(f"The model file {label} is damaged or not a Keras model (its config is not an object).")
    return cfg


def check_model_config(cfg: dict, label: str, *, allow_code: bool = False) -> ModelFacts:
    """The facts of a model config, or :class:`ModelError` when one breaks a limit (or, unless
    ``allow_code``, holds a Lambda layer)."""
    if not allow_code and any(layer.get("class_name") == "Lambda" for layer, _ in _layers(cfg)):
        raise ModelError("This model contains custom Python code (a Lambda layer) and was refused: "
                         "loading it could run arbitrary code.")
    facts = model_facts(cfg)
    if not facts.input_shapes:
        raise ModelError(f"The model file {label} states no image input; refused.")
    if len(facts.input_shapes) > 1:
        raise ModelError(f"The model file {label} takes {len(facts.input_shapes)} inputs; "
                         "medclf models take one image.")
    shape = facts.input_shapes[0]
    text = " x ".join("?" if s is None else str(s) for s in shape)
    if not (len(shape) == 3 and all(_is_int(s) for s in shape) and shape[0] <= MAX_INPUT_SIDE
            and shape[1] <= MAX_INPUT_SIDE and shape[2] in (1, 3)):
        raise ModelError(f"The model file {label} takes {text} images (limit {MAX_INPUT_SIDE} x {MAX_INPUT_SIDE}, "
                         "1 or 3 channels); refused before building it.")
    if facts.largest_tensor > MAX_TENSOR_ELEMENTS:
        raise ModelError(f"The model file {label} states a layer of {facts.largest_tensor:,} values per image "
                         f"(limit {MAX_TENSOR_ELEMENTS:,}); refused before building it.")
    if facts.parameters > MAX_PARAMETERS:
        raise ModelError(f"The model file {label} has about {facts.parameters:,} parameters "
                         f"(limit {MAX_PARAMETERS:,}); refused before building it.")
    return facts


def model_facts(cfg: dict) -> ModelFacts:
    """Input shapes, parameter count and largest stated tensor of a Keras model config (nested models included)."""
    facts = ModelFacts()
    for layer, depth in _layers(cfg):
        conf = layer.get("config") if isinstance(layer.get("config"), dict) else {}
        if depth == 0 and (layer.get("class_name") == "InputLayer" or "batch_input_shape" in conf):
            shape = conf.get("batch_shape", conf.get("batch_input_shape"))
            if isinstance(shape, list) and shape:
                facts.input_shapes.append(tuple(shape[1:]))
        for shape in _stated_shapes(layer):
            facts.largest_tensor = max(facts.largest_tensor, _elements(shape))
        facts.parameters += _parameters(layer.get("class_name"), conf, _input_channels(layer))
    for shape in facts.input_shapes:
        facts.largest_tensor = max(facts.largest_tensor, _elements(shape))
    return facts


def _layers(node, depth: int = 0):
    """``(layer, depth)`` of every layer dict in a config, nested functional and sequential models included
    (depth 0: the model's own layers, whose input layers are the model's inputs)."""
    if depth > 50 or not isinstance(node, dict):
        return
    layers = (node.get("config") or {}).get("layers") if isinstance(node.get("config"), dict) else None
    if not isinstance(layers, list):
        return
    for layer in layers:
        if isinstance(layer, dict):
            yield layer, depth
            yield from _layers(layer, depth + 1)


def _stated_shapes(layer: dict) -> list:
    """The shapes a layer's config states: its build input shape and its input tensors' shapes."""
    shapes = []
    build = layer.get("build_config")
    if isinstance(build, dict) and isinstance(build.get("input_shape"), list):
        shapes.append(build["input_shape"][1:])
    for node in layer.get("inbound_nodes") or []:
        args = node.get("args") if isinstance(node, dict) else None
        for arg in args or []:
            conf = arg.get("config") if isinstance(arg, dict) else None
            if isinstance(conf, dict) and isinstance(conf.get("shape"), list):
                shapes.append(conf["shape"][1:])
    return shapes


def _input_channels(layer: dict) -> int | None:
    """The last dimension of the layer's stated input, when it states one."""
    for shape in _stated_shapes(layer):
        if shape and _is_int(shape[-1]):
            return int(shape[-1])
    return None


def _parameters(kind, conf: dict, channels: int | None) -> int:
    """Parameters of one layer as its config states them (0 for kinds without weights or not known here)."""
    c = channels or 1
    bias = 1 if conf.get("use_bias", True) else 0
    kernel = _product(conf.get("kernel_size"))
    if kind == "Dense":
        return _num(conf.get("units")) * (c + bias)
    if kind in ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
        groups = max(_num(conf.get("groups", 1)), 1)
        return _num(conf.get("filters")) * (kernel * c // groups + bias)
    if kind in ("DepthwiseConv2D", "DepthwiseConv1D"):
        return c * _num(conf.get("depth_multiplier", 1)) * (kernel + bias)
    if kind in ("SeparableConv2D", "SeparableConv1D"):
        dm = _num(conf.get("depth_multiplier", 1))
        return c * dm * kernel + c * dm * _num(conf.get("filters")) + _num(conf.get("filters")) * bias
    if kind == "BatchNormalization":
        return 4 * c  # scale, offset, moving mean and variance
    if kind in ("LayerNormalization", "GroupNormalization"):
        return 2 * c
    if kind == "Embedding":
        return _num(conf.get("input_dim")) * _num(conf.get("output_dim"))
    return 0


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _num(v) -> int:
    return int(v) if _is_int(v) else 0


def _product(v) -> int:
    if _is_int(v):
        return int(v)
    if isinstance(v, list) and v and all(_is_int(x) for x in v):
        return math.prod(v)
    return 1


def _elements(shape) -> int:
    """Values per image of a shape without its batch dimension (unknown dimensions count 1)."""
    if not isinstance(shape, (list, tuple)):
        return 0
    return math.prod(int(s) if _is_int(s) else 1 for s in shape)


# A loaded model's shape, as medclf needs it: one square image in, one probability per class out.

def image_input(model) -> tuple[int, int]:
    """``(side, channels)`` of a model taking one square image, else a plain :class:`ModelError`."""
    shapes = model.input_shape
    if isinstance(shapes, list):
        if len(shapes) != 1:
            raise ModelError(f"This model takes {len(shapes)} inputs; medclf models take one image.")
        shapes = shapes[0]
    shape = tuple(shapes[1:])
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise ModelError(f"This model expects input of shape {shape}; medclf needs images of shape "
                         "(size, size, 1) for grayscale or (size, size, 3) for colour.")
    if shape[0] is None or shape[1] is None or shape[0] != shape[1]:
        raise ModelError(f"This model expects {shape[0]}x{shape[1]} images; medclf needs a fixed square size.")
    return int(shape[0]), int(shape[2])


def class_outputs(model) -> int:
    """Number of classes of a model with one (N, K) probability output, else :class:`ModelError`."""
    shape = model.output_shape
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ModelError(f"This model has {len(shape)} outputs; medclf needs one output of class probabilities.")
        shape = shape[0]
    if len(shape) != 2 or not shape[1] or shape[1] < 2:
        raise ModelError(f"This model's output has shape {tuple(shape)}; medclf needs one probability per class "
                         "(at least two classes).")
    return int(shape[1])
