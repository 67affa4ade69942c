from typing import ClassVar

import jax
import jax.numpy as jnp

from .base import AbstractHead


class Classifier(AbstractHead):
    """Model selection under cross-entropy: the network learns the posterior model
    probabilities `P(model | x)` under the prior over models."""

    classifies: ClassVar[bool] = True

    def n_outputs(self, k, n_classes):
        if n_classes < 2:
            raise ValueError("A Classifier head needs a model-selection task (sgjax.ModelSelection).")
        return n_classes

    def loss(self, out, y):
        label = y[0].astype(jnp.int32)
        return -jax.nn.log_softmax(out)[label]

    def summarise(self, out, k, key, n_samples):
        return {"probabilities": jax.nn.softmax(out)}
