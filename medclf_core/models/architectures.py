"""Model registry: one factory signature, one default config per architecture.

Every factory is ``build(num_classes, image_size, channels, **options) -> keras.Model``
and returns a **flat functional** graph (no nested sub-models, no Sequential), so
Grad-CAM can reach any inner layer. Every model:

- takes raw images, float32 in 0..255, shape (image_size, image_size, channels):
  rescaling / ImageNet preprocessing is inside the model, so a saved ``.keras``
  file needs nothing but pixels;
- ends in a float32 ``Dense(num_classes, activation="softmax", name="predictions")``
  (float32 even under mixed precision, for a stable softmax);
- names the layer Grad-CAM should look at in :attr:`ArchSpec.cam_layer`.

Example::

    >>> spec = get_architecture("simple_cnn")
    >>> model = spec.build(num_classes=3, image_size=64, channels=1)
    >>> model.output_shape
    (None, 3)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from medclf_core.models.efficientnet_lite import (LITE_VARIANTS, lite_block_count, lite_trunk, load_lite_weights,
                                                 weights_env)
from medclf_core.models.head import classifier_head

IMAGENET_WEIGHTS_ENV = "MEDCLF_RESNET50_WEIGHTS"
# How a model is trained: ``transfer`` fits a head on cached features of a pretrained backbone
# (medclf_core.training.transfer), ``scratch`` fits the whole model on images; ``auto`` picks transfer when
# the architecture has pretrained weights and they loaded.
RECIPES = ("auto", "transfer", "scratch")


@dataclass(frozen=True)
class ArchSpec:
    """Everything specific to one architecture, so training and the app need no per-architecture branches.

    ``pretrained``: where its pretrained weights come from (None: trained from scratch).
    ``preprocessing``: what the model does to raw 0..255 pixels (it is inside the model).
    ``feature_layer``: the layer whose output feeds the classifier (pooled features: the transfer
    recipe caches them, the out-of-distribution gate measures distances on them).
    ``fine_tune_from``: the first layer that trains when a pretrained model is fine-tuned.
    ``cached_fine_tune_from``: the block whose input activations the transfer recipe caches, so that
    ``fine_tune_epochs > 0`` trains that block and those above it on the cache
    (:mod:`medclf_core.training.top_tuning`); None: fine-tuning runs on images from ``fine_tune_from``.
    """

    name: str
    build: Callable
    cam_layer: str
    description: str
    defaults: dict = field(default_factory=dict)   # training defaults (image_size, channels, lr, batch_size, ...)
    pretrained: str | None = None
    preprocessing: str = "x / 255"
    feature_layer: str = "gap"
    fine_tune_from: str | None = None
    cached_fine_tune_from: str | None = None

    @property
    def is_pretrained(self) -> bool:
        return self.pretrained is not None


ARCHITECTURES: dict[str, ArchSpec] = {}


def register(name: str, *, cam_layer: str, description: str, pretrained: str | None = None,
             preprocessing: str = "x / 255", feature_layer: str = "gap", fine_tune_from: str | None = None,
             cached_fine_tune_from: str | None = None, **defaults):
    def deco(fn):
        ARCHITECTURES[name] = ArchSpec(name, fn, cam_layer, description, defaults, pretrained, preprocessing,
                                       feature_layer, fine_tune_from, cached_fine_tune_from)
        return fn
    return deco


def get_architecture(name: str) -> ArchSpec:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"Unknown architecture '{name}'. Choose from: {', '.join(ARCHITECTURES)}.") from None


def list_architectures() -> list[str]:
    return list(ARCHITECTURES)


def image_size_choices(suggested=()) -> list[int]:
    """The input sizes a form offers: ``suggested`` and every registered architecture's native size, sorted
    (the Train page: TrainConfig's suggested sizes, and EfficientNet-Lite1/Lite2's 240/260 px).

    >>> image_size_choices((64, 224))
    [64, 224, 240, 260]
    """
    native = {int(spec.defaults["image_size"]) for spec in ARCHITECTURES.values() if "image_size" in spec.defaults}
    return sorted({int(v) for v in suggested} | native)


@register("simple_cnn", cam_layer="conv3", feature_layer="flatten",
          description="Small CNN: Conv32-Pool, Conv64-Pool, Conv128-Pool, Dense128, Dropout 0.5.",
          image_size=224, channels=3, batch_size=32, learning_rate=1e-3, epochs=10)
def simple_cnn(num_classes: int, image_size: int = 224, channels: int = 3, *, dense_units: int = 128,
               dropout: float = 0.5, filters: tuple[int, ...] = (32, 64, 128)):
    """The seed-001 CNN, exactly: three conv+pool stages, Flatten, Dense(128), Dropout(0.5)."""
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for i, f in enumerate(filters, 1):
        x = layers.Conv2D(f, 3, activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, classifier_head(x, num_classes, dense_units, dropout), name="simple_cnn")


@register("bn_cnn", cam_layer="block4_relu",
          description="BatchNorm CNN: blocks of Conv2D + BatchNorm + MaxPool, global pooling, Dense, Dropout.",
          image_size=224, channels=3, batch_size=32, learning_rate=1e-3, epochs=30)
def bn_cnn(num_classes: int, image_size: int = 224, channels: int = 3, *,
           filters: tuple[int, ...] = (32, 64, 128, 256), convs_per_block: int = 2, dense_units: int = 128,
           dropout: float = 0.5, bn_momentum: float = 0.9):
    """Seed 000's deeper CNN: each block is (Conv-BN-ReLU) x ``convs_per_block`` then MaxPool.

    Global average pooling before the dense head keeps the model small (a Flatten
    at 224 px would hold most of the weights) and the last conv block spatial, which
    Grad-CAM needs. BatchNorm momentum 0.9 (Keras default 0.99) lets the moving statistics
    catch up within an epoch or two on small medical datasets; with 0.99, validation accuracy sits
    at chance for the first epochs and early stopping judges a model that is not there yet.
    """
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for b, f in enumerate(filters, 1):
        for c in range(1, convs_per_block + 1):
            x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"block{b}_conv{c}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{b}_bn{c}")(x)
            x = layers.Activation("relu", name=f"block{b}_relu" if c == convs_per_block else f"block{b}_relu{c}")(x)
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, classifier_head(x, num_classes, dense_units, dropout), name="bn_cnn")


def resolve_imagenet_weights(weights: str | None) -> str | None:
    """Where ResNet-50's ImageNet weights come from.

    ``"imagenet"`` downloads through Keras (cached in ``~/.keras/models``); a file
    path loads a local ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``;
    ``None`` trains from scratch. The environment variable
    ``MEDCLF_RESNET50_WEIGHTS`` supplies a path when ``weights="imagenet"`` and
    the machine is offline.
    """
    if weights in (None, "", "none", "None"):
        return None
    if weights != "imagenet":
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"ResNet-50 weights file not found: {weights}")
        return weights
    env = os.environ.get(IMAGENET_WEIGHTS_ENV)
    if env and os.path.isfile(env):
        return env
    return "imagenet"


@register("resnet50", cam_layer="conv5_block3_out",
          description="ResNet-50 transfer learning: early layers frozen, new head, optional fine-tuning.",
          pretrained=f"ImageNet via Keras (download), or a local file in ${IMAGENET_WEIGHTS_ENV}",
          preprocessing="RGB -> BGR, minus the ImageNet channel means (caffe style)",
          fine_tune_from="conv4_block1_1_conv",
          image_size=224, channels=3, batch_size=32, learning_rate=1e-3, epochs=10, weights="imagenet",
          trainable_from="conv5_block1_1_conv", fine_tune_epochs=0, fine_tune_learning_rate=1e-5)
def resnet50(num_classes: int, image_size: int = 224, channels: int = 3, *, weights: str | None = "imagenet",
             trainable_from: str | None = "conv5_block1_1_conv", dense_units: int = 256, dropout: float = 0.5):
    """ResNet-50 with a new head, built flat: the ResNet layers live in the same graph.

    With ImageNet weights, layers before ``trainable_from`` are frozen (BatchNorm
    in inference mode). Without them (offline, no local file) every layer trains
    from scratch and a warning says so. Grayscale input is repeated to 3 channels,
    then converted to the BGR mean-subtracted form ImageNet weights expect, by a
    fixed 1x1 convolution (a plain layer, so the model loads in Keras safe mode).
    """
    import keras
    import numpy as np
    from keras import layers

    source = resolve_imagenet_weights(weights)
    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = inputs
    if channels == 1:
        x = layers.Concatenate(name="gray_to_rgb")([inputs, inputs, inputs])
    # caffe-style preprocessing: RGB -> BGR, subtract the ImageNet means
    to_bgr = layers.Conv2D(3, 1, use_bias=True, trainable=False, name="imagenet_preprocess")
    x = to_bgr(x)
    perm = np.zeros((1, 1, 3, 3), dtype="float32")
    for out_c, in_c in enumerate((2, 1, 0)):
        perm[0, 0, in_c, out_c] = 1.0
    to_bgr.set_weights([perm, -np.array([103.939, 116.779, 123.68], dtype="float32")])

    base = keras.applications.ResNet50(include_top=False, weights=None, input_tensor=x)
    if source is not None:
        source = _load_imagenet_into(base, source, image_size)
    x = layers.GlobalAveragePooling2D(name="gap")(base.output)
    model = keras.Model(inputs, classifier_head(x, num_classes, dense_units, dropout), name="resnet50")
    model.pretrained = source is not None  # read by training; not saved
    if source is not None and trainable_from:
        set_trainable_from(model, trainable_from)
    return model


def _load_imagenet_into(base, source: str, image_size: int) -> str | None:
    """Copy ImageNet weights into the flat ResNet layers by layer name.

    The weights are loaded into a stand-alone ResNet-50 first (Keras download, or
    a local file in either the Keras 3 or the legacy ``.h5`` format), because a
    file's layer order does not include our preprocessing layers. Returns the
    source, or None (with a warning) when the weights cannot be had.
    """
    import keras

    try:
        donor = keras.applications.ResNet50(include_top=False, weights=source,
                                            input_shape=(image_size, image_size, 3))
    except Exception as exc:  # offline: URLError, OSError or a plain Exception from the downloader
        warnings.warn(f"ImageNet weights for ResNet-50 could not be loaded ({type(exc).__name__}: {exc}); "
                      f"training from scratch. Set {IMAGENET_WEIGHTS_ENV} to a local weights file to use them.",
                      stacklevel=3)
        return None
    names = {layer.name for layer in base.layers}
    for layer in donor.layers:
        if layer.weights and layer.name in names:
            base.get_layer(layer.name).set_weights(layer.get_weights())
    return source


def set_trainable_from(model, layer_name: str) -> None:
    """Freeze every layer before ``layer_name``; that layer and all after it train.

    The head always trains; the fixed preprocessing convolution never does.
    """
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        raise ValueError(f"Layer '{layer_name}' is not in model '{model.name}'.")
    start = names.index(layer_name)
    for i, layer in enumerate(model.layers):
        layer.trainable = i >= start and layer.name != "imagenet_preprocess"


def build_model(arch: str, num_classes: int, image_size: int, channels: int, **options):
    """Build ``arch`` with only the options its factory accepts (training keys are ignored)."""
    import inspect

    spec = get_architecture(arch)
    accepted = inspect.signature(spec.build).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted and k not in ("num_classes", "image_size", "channels")}
    model = spec.build(num_classes, image_size=image_size, channels=channels, **kwargs)
    if "imagenet_preprocess" in [layer.name for layer in model.layers]:
        model.get_layer("imagenet_preprocess").trainable = False
    return model


# ---------------------------------------------------------------------------- EfficientNet-Lite

def efficientnet_lite(variant: str, num_classes: int, image_size: int, channels: int, *,
                      weights: str | None = "imagenet", dropout: float = 0.2, dense_units: int = 0):
    """EfficientNet-Lite ``variant`` with a new classifier, built flat so Grad-CAM reaches ``top_relu``.

    ``weights="imagenet"`` reads the variant's pinned ImageNet file (offline, no PyTorch);
    ``None`` starts from random weights (tests). With ImageNet weights the whole trunk
    is frozen: training fits the head (on cached features) and fine-tuning then
    unfreezes from :attr:`ArchSpec.fine_tune_from`.
    """
    import keras
    from keras import layers

    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = layers.GlobalAveragePooling2D(name="gap")(lite_trunk(inputs, channels, variant))
    model = keras.Model(inputs, classifier_head(x, num_classes, dense_units, dropout), name=f"efficientnet_{variant}")
    model.pretrained = None  # read by training; not saved
    if weights not in (None, "", "none", "None"):
        model.pretrained = load_lite_weights(model, None if weights == "imagenet" else str(weights), variant=variant)
        set_trainable_from(model, "gap")
    return model


def _register_lite(variant: str, params: str) -> None:
    """Register ``efficientnet_<variant>`` at its native input size; fine-tuning unfreezes its top two blocks."""
    v = LITE_VARIANTS[variant]

    def build(num_classes: int, image_size: int = v.image_size, channels: int = 1, *,
              weights: str | None = "imagenet", dropout: float = 0.2, dense_units: int = 0):
        return efficientnet_lite(variant, num_classes, image_size, channels, weights=weights, dropout=dropout,
                                 dense_units=dense_units)

    build.__name__ = build.__qualname__ = f"efficientnet_{variant}"
    build.__doc__ = f"EfficientNet-{variant.capitalize()} with a new classifier (:func:`efficientnet_lite`)."
    register(f"efficientnet_{variant}", cam_layer="top_relu", feature_layer="gap",
             description=f"EfficientNet-{variant.capitalize()} (ImageNet, {params} trunk parameters, ReLU6, no "
                         f"squeeze-excitation, native {v.image_size} px) with a new head: a head on cached frozen "
                         f"features, then optional fine-tuning of the top blocks.",
             pretrained=f"ImageNet, from the pinned package {v.pip_name}==0.1.0 (Apache-2.0), or a local file "
                        f"in ${weights_env(variant)}",
             preprocessing="(x - 127) / 128 per channel; grayscale repeated to 3 channels inside the model",
             fine_tune_from=f"block{lite_block_count(variant) - 2}_expand_conv",
             # fine-tuning on cached activations: measured on Lite0 only (bench/finetune.py)
             cached_fine_tune_from="block14" if variant == "lite0" else None,
             image_size=v.image_size, channels=1, batch_size=32, learning_rate=1e-3, epochs=60, weights="imagenet",
             fine_tune_epochs=0, fine_tune_learning_rate=1e-4)(build)


for _variant_name, _params in (("lite0", "3.4 M"), ("lite1", "4.2 M"), ("lite2", "4.9 M")):
    _register_lite(_variant_name, _params)
