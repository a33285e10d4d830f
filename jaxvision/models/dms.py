"""The driver-monitoring face network of seed 000, section 2.3.3 (Figure 2.10), and its output layout (Table 2.1).

A MobileNetV2-style stack of inverted residual blocks (`models.mobilenet.InvertedResidual`) on a face crop;
the last blocks at strides 4, 8 and 16 (B1, B2, B3) are averaged over space, concatenated, and one dense
layer gives the output vector of 209 values: 98 landmarks (x, y) in [0, 1] (196), eyes (4, sigmoid),
mouth (3, softmax), head pose (yaw, pitch, roll in radians; 3) and distraction (3, softmax).

The thesis gives the parameter counts (124,566 / 705,422 / 2,330,318) and MACs at 160 x 160 (76.61 M /
447.23 M / 2.40 G) of its tiny / small / large models, not their block tables. `SIZES` are block tables
found by searching MobileNetV2-shaped tables (a stem, a t = 1 block, then strided stages of one expansion)
for both numbers: every size lands within 0.1% of the parameters and 1% of the MACs. Matching the MACs needs a
stride-1 stem (MobileNetV2's stride-2 stem truncated at stride 16 has 574,505 parameters but only 107 M MACs),
so the stage before B1 runs at stride 2.

`pool="soft_argmax"` (not the thesis') adds to each channel's average where on the map it fires (its expected
position under a spatial softmax), which a single dense layer can turn into landmark coordinates far more
easily than averages alone; the 20-minute CPU configuration uses it (BENCHMARKS.md).

`refine=(2, 4)` (not the thesis' either) adds a landmark refinement step: the stride-2 and stride-4 maps are
sampled bilinearly where the head put each landmark (`sample_at_points`), and each landmark adds its own linear
map of the samples as an offset. The sampling positions are not detached from the graph: the loss also reaches the
head's estimate through the maps' slope there, which trained far better than a detached estimate (BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.conv import ConvNormAct, check_norm
from jaxvision.models.mobilenet import InvertedResidual
from jaxvision.models.registry import register

# (name, size) of each task's slice of the output vector, in order (Table 2.1).
OUTPUT_LAYOUT = (("landmarks", 196), ("eyes", 4), ("mouth", 3), ("head_pose", 3), ("distraction", 3))
OUTPUT_SIZE = sum(size for _, size in OUTPUT_LAYOUT)
FEATURE_STRIDES = (4, 8, 16)
POOLS = ("mean", "soft_argmax")

# size -> (stem channels, stem stride, stages of (expansion t, channels c, blocks n, first stride s)).
SIZES = {
    "tiny": (16, 1, ((1, 8, 1, 1), (2, 16, 4, 2), (2, 16, 1, 2), (2, 56, 4, 2), (2, 152, 1, 2))),
    "small": (32, 1, ((1, 24, 1, 1), (3, 48, 2, 2), (3, 80, 2, 2), (3, 112, 1, 2), (3, 240, 2, 2))),
    "large": (16, 1, ((1, 8, 1, 1), (6, 64, 3, 2), (6, 120, 4, 2), (6, 168, 3, 2), (6, 352, 1, 2))),
}
# Table 2.6 / 2.8 of the thesis: parameters and MACs at 160 x 160.
THESIS_PARAMS = {"tiny": 124_566, "small": 705_422, "large": 2_330_318}
THESIS_MACS = {"tiny": 76.61e6, "small": 447.23e6, "large": 2.40e9}


def split_outputs(vector: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """The raw output vector [..., 209] cut into named task outputs: 'landmarks' [..., 98, 2], 'eyes' logits
    [..., 4], 'mouth' logits [..., 3], 'head_pose' [..., 3] radians, 'distraction' logits [..., 3]."""
    if vector.shape[-1] != OUTPUT_SIZE:
        raise ValueError(f"DMS output vector has {vector.shape[-1]} values, expected {OUTPUT_SIZE}")
    outputs, start = {}, 0
    for name, size in OUTPUT_LAYOUT:
        outputs[name] = jax.lax.slice_in_dim(vector, start, start + size, axis=-1)  # a slice, not a gather
        start += size
    outputs["landmarks"] = outputs["landmarks"].reshape(*vector.shape[:-1], 98, 2)
    return outputs


def decode(vector: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Named predictions with Table 2.1's activations: 'landmarks' [..., 98, 2] in crop units, 'eyes' sigmoid
    probabilities (left visible, left open, right visible, right open), 'mouth' and 'distraction' softmax
    probabilities, 'head_pose' (yaw, pitch, roll) radians."""
    outputs = split_outputs(vector)
    outputs["eyes"] = nn.sigmoid(outputs["eyes"])
    outputs["mouth"] = nn.softmax(outputs["mouth"], axis=-1)
    outputs["distraction"] = nn.softmax(outputs["distraction"], axis=-1)
    return outputs


