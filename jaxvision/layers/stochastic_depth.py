"""Stochastic depth (Huang et al. 2016): drop whole residual branches per sample while training."""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn


class StochasticDepth(nn.Module):
    """torchvision's StochasticDepth in 'row' mode: during training each sample's residual branch is zeroed with
    probability `rate` and the kept ones are scaled by 1 / (1 - rate); identity when `deterministic`.
    Draws from the 'dropout' rng stream."""

    rate: float
    deterministic: bool | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool | None = None) -> jnp.ndarray:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        # Dropout broadcast over every axis but the batch one: one keep / drop decision per sample.
        return nn.Dropout(self.rate, broadcast_dims=tuple(range(1, x.ndim)), deterministic=deterministic)(x)
