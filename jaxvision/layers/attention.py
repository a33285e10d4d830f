"""Multi-head self-attention over token sequences [B, N, D], in timm's `Attention` layout.

Parameter names follow timm so weights map one to one: `qkv` (attn.qkv, one fused Dense to 3 * D whose
outputs are ordered (3, heads, head_dim) as timm's reshape expects) and `proj` (attn.proj).

The attention itself is a plain function, `attention_fn(q, k, v, mask, dropout) -> out`, so other
attention kernels (a later issue: DCT / Linformer / Nystrom / Performer, selected by name) can be
plugged in behind the same module without changing its parameters or its call signature.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from flax import linen as nn

# timm's ViT init for Linear layers: trunc_normal_(std=0.02), zero bias.
trunc_normal_02 = nn.initializers.truncated_normal(stddev=0.02)


def dot_product_attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, mask: jnp.ndarray | None = None,
                          dropout: Callable[[jnp.ndarray], jnp.ndarray] | None = None) -> jnp.ndarray:
    """softmax(q k^T / sqrt(head_dim)) v for q, k, v [B, heads, N, head_dim]; returns [B, heads, N, head_dim].

    `mask` [B, N] boolean, True for real tokens: padded keys get -inf logits, so they receive no weight
    (each row needs at least one real key, otherwise its softmax is NaN). Logits and softmax are
    computed in float32 whatever the input dtype. `dropout` is applied to the attention weights.
    """
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bhqd,bhkd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
    if mask is not None:
        logits = jnp.where(mask[:, None, None, :].astype(bool), logits, -jnp.inf)
    weights = nn.softmax(logits, axis=-1)
    if dropout is not None:
        weights = dropout(weights)
    return jnp.einsum("bhqk,bhkd->bhqd", weights.astype(v.dtype), v)


class MultiHeadSelfAttention(nn.Module):
    """Self-attention of tokens `x` [B, N, D] with `num_heads` heads of D / num_heads channels.

    `qkv_bias`: bias on the fused q/k/v projection (timm's default True); the output projection
    always has one. `dropout_rate` drops attention weights when `train` is True (needs a 'dropout'
    rng then); deterministic otherwise. `attention_fn` is the attention kernel (see
    `dot_product_attention` for its contract).
    """

    num_heads: int
    qkv_bias: bool = True
    dropout_rate: float = 0.0
    attention_fn: Callable = dot_product_attention
    kernel_init: Callable = trunc_normal_02
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None = None, train: bool = False,
                 query_pos: jnp.ndarray | None = None) -> jnp.ndarray:
        """Returns [B, N, D] in `dtype`; `mask` [B, N] boolean (True = real token) or None.

        `query_pos` [B or 1, N, D] (or None) is added to the queries after their projection, split into
        heads like them (report 003's positional embedding "on the queries"); keys and values keep none.
        """
        b, n, d = x.shape
        if self.num_heads < 1 or d % self.num_heads:
            raise ValueError(f"MultiHeadSelfAttention: width {d} is not divisible by num_heads {self.num_heads}")
        head_dim = d // self.num_heads
        qkv = nn.Dense(3 * d, use_bias=self.qkv_bias, dtype=self.dtype, kernel_init=self.kernel_init,
                       name="qkv")(x)
        qkv = qkv.reshape(b, n, 3, self.num_heads, head_dim).transpose(2, 0, 3, 1, 4)  # [3, B, heads, N, hd]
        q = qkv[0]
        if query_pos is not None:
            pos = jnp.broadcast_to(query_pos, (b, n, d)).astype(q.dtype)
            q = q + pos.reshape(b, n, self.num_heads, head_dim).transpose(0, 2, 1, 3)
        dropout = None
        if self.dropout_rate > 0:
            dropout = nn.Dropout(self.dropout_rate, deterministic=not train, name="attn_drop")
        out = self.attention_fn(q, qkv[1], qkv[2], mask, dropout)
        out = out.transpose(0, 2, 1, 3).reshape(b, n, d)
        return nn.Dense(d, dtype=self.dtype, kernel_init=self.kernel_init, name="proj")(out)
