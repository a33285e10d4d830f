"""Pre-norm transformer building blocks shared by ViT, the latent transformer and cross-attention heads.

Parameter names follow timm (`norm1`, `attn/qkv|proj`, `norm2`, `mlp/fc1|fc2`) so ViT weights map one to one.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.attention import MultiHeadSelfAttention, dot_product_attention, trunc_normal_02
from jaxvision.layers.efficient_attention import make_attention, parse_attention_spec

LN_EPS = 1e-6


class Mlp(nn.Module):
    """Dense(hidden) -> exact GELU -> dropout -> Dense(out) -> dropout (timm's Mlp: fc1 / fc2)."""

    hidden_features: int
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        out_features = x.shape[-1]
        x = nn.Dense(self.hidden_features, dtype=self.dtype, kernel_init=trunc_normal_02, name="fc1")(x)
        x = nn.gelu(x, approximate=False)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(out_features, dtype=self.dtype, kernel_init=trunc_normal_02, name="fc2")(x)
        return nn.Dropout(self.dropout_rate, deterministic=not train)(x)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).

    `dropout_rate` drops the attention and MLP outputs (timm's proj_drop / mlp drop);
    `attention_dropout_rate` drops attention weights (timm's attn_drop). `attention` is the attention
    spec of `jaxvision.layers.efficient_attention.make_attention` ("vanilla", "dct-0.25", "nystrom-32",
    ...); every kind keeps the `attn/qkv|proj` parameters. `attention_fn`, the kernel of the vanilla
    attention (see `jaxvision.layers.attention.dot_product_attention`), can only be changed with "vanilla".
    Optional positional embeddings [B or 1, N, D] at call time: `input_pos` is added to the tokens that
    enter norm1 (the residual branch keeps the tokens without it), `query_pos` to the projected queries.
    """

    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    attention_fn: Callable = dot_product_attention
    attention: str = "vanilla"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool, mask: jnp.ndarray | None = None,
                 query_pos: jnp.ndarray | None = None, input_pos: jnp.ndarray | None = None) -> jnp.ndarray:
        y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm1")(x if input_pos is None else x + input_pos)
        if parse_attention_spec(self.attention).kind == "vanilla":
            attn = MultiHeadSelfAttention(self.num_heads, self.qkv_bias, self.attention_dropout_rate,
                                          self.attention_fn, dtype=self.dtype, name="attn")
        elif self.attention_fn is not dot_product_attention:
            raise ValueError(f"EncoderBlock: attention_fn is only used with attention='vanilla', got "
                             f"attention={self.attention!r}")
        else:
            attn = make_attention(self.attention, self.num_heads, self.qkv_bias, self.attention_dropout_rate,
                                  self.dtype, name="attn")
        y = attn(y, mask, train, query_pos)
        x = x + nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm2")(x)
        return x + Mlp(int(x.shape[-1] * self.mlp_ratio), self.dropout_rate, self.dtype, name="mlp")(y, train)
