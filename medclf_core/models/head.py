"""The classifier head every medclf architecture ends in, and the transfer recipe rebuilds on cached features.

``[Dense(dense_units, relu, "head_dense")] -> [Dropout(dropout, "head_dropout")] -> Dense(num_classes, softmax,
"predictions")``, the last layer float32 even under mixed precision (a stable softmax). The layer names are the
contract: the transfer recipe copies a head fitted on features into the model by these names, and the
out-of-distribution gate reads its features at the input of ``predictions``.

Example::

    >>> import keras
    >>> inputs = keras.Input((8,), name="features")
    >>> model = keras.Model(inputs, classifier_head(inputs, num_classes=3, dense_units=4, dropout=0.5))
    >>> [layer.name for layer in model.layers[1:]], model.output_shape
    (['head_dense', 'head_dropout', 'predictions'], (None, 3))
"""

from __future__ import annotations


def classifier_head(x, num_classes: int, dense_units: int, dropout: float):
    """The head's layers applied to the pooled (or flattened) features ``x``; returns the probabilities tensor.

    ``dense_units=0`` leaves out the hidden dense layer, ``dropout=0`` the dropout.
    """
    from keras import layers

    if dense_units:
        x = layers.Dense(dense_units, activation="relu", name="head_dense")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
