"""The self-attention family behind one interface, selected by a spec string (thesis ch. 4, DCT-Former).

`make_attention(spec, num_heads, ...)` returns a module called as `module(x [B, N, D], mask [B, N] bool or
None (True = real token), train, query_pos=None) -> [B, N, D]`. Every kind keeps timm's `qkv` / `proj`
Dense layers (Linformer adds `seq_proj_k` / `seq_proj_v`), so a checkpoint moves between kinds.

Spec: `KIND` or `KIND-SIZE`; SIZE is a count (`dct-32`) or a fraction in (0, 1] of the sequence length n
(`dct-0.25`: n_bar = round(0.25 n), at least 1). Kinds and what SIZE means:
- `vanilla`: exact softmax attention (`MultiHeadSelfAttention`), no size.
- `fused`: the same, with `jax.nn.dot_product_attention` as the kernel (for benchmarking).
- `dct` / `dct_fft` (default 0.25): Algorithm 1, n_bar DCT coefficients; D_bar as a matrix / by FFT.
- `dct_ideal` (default 0.25): Algorithm 2, the full softmax matrix E compressed to n_bar x n_bar and back.
- `linformer` (default 0.125): Wang et al. 2020, keys/values projected along the sequence to k tokens.
- `nystrom` (default 0.125): Xiong et al. 2021, m landmarks (segment means), iterative pseudo-inverse.
- `performer` (default 0.125): Choromanski et al. 2021 FAVOR+, m positive orthogonal random features.
Sizes that count tokens (all but performer's features) are capped at n.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxvision.layers.attention import MultiHeadSelfAttention, dot_product_attention, trunc_normal_02
from jaxvision.ops.dct import dct, dct_matrix, idct, masked_dct_matrix

DEFAULT_SIZES = {"dct": 0.25, "dct_fft": 0.25, "dct_ideal": 0.25, "linformer": 0.125, "nystrom": 0.125,
                 "performer": 0.125}
KINDS = ("vanilla", "fused", *DEFAULT_SIZES)
NYSTROM_PINV_ITERATIONS = 6


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    """A parsed spec: `kind`, and `size` (int count, float fraction of n, or None for vanilla / fused)."""

    kind: str
    size: int | float | None = None

    def resolve(self, n: int) -> int:
        """The size for a sequence of n tokens: the count itself, or round(fraction * n), at least 1."""
        return resolve_size(self.size, n)


def resolve_size(size: int | float, n: int) -> int:
    """`size` as a count for n tokens: an int as is, a float fraction f as max(1, round(f * n))."""
    return size if isinstance(size, int) else max(1, round(size * n))


def parse_attention_spec(spec: str) -> AttentionSpec:
    """Parses `KIND` or `KIND-SIZE` (see the module docstring); ValueError naming the spec otherwise."""
    allowed = (f"allowed kinds: {', '.join(KINDS)}; written KIND or KIND-SIZE with SIZE a count >= 1 "
               "or a fraction in (0, 1]")
    if not isinstance(spec, str):
        raise ValueError(f"attention spec {spec!r} is not a string ({allowed})")
    kind, sep, size_text = spec.partition("-")
    if kind not in KINDS:
        raise ValueError(f"attention spec {spec!r}: unknown kind {kind!r} ({allowed})")
    if not sep:
        return AttentionSpec(kind, DEFAULT_SIZES.get(kind))
    if kind not in DEFAULT_SIZES:
        raise ValueError(f"attention spec {spec!r}: kind {kind!r} takes no size ({allowed})")
    try:
        size = int(size_text) if size_text.isdigit() else float(size_text)
    except ValueError:
        size = None
    if isinstance(size, int) and size >= 1 or isinstance(size, float) and 0.0 < size <= 1.0:
        return AttentionSpec(kind, size)
    raise ValueError(f"attention spec {spec!r}: bad size {size_text!r} ({allowed})")


def split_heads(t: jnp.ndarray, num_heads: int) -> jnp.ndarray:
    """[B, N, D] -> [B, heads, N, D / heads]."""
    b, n, d = t.shape
    return t.reshape(b, n, num_heads, d // num_heads).transpose(0, 2, 1, 3)


def merge_heads(t: jnp.ndarray) -> jnp.ndarray:
    """[B, heads, N, head_dim] -> [B, N, heads * head_dim]."""
    b, h, n, hd = t.shape
    return t.transpose(0, 2, 1, 3).reshape(b, n, h * hd)


def project_qkv(module: nn.Module, tokens: jnp.ndarray, query_pos: jnp.ndarray | None = None) -> tuple:
    """q, k, v heads [B, heads, N, head_dim] of `tokens` [B, N, D] through `module`'s fused Dense 'qkv' (its
    `num_heads`, `qkv_bias`, `dtype`, `kernel_init`); `query_pos` [B or 1, N, D] is added to the queries."""
    b, n, d = tokens.shape
    qkv = nn.Dense(3 * d, use_bias=module.qkv_bias, dtype=module.dtype, kernel_init=module.kernel_init,
                   name="qkv")(tokens)
    q, k, v = (split_heads(t, module.num_heads) for t in jnp.split(qkv, 3, axis=-1))
    if query_pos is not None:
        q = q + split_heads(jnp.broadcast_to(query_pos, (b, n, d)), module.num_heads).astype(q.dtype)
    return q, k, v


def attention_dropout(module: nn.Module, train: bool):
    """`module`'s Dropout 'attn_drop' of rate `dropout_rate` for attention weights, or None when the rate is 0."""
    if module.dropout_rate <= 0:
        return None
    return nn.Dropout(module.dropout_rate, deterministic=not train, name="attn_drop")


