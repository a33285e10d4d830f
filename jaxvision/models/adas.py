"""CERBERUS, the ADAS multi-task perception model of seed 000, chapter 3 (section 3.3.2, Figure 3.6).

A registered backbone gives features at strides {4, 8, 16, 32}; a neck (`simple` or `bifpn`,
jaxvision/layers/necks.py) gives a stride-32 map for the scene tags and a stride-4 map shared by the
detection and lane heads. Every dense output is its own head: a 3x3 conv, ReLU, a 1x1 conv; sigmoid on the
heatmaps, whose last bias starts at -4.6 (sigmoid = 0.01, near the mean of a target heatmap). The tag head is a
3x3 conv, ReLU, global max pooling and one dense layer per tag task.

Outputs (float32; h, w = H / 4, W / 4):
  'heatmap' [B, h, w, K] object-centre probabilities (Eq. 3.1); 'box_offsets' [B, h, w, 4] corner offsets in
  output cells (Eq. 3.2); 'occlusion' [B, h, w, 1] logits; 'lane_heatmap' [B, h, w, L] lane-keypoint
  probabilities; 'lane_offsets' [B, h, w, 2] votes for the lane midpoint (Eq. 3.4); one logits vector
  [B, classes] per tag task ('weather', 'scene', 'time_of_day' for BDD100K).

The six configurations of Table 3.2 are registered as `cerberus_{rn34_simple, rn34_bifpn, rn50_bifpn,
rn101_bifpn, effb2_bifpn, mbv2_bifpn}`; `cerberus` takes any backbone of `supported_encoders()`.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import linen as nn

from jaxvision.layers.conv import check_norm, conv_padding
from jaxvision.layers.necks import BiFPN, SimpleNeck
from jaxvision.models.deeplab import check_encoder, normalize_imagenet
from jaxvision.models.registry import create, model_options, register

OUTPUT_STRIDE = 4
HEATMAP_BIAS = -4.6
NECKS = ("simple", "bifpn")
# BDD100K's tag tasks and class counts (section 3.4.1).
BDD_TAGS = (("weather", 7), ("scene", 7), ("time_of_day", 4))
BDD_DETECTION_CLASSES = 10
BDD_LANE_CLASSES = 8


class DenseHead(nn.Module):
    """3x3 conv (`hidden` channels) -> ReLU -> 1x1 conv (`features` channels, bias `bias`), float32 out."""

    features: int
    hidden: int
    bias: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.relu(nn.Conv(self.hidden, (3, 3), padding=conv_padding(3), dtype=self.dtype, name="conv")(x))
        x = nn.Conv(self.features, (1, 1), dtype=self.dtype, bias_init=nn.initializers.constant(self.bias),
                    name="out")(x)
        return x.astype(jnp.float32)


class TagHead(nn.Module):
    """3x3 conv -> ReLU -> global max pooling -> one dense layer per (task, classes) of `tags`: {task: logits}."""

    tags: Sequence[tuple[str, int]]
    hidden: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> dict:
        x = nn.relu(nn.Conv(self.hidden, (3, 3), padding=conv_padding(3), dtype=self.dtype, name="conv")(x))
        pooled = jnp.max(x, axis=(1, 2))
        return {task: nn.Dense(classes, dtype=self.dtype, name=task)(pooled).astype(jnp.float32)
                for task, classes in self.tags}


@register("cerberus_mbv2_bifpn", backbone="mobilenet_v2", neck="bifpn")
@register("cerberus_effb2_bifpn", backbone="efficientnet_b2", neck="bifpn")
@register("cerberus_rn101_bifpn", backbone="resnet101", neck="bifpn")
@register("cerberus_rn50_bifpn", backbone="resnet50", neck="bifpn")
@register("cerberus_rn34_bifpn", backbone="resnet34", neck="bifpn")
@register("cerberus_rn34_simple", backbone="resnet34", neck="simple", neck_channels=256, head_channels=256)
@register("cerberus")
class Cerberus(nn.Module):
    """Images [B, H, W, 3] in [0, 1] (H, W multiples of 32; normalised inside) -> the output dict of the module
    docstring. `num_classes` object classes, `num_lane_classes` lane classes, `tags` (task, classes) pairs;
    `neck_channels` / `head_channels` the neck's and the heads' widths, `bifpn_repeats` BiFPN layers;
    `drop_path_rate` goes to backbones with stochastic depth (EfficientNet)."""

    backbone: str = "mobilenet_v2"
    neck: str = "bifpn"
    num_classes: int = BDD_DETECTION_CLASSES
    num_lane_classes: int = BDD_LANE_CLASSES
    tags: Sequence[tuple[str, int]] = BDD_TAGS
    neck_channels: int = 64
    head_channels: int = 64
    bifpn_repeats: int = 3
    drop_path_rate: float = 0.2
    norm: str = "batch"
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        if self.neck not in NECKS:
            raise ValueError(f"model.neck '{self.neck}' is unknown; choose one of {', '.join(NECKS)}")
        check_encoder(self.backbone)
        check_norm(self.norm)
        for entry in self.tags:
            if len(entry) != 2 or not isinstance(entry[0], str) or int(entry[1]) < 2:
                raise ValueError(f"model.tags entry {entry!r} is invalid; expected (task name, classes >= 2)")
        super().__post_init__()

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> dict:
        height, width = images.shape[1:3]
        if height % 32 or width % 32:
            raise ValueError(f"Cerberus input {height}x{width}: height and width must be multiples of 32")
        extra = {"drop_path_rate": self.drop_path_rate} if "drop_path_rate" in model_options(self.backbone) else {}
        backbone = create(self.backbone, num_classes=None, output_stride=32, norm=self.norm, dtype=self.dtype,
                          name="backbone", **extra)
        features = backbone(normalize_imagenet(images).astype(self.dtype), train, features=True)
        if self.neck == "simple":
            neck = SimpleNeck(self.neck_channels, self.norm, self.dtype, name="neck")
        else:
            neck = BiFPN(self.neck_channels, self.bifpn_repeats, self.norm, self.dtype, name="neck")
        tag_features, x = neck(features, train)
        head = lambda name, n, bias=0.0: DenseHead(n, self.head_channels, bias, self.dtype, name=name)(x)  # noqa: E731
        return {"heatmap": nn.sigmoid(head("heatmap", self.num_classes, HEATMAP_BIAS)),
                "box_offsets": head("box_offsets", 4),
                "occlusion": head("occlusion", 1),
                "lane_heatmap": nn.sigmoid(head("lane_heatmap", self.num_lane_classes, HEATMAP_BIAS)),
                "lane_offsets": head("lane_offsets", 2),
                **TagHead(tuple(self.tags), self.head_channels, self.dtype, name="tags")(tag_features)}