def sample_at_points(feature_map: jnp.ndarray, points: jnp.ndarray) -> jnp.ndarray:
    """Bilinear samples [B, K, C] of `feature_map` [B, H, W, C] at `points` [B, K, 2] (x, y in crop units, pixel
    (c, r) centred at ((c + 0.5) / W, (r + 0.5) / H)); zero beyond the border cells. Written as tent weights and
    a matrix product (no gather), so it exports to ONNX as plain arithmetic."""
    _, height, width, _ = feature_map.shape

    def tent(coord, size):                          # [B, K] -> [B, K, size] interpolation weights
        cells = jnp.arange(size, dtype=feature_map.dtype)
        return jax.nn.relu(1 - jnp.abs(coord[..., None] * size - 0.5 - cells))

    along_x = jnp.einsum("bkw,bhwc->bkhc", tent(points[..., 0], width), feature_map)
    return jnp.einsum("bkh,bkhc->bkc", tent(points[..., 1], height), along_x)


def pool_features(feature_map: jnp.ndarray, pool: str = "mean") -> jnp.ndarray:
    """[B, H, W, C] -> [B, C], the global average (`pool="mean"`, the thesis'), or [B, 3C] (`"soft_argmax"`):
    that average, then each channel's expected pixel-centre x and then y (in [-1, 1] across the map) under its
    softmax over the H x W positions (the spatial soft arg-max of Levine et al. 2016)."""
    mean = jnp.mean(feature_map, axis=(1, 2))
    if pool == "mean":
        return mean
    batch, height, width, channels = feature_map.shape
    weights = jax.nn.softmax(feature_map.reshape(batch, height * width, channels), axis=1)
    weights = weights.reshape(batch, height, width, channels)
    xs = (2 * jnp.arange(width, dtype=feature_map.dtype) + 1) / width - 1
    ys = (2 * jnp.arange(height, dtype=feature_map.dtype) + 1) / height - 1
    expected_x = jnp.sum(weights.sum(axis=1) * xs[None, :, None], axis=1)
    expected_y = jnp.sum(weights.sum(axis=2) * ys[None, :, None], axis=1)
    return jnp.concatenate([mean, expected_x, expected_y], axis=-1)