def attention_weights(q: jnp.ndarray, k: jnp.ndarray, key_mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """float32 softmax(q k^T / sqrt(head_dim)) [B, heads, Nq, Nk]; `key_mask` [B, Nk] bool drops keys."""
    logits = jnp.einsum("bhqd,bhkd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * q.shape[-1] ** -0.5
    if key_mask is not None:
        logits = jnp.where(key_mask[:, None, None, :], logits, -jnp.inf)
    return jax.nn.softmax(logits, axis=-1)


# ----------------------------------------------------------------------------------------------- kernels
# Kernels take per-token q, k, v [B, heads, N, head_dim] and run inside MultiHeadSelfAttention.

def fused_attention(q, k, v, mask=None, dropout=None):
    """Exact attention by `jax.nn.dot_product_attention` (default implementation, which in jax 0.10 is
    XLA's; cuDNN's flash kernel would need fp16 / bf16); same contract as `dot_product_attention`. It has
    no weight dropout: when dropout is active (training, dropout_rate > 0) the explicit kernel runs."""
    if dropout is not None and not dropout.deterministic:
        return dot_product_attention(q, k, v, mask, dropout)
    key_mask = None if mask is None else mask.astype(bool)[:, None, None, :]
    out = jax.nn.dot_product_attention(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3),
                                       mask=key_mask)
    return out.transpose(0, 2, 1, 3)


def dct_ideal_attention(q, k, v, mask=None, dropout=None, *, size=DEFAULT_SIZES["dct_ideal"]):
    """Algorithm 2: E = softmax(q k^T / sqrt d) in full, E~ = D_bar^T (D_bar E D_bar^T) D_bar, out = E~ v.

    Only for measuring the DCT approximation error (it is quadratic in n). With a mask, D_bar is each
    example's basis of its real tokens (`masked_dct_matrix`); n_bar >= the real length gives exact attention.
    """
    n = q.shape[2]
    n_bar = min(resolve_size(size, n), n)
    weights = attention_weights(q, k, None if mask is None else mask.astype(bool))
    if dropout is not None:
        weights = dropout(weights)
    basis = jnp.asarray(dct_matrix(n, n_bar))[None] if mask is None else masked_dct_matrix(mask, n_bar)
    e_bar = jnp.einsum("bkn,bhnm,bjm->bhkj", basis, weights, basis)
    e_tilde = jnp.einsum("bkn,bhkj,bjm->bhnm", basis, e_bar, basis)
    return jnp.einsum("bhnm,bhmd->bhnd", e_tilde.astype(v.dtype), v)


def iterative_pinv(a: jnp.ndarray, iterations: int = NYSTROM_PINV_ITERATIONS) -> jnp.ndarray:
    """Moore-Penrose pseudo-inverse of square matrices [..., m, m] by the iteration of the Nystromformer
    paper (its eq. 12): Z_0 = A^T / (||A||_1 ||A||_inf), Z <- Z (13 I - A Z (15 I - A Z (7 I - A Z))) / 4."""
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    norm = jnp.max(jnp.sum(jnp.abs(a), axis=-2), axis=-1) * jnp.max(jnp.sum(jnp.abs(a), axis=-1), axis=-1)
    z = jnp.swapaxes(a, -1, -2) / norm[..., None, None]
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def nystrom_attention(q, k, v, mask=None, dropout=None, *, size=DEFAULT_SIZES["nystrom"]):
    """Nystromformer: softmax(q k~^T) pinv(softmax(q~ k~^T)) softmax(q~ k^T) v (each logit / sqrt d).

    Landmarks q~, k~ are means of m contiguous segments of the real tokens (segment j holds the tokens of
    rank r with floor(r m / L) = j, L real tokens; sizes differ by at most one, so n need not be a multiple
    of m). With m > L some segments are empty: those landmarks are masked and get an identity block in
    the pseudo-inverse, which leaves the result that of L landmarks.
    The pseudo-inverse takes 6 iterations; the paper's optional depthwise-conv skip on v is omitted.
    Dropout acts on the [N, m] token-to-landmark weights.
    """
    b, _, n, _ = q.shape
    m = min(resolve_size(size, n), n)
    real = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
    length = jnp.sum(real, axis=-1, dtype=jnp.int32)[:, None]
    rank = jnp.cumsum(real, axis=-1, dtype=jnp.int32) - 1
    segment = rank * m // jnp.maximum(length, 1)  # one token per landmark when m >= L
    member = (segment[..., None] == jnp.arange(m)) & real[..., None]  # [B, N, m]
    count = jnp.sum(member, axis=1)
    valid = count > 0
    means = member / jnp.maximum(count, 1)[:, None, :].astype(jnp.float32)
    q_land = jnp.einsum("bnm,bhnd->bhmd", means, q.astype(jnp.float32))
    k_land = jnp.einsum("bnm,bhnd->bhmd", means, k.astype(jnp.float32))
    to_landmarks = attention_weights(q, k_land, valid)
    kernel = attention_weights(q_land, k_land, valid)
    kernel = jnp.where(valid[:, None, :, None] & valid[:, None, None, :], kernel, jnp.eye(m))
    from_landmarks = attention_weights(q_land, k, None if mask is None else real)
    if dropout is not None:
        to_landmarks = dropout(to_landmarks)
    context = jnp.einsum("bhmn,bhnd->bhmd", from_landmarks, v.astype(jnp.float32))
    out = jnp.einsum("bhnm,bhmj,bhjd->bhnd", to_landmarks, iterative_pinv(kernel), context)
    return out.astype(v.dtype)


@functools.lru_cache(maxsize=None)
def performer_features(num_features: int, head_dim: int, seed: int = 0) -> np.ndarray:
    """FAVOR+ projection W [num_features, head_dim] float32 (read-only constant): blocks of head_dim
    orthogonal rows (Haar-random: QR of a Gaussian matrix with R's diagonal made positive), each row
    scaled by the norm of a Gaussian vector so that rows are marginally N(0, I). Drawn once from `seed`,
    never redrawn."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(math.ceil(num_features / head_dim)):
        q, r = np.linalg.qr(rng.standard_normal((head_dim, head_dim)))
        blocks.append((q * np.sign(np.diag(r))).T)
    norms = np.linalg.norm(rng.standard_normal((num_features, head_dim)), axis=1)
    w = (norms[:, None] * np.concatenate(blocks)[:num_features]).astype(np.float32)
    w.setflags(write=False)
    return w


def performer_attention(q, k, v, mask=None, dropout=None, *, size=DEFAULT_SIZES["performer"], seed=0,
                        eps=1e-6):
    """Performer FAVOR+: softmax attention through positive random features
    phi(x) = exp(W x - |x|^2 / 2) (x = q or k over head_dim^(1/4), W = `performer_features`), then
    out = phi(q) (phi(k)^T v) / (phi(q) phi(k)^T 1), linear in n. Per-query and per-sequence maxima are
    subtracted in the exponents (they cancel); `eps` is added to key features. Padded keys get zero features.
    There is no attention-weight matrix, so `dropout` is not used.
    """
    del dropout
    n, head_dim = q.shape[2], q.shape[3]
    w = jnp.asarray(performer_features(resolve_size(size, n), head_dim, seed))
    q = q.astype(jnp.float32) * head_dim ** -0.25
    k = k.astype(jnp.float32) * head_dim ** -0.25
    q_proj = jnp.einsum("bhnd,md->bhnm", q, w)  # |q|^2 / 2 is a per-query constant: it cancels
    q_feat = jnp.exp(q_proj - jax.lax.stop_gradient(jnp.max(q_proj, axis=-1, keepdims=True)))
    k_proj = jnp.einsum("bhnd,md->bhnm", k, w) - 0.5 * jnp.sum(k * k, axis=-1, keepdims=True)
    real = None if mask is None else mask.astype(bool)[:, None, :, None]
    stab = jnp.max(k_proj if real is None else jnp.where(real, k_proj, -jnp.inf), axis=(-2, -1), keepdims=True)
    k_feat = jnp.exp(k_proj - jax.lax.stop_gradient(stab)) + eps
    if real is not None:
        k_feat = jnp.where(real, k_feat, 0.0)
    context = jnp.einsum("bhnm,bhnd->bhmd", k_feat, v.astype(jnp.float32))
    normaliser = jnp.einsum("bhnm,bhm->bhn", q_feat, jnp.sum(k_feat, axis=-2))
    return (jnp.einsum("bhnm,bhmd->bhnd", q_feat, context) / normaliser[..., None]).astype(v.dtype)


# ----------------------------------------------------------------------------------------------- modules

def _head_dim(d: int, num_heads: int, who: str) -> int:
    if num_heads < 1 or d % num_heads:
        raise ValueError(f"{who}: width {d} is not divisible by num_heads {num_heads}")
    return d // num_heads


class DCTAttention(nn.Module):
    """DCT-Former attention, the thesis' Algorithm 1: X_bar = D_bar X (n_bar x d), q/k/v = qkv(X_bar),
    A = softmax(q k^T / sqrt(head_dim)) v over n_bar tokens, out = proj(D_bar^T A). O(n n_bar) memory.

    `fft`: D_bar applied by FFT (`ops.dct` / `ops.idct`, any n, no matrix), else the cached constant
    `dct_matrix(n, n_bar)`, shared by all layers. As Algorithm 1 says, the qkv bias is added to every
    compressed token. With a `mask`, each example uses the basis of its own real tokens
    (`masked_dct_matrix`): padded tokens are dropped before compressing and get zero after expanding
    (so their output is proj's bias), and outputs at real positions equal those of the unpadded
    sequence; a batch with a mask always takes this matrix path (an FFT has one length per batch).
    `query_pos` is compressed like X and added to the compressed queries.
    """

    num_heads: int
    size: int | float = DEFAULT_SIZES["dct"]
    fft: bool = False
    qkv_bias: bool = True
    dropout_rate: float = 0.0
    kernel_init: Callable = trunc_normal_02
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None = None, train: bool = False,
                 query_pos: jnp.ndarray | None = None) -> jnp.ndarray:
        b, n, d = x.shape
        _head_dim(d, self.num_heads, "DCTAttention")
        n_bar = min(resolve_size(self.size, n), n)
        key_mask = None
        if mask is not None:
            basis = masked_dct_matrix(mask, n_bar)
            key_mask = jnp.arange(n_bar) < jnp.sum(mask.astype(bool), axis=-1)[:, None]
            compress = lambda t: jnp.einsum("bkn,bnd->bkd", basis, t.astype(jnp.float32))
            expand = lambda t: jnp.einsum("bkn,bkd->bnd", basis, t.astype(jnp.float32))
        elif self.fft:
            compress = lambda t: dct(t, axis=1, n_bar=n_bar)
            expand = lambda t: idct(t, n, axis=1)
        else:
            basis = jnp.asarray(dct_matrix(n, n_bar))
            compress = lambda t: jnp.einsum("kn,bnd->bkd", basis, t.astype(jnp.float32))
            expand = lambda t: jnp.einsum("kn,bkd->bnd", basis, t.astype(jnp.float32))

        if query_pos is not None:
            query_pos = compress(jnp.broadcast_to(query_pos, (b, n, d)))
        q, k, v = project_qkv(self, compress(x), query_pos)
        out = expand(merge_heads(dot_product_attention(q, k, v, key_mask, attention_dropout(self, train))))
        return nn.Dense(d, dtype=self.dtype, kernel_init=self.kernel_init, name="proj")(out.astype(self.dtype))


class LinformerAttention(nn.Module):
    """Linformer (Wang et al. 2020): softmax(q (E^T k)^T / sqrt(head_dim)) (F^T v), with learned
    E = `seq_proj_k`, F = `seq_proj_v` [n_max, k] shared by the heads (the paper's headwise sharing).

    n_max is the sequence length at init (k = size resolved at n_max). A shorter sequence uses the first
    n rows of E and F, which equals padding it to n_max with a mask; a longer one is an error. With a
    `mask`, padded keys and values are zeroed before the projection, so they contribute nothing.
    """

    num_heads: int
    size: int | float = DEFAULT_SIZES["linformer"]
    qkv_bias: bool = True
    dropout_rate: float = 0.0
    kernel_init: Callable = trunc_normal_02
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None = None, train: bool = False,
                 query_pos: jnp.ndarray | None = None) -> jnp.ndarray:
        b, n, d = x.shape
        _head_dim(d, self.num_heads, "LinformerAttention")
        shape = (n, min(resolve_size(self.size, n), n))
        if self.has_variable("params", "seq_proj_k"):
            shape = self.get_variable("params", "seq_proj_k").shape
        if n > shape[0]:
            raise ValueError(f"LinformerAttention: sequence length {n} exceeds the {shape[0]} tokens its "
                             "seq_proj_k / seq_proj_v were initialised for")
        e = self.param("seq_proj_k", nn.initializers.xavier_uniform(), shape)[:n]
        f = self.param("seq_proj_v", nn.initializers.xavier_uniform(), shape)[:n]

        q, k, v = project_qkv(self, x, query_pos)
        if mask is not None:
            real = mask.astype(bool)[:, None, :, None]
            k, v = jnp.where(real, k, 0), jnp.where(real, v, 0)
        k = jnp.einsum("nj,bhnd->bhjd", e.astype(k.dtype), k)
        v = jnp.einsum("nj,bhnd->bhjd", f.astype(v.dtype), v)
        out = merge_heads(dot_product_attention(q, k, v, None, attention_dropout(self, train)))
        return nn.Dense(d, dtype=self.dtype, kernel_init=self.kernel_init, name="proj")(out)


def _sized_kernel(fn: Callable, size: int | float) -> Callable:
    kernel = functools.partial(fn, size=size)
    return functools.update_wrapper(kernel, fn)


def make_attention(spec: str, num_heads: int, qkv_bias: bool = True, dropout_rate: float = 0.0,
                   dtype: jnp.dtype = jnp.float32, name: str | None = None) -> nn.Module:
    """The self-attention module of `spec` (see the module docstring), called as
    `module(x [B, N, D], mask [B, N] bool or None, train, query_pos=None) -> [B, N, D]`.

    `dropout_rate` drops attention weights in training: softmax weights for vanilla, fused, dct,
    dct_ideal and linformer, the token-to-landmark weights for nystrom, nothing for performer.
    Each example needs at least one real token.
    """
    parsed = parse_attention_spec(spec)
    common = dict(qkv_bias=qkv_bias, dropout_rate=dropout_rate, dtype=dtype, name=name)
    if parsed.kind in ("dct", "dct_fft"):
        return DCTAttention(num_heads, parsed.size, fft=parsed.kind == "dct_fft", **common)
    if parsed.kind == "linformer":
        return LinformerAttention(num_heads, parsed.size, **common)
    kernels = {"vanilla": dot_product_attention, "fused": fused_attention}
    sized = {"dct_ideal": dct_ideal_attention, "nystrom": nystrom_attention, "performer": performer_attention}
    kernel = kernels[parsed.kind] if parsed.kind in kernels else _sized_kernel(sized[parsed.kind], parsed.size)
    return MultiHeadSelfAttention(num_heads, attention_fn=kernel, **common)
