"""Seed ensembles as one flat functional model: averaging a few independently trained copies.

Models trained from different seeds make different mistakes on small medical
datasets; averaging them lowers the variance that a single split hides. Instead of
keeping N files and a loop, :func:`merge_members` builds **one** Keras model:

- every member's layers are copied, renamed ``m<k>_<layer>`` and run on one shared
  input, so the graph stays flat (Grad-CAM can reach every member's layers);
- the members' features are concatenated and a single ``predictions`` Dense holds
  their classifier weights stacked and divided by N, so its logits are exactly the
  mean of the members' logits (softmax of the mean logit: a geometric-mean ensemble).

The merged model is saved, loaded, served and explained like any other model. Its
Grad-CAM is the sum of the members' maps at their own ``cam_layer`` (see
:func:`medclf_core.explain.cams.heatmaps`), which is Grad-CAM of the mean logit.
The layer copying is :func:`medclf_core.models.graph.replay_layers`, as for a heat map's flat copy.

:func:`split_member` takes member ``k`` back out as an ordinary model: fine-tuning
an ensemble with as many members starts each new member from the matching old one.

Example::

    >>> from medclf_core.models.architectures import build_model
    >>> members = [build_model("simple_cnn", 2, 32, 1) for _ in range(3)]  # tiny and untrained
    >>> merged = merge_members(members)
    >>> merged.name, count_members(merged), merged.get_layer("m2_conv3").name
    ('simple_cnn_x3', 3, 'm2_conv3')
    >>> [layer.name for layer in split_member(merged, 2).layers][:3]
    ['image', 'rescale', 'conv1']
    >>> member_layer_names("block4_relu", 3)
    ['m1_block4_relu', 'm2_block4_relu', 'm3_block4_relu']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medclf_core.models.graph import copy_weights, fresh_layer, replay_layers

HEAD = "predictions"
FEATURES = "member_features"
MAX_MEMBERS = 10


def check_members(n) -> int:
    """``n`` if it is a valid number of ensemble members (1 = one ordinary model), else ValueError."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_MEMBERS:
        raise ValueError(f"ensemble is the number of models to average, 1 to {MAX_MEMBERS} (got {n!r}).")
    return n


def member_prefix(k: int) -> str:
    """Layer-name prefix of member ``k`` (1-based)."""
    return f"m{k}_"


def member_layer_names(layer: str, members: int) -> list[str]:
    """The name ``layer`` takes in each member of a merged model."""
    return [member_prefix(k) + layer for k in range(1, members + 1)]


def _replay(trunk, inputs, rename):
    """``(outputs, copies)``: ``inputs`` run through fresh copies of ``trunk``'s layers named ``rename(name)``."""
    return replay_layers(trunk, inputs, lambda layer: fresh_layer(layer, rename(layer.name)))


def merge_members(members: Sequence, name: str | None = None):
    """One flat functional model whose logits are the mean of the ``members``' logits.

    Every member must take the same input shape and end in a softmax Dense named
    ``predictions`` with the same number of classes (as every registered architecture
    does). The members are not modified.
    """
    import keras

    if not members:
        raise ValueError("An ensemble needs at least one member.")
    shapes = {tuple(m.input_shape[1:]) for m in members}
    heads = [m.get_layer(HEAD) for m in members]
    units = {h.units for h in heads}
    if len(shapes) != 1 or len(units) != 1:
        raise ValueError("Ensemble members must share the input shape and the number of classes.")

    inputs = keras.Input(shapes.pop(), name="image")
    replayed = [_replay(keras.Model(member.inputs, member.get_layer(HEAD).input), inputs,
                        lambda name, k=k: member_prefix(k) + name)
                for k, member in enumerate(members, 1)]
    features = [outputs for outputs, _ in replayed]
    joined = keras.layers.Concatenate(name=FEATURES)(features) if len(features) > 1 else features[0]
    head = keras.layers.Dense(units.pop(), activation="softmax", dtype="float32", name=HEAD)
    merged = keras.Model(inputs, head(joined), name=name or f"{members[0].name}_x{len(members)}")
    for _, copies in replayed:
        copy_weights(copies)
    kernels = [np.asarray(h.kernel, dtype=np.float32) for h in heads]
    biases = [np.asarray(h.bias, dtype=np.float32) for h in heads]
    head.set_weights([np.concatenate(kernels, axis=0) / len(members), np.mean(biases, axis=0)])
    return merged


def count_members(model) -> int:
    """How many members a merged model holds (1 for an ordinary model)."""
    names = {layer.name for layer in model.layers}
    if FEATURES not in names:
        return 1
    inputs = model.get_layer(FEATURES).input
    return len(inputs) if isinstance(inputs, list | tuple) else 1


def split_member(merged, k: int, name: str | None = None):
    """Member ``k`` (1-based) of a merged model as an ordinary model with its own layer names.

    Its classifier is the member's own slice of the merged ``predictions`` layer
    (times N, undoing the averaging) with the merged bias, the mean of the members'
    biases: the members' own biases are not kept by :func:`merge_members`.
    """
    import keras

    n = count_members(merged)
    if n < 2 or not 1 <= k <= n:
        raise ValueError(f"This model holds {n} member(s); member {k} does not exist.")
    features = list(merged.get_layer(FEATURES).input)
    prefix = member_prefix(k)
    inputs = keras.Input(tuple(merged.input_shape[1:]), name="image")
    x, copies = _replay(keras.Model(merged.inputs, features[k - 1]), inputs, lambda name: name.removeprefix(prefix))
    head = merged.get_layer(HEAD)
    dense = keras.layers.Dense(head.units, activation="softmax", dtype="float32", name=HEAD)
    model = keras.Model(inputs, dense(x), name=name or merged.name)
    copy_weights(copies)
    start = sum(int(f.shape[-1]) for f in features[:k - 1])
    width = int(features[k - 1].shape[-1])
    kernel, bias = (np.asarray(w) for w in head.get_weights())
    dense.set_weights([kernel[start:start + width] * n, bias])
    return model