@register("dms_large", size="large")
@register("dms_small", size="small")
@register("dms_tiny", size="tiny")
@register("dms")
class DMSNet(nn.Module):
    """Face crop [B, H, W, 3] in [0, 1] -> output vector [B, 209] float32 (see `split_outputs` / `decode`).

    `size` picks a block table of `SIZES`; `stages` (tuples (t, c, n, s)), `stem_channels` and `stem_stride`
    given explicitly replace it. The head's landmark biases start at `landmark_init` (0.5: every point at the
    crop centre, where the RoI puts the face) rather than at the corner 0. `pool` is how the B1-B3 maps are pooled
    for the head (`pool_features`). `refine` lists the strides of the maps the landmark refinement samples
    (none: the thesis' head alone). With `features=True` the call also returns {4, 8, 16} -> the pooled-from
    feature maps (for saliency maps).
    """

    size: str = "small"
    stages: Sequence[Sequence[int]] = ()
    stem_channels: int = 0
    stem_stride: int = 0
    norm: str = "batch"
    landmark_init: float = 0.5
    pool: str = "mean"
    refine: Sequence[int] = ()
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if not self.stages and self.size not in SIZES:
            raise ValueError(f"DMS size '{self.size}' is unknown; choose one of {', '.join(SIZES)} or give stages")
        check_norm(self.norm)
        if self.pool not in POOLS:
            raise ValueError(f"DMS pool '{self.pool}' is unknown; choose one of {', '.join(POOLS)}")
        super().__post_init__()

    def table(self) -> tuple[int, int, tuple]:
        """(stem channels, stem stride, stages) this model builds."""
        stem, stride, stages = SIZES.get(self.size, (32, 1, ()))
        return (self.stem_channels or stem, self.stem_stride or stride, tuple(map(tuple, self.stages or stages)))

    def _head_bias_init(self, key, shape, dtype=jnp.float32):
        """Zeros, except `landmark_init` for the landmark coordinates (the first slice of Table 2.1)."""
        del key
        return jnp.zeros(shape, dtype).at[:OUTPUT_LAYOUT[0][1]].set(self.landmark_init)

    def _refine_landmarks(self, out: jnp.ndarray, maps: list[jnp.ndarray]) -> jnp.ndarray:
        """Adds to the head's landmarks an offset read, per landmark, off the `refine` maps sampled where the
        head put it: each landmark has its own linear map from the sampled features to (dx, dy) in cells of the
        first `refine` map."""
        count = OUTPUT_LAYOUT[0][1] // 2
        coarse = jax.lax.slice_in_dim(out, 0, 2 * count, axis=-1).reshape(-1, count, 2)
        local = jnp.concatenate([sample_at_points(m, coarse) for m in maps], axis=-1)
        weight = self.param("refine_kernel", nn.initializers.zeros, (count, local.shape[-1], 2), self.dtype)
        offset = jnp.einsum("bkc,kcd->bkd", local, weight) / maps[0].shape[2]
        rest = jax.lax.slice_in_dim(out, 2 * count, out.shape[-1], axis=-1)
        return jnp.concatenate([(coarse + offset).reshape(-1, 2 * count), rest], axis=-1)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool, features: bool = False):
        stem_channels, stride, stages = self.table()
        kw = dict(norm=self.norm, dtype=self.dtype)
        x = ConvNormAct(stem_channels, 3, stride, activation=nn.relu6, name="stem", **kw)(x.astype(self.dtype), train)
        feats, index = {}, 0
        for t, c, n, s in stages:
            for j in range(n):
                block_stride = s if j == 0 else 1
                stride *= block_stride
                x = InvertedResidual(c, t, block_stride, name=f"block{index}", **kw)(x, train)
                index += 1
            feats[stride] = x
        missing = [s for s in (*FEATURE_STRIDES, *self.refine) if s not in feats]
        if missing:
            raise ValueError(f"DMS block table reaches strides {sorted(feats)}; it needs blocks at strides "
                             f"{sorted({*FEATURE_STRIDES, *self.refine})} (missing {missing})")
        pooled = jnp.concatenate([pool_features(feats[s], self.pool) for s in FEATURE_STRIDES], axis=-1)
        out = nn.Dense(OUTPUT_SIZE, dtype=self.dtype, bias_init=self._head_bias_init, name="head")(pooled)
        if self.refine:
            out = self._refine_landmarks(out, [feats[s] for s in self.refine])
        out = out.astype(jnp.float32)
        if features:
            return out, {s: feats[s] for s in FEATURE_STRIDES}
        return out
