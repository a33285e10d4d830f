"""DeepLabv3+ for joint semantic segmentation and metric depth (reports 002/003).

Pieces: `ContextDecoder` (ASPP or 1x1 conv on the deepest features + DeepLabv3+ decoder with the
stride-4 skip) and `TaskHeads` (1x1 conv per task, upsampling, output activation) are separate
modules so a branched model (one ContextDecoder per task) reuses them as they are.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxvision.layers.aspp import ASPP
from jaxvision.layers.conv import ConvNormAct, check_norm
from jaxvision.layers.decoder import DeepLabV3PlusDecoder, resize_bilinear
from jaxvision.models.registry import create, register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TASKS = ("semseg", "depth")
ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101")
LOG_DEPTH_RANGE = (-8.0, 8.0)  # raw log-depth is clipped here before exp: 3e-4 m .. 3e3 m
INITIAL_DEPTH_M = 10.0


def normalize_imagenet(images: jnp.ndarray) -> jnp.ndarray:
    """[0, 1] RGB -> ImageNet-standardised, in float32."""
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    return (images.astype(jnp.float32) - mean) / std


def aspp_rates_at(rates: Sequence[int], output_stride: int) -> tuple[int, ...]:
    """Atrous rates given for output stride 16, scaled to `output_stride` (x2 at 8, /2 at 32)."""
    scaled = tuple(r * 16 / output_stride for r in rates)
    if any(s != int(s) or s < 1 for s in scaled):
        raise ValueError(f"model.aspp_rates {tuple(rates)} (given for output stride 16) do not scale to whole "
                         f"rates >= 1 at output_stride {output_stride}")
    return tuple(int(s) for s in scaled)


def check_tasks(tasks: Sequence[tuple[str, int]]) -> None:
    """Raises a ValueError naming `model.tasks` for unknown tasks or a depth task with != 1 channel."""
    for entry in tasks:
        if len(entry) != 2 or entry[0] not in TASKS:
            raise ValueError(f"model.tasks entry {entry!r} is invalid; expected (name, channels) with name in "
                             f"{', '.join(TASKS)}")
        if entry[0] == "depth" and entry[1] != 1:
            raise ValueError(f"model.tasks: 'depth' has 1 channel, got {entry[1]}")


class ContextDecoder(nn.Module):
    """ASPP (or a 1x1 ConvNormAct when `use_aspp=False`) on the deepest features, then the
    DeepLabv3+ decoder with the stride-4 skip; returns `decoder_channels` stride-4 features."""

    aspp_rates: Sequence[int] = (6, 12, 18)
    aspp_channels: int = 256
    aspp_dropout: float = 0.1
    use_aspp: bool = True
    skip_channels: int = 48
    decoder_channels: int = 256
    norm: str = "batch"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, deepest: jnp.ndarray, skip: jnp.ndarray, train: bool) -> jnp.ndarray:
        if self.use_aspp:
            context = ASPP(self.aspp_channels, tuple(self.aspp_rates), self.aspp_dropout, norm=self.norm,
                           dtype=self.dtype, name="aspp")(deepest, train)
        else:
            context = ConvNormAct(self.aspp_channels, 1, norm=self.norm, dtype=self.dtype, name="aspp")(deepest, train)
        return DeepLabV3PlusDecoder(self.decoder_channels, self.skip_channels, norm=self.norm, dtype=self.dtype,
                                    name="decoder")(context, skip, train)


class TaskHeads(nn.Module):
    """One 1x1 conv (with bias) per task on stride-4 features, bilinear upsampling to `size`, then
    'semseg': logits [B,H,W,C]; 'depth': exp(clip(raw)) metres [B,H,W] (initially ~10 m). Float32 out."""

    tasks: Sequence[tuple[str, int]] = (("semseg", 19), ("depth", 1))
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jnp.ndarray, size: tuple[int, int]) -> dict:
        outputs = {}
        for task, channels in self.tasks:
            bias = np.log(INITIAL_DEPTH_M) if task == "depth" else 0.0
            raw = nn.Conv(channels, (1, 1), dtype=self.dtype, kernel_init=nn.initializers.normal(0.01),
                          bias_init=nn.initializers.constant(bias), name=f"head_{task}")(features)
            raw = resize_bilinear(raw.astype(jnp.float32), size)
            if task == "depth":
                outputs[task] = jnp.exp(jnp.clip(raw[..., 0], *LOG_DEPTH_RANGE))
            else:
                outputs[task] = raw
        return outputs


@register("deeplabv3plus")
class DeepLabV3Plus(nn.Module):
    """Joint DeepLabv3+: shared dilated ResNet encoder, ASPP and decoder; a 1x1 head per task.

    Input: images [B,H,W,3] in [0,1] (normalised inside). Output: {'semseg': [B,H,W,C] logits,
    'depth': [B,H,W] metres}, float32 whatever the compute `dtype`. `skip_channels=0` drops the
    skip connection; `use_aspp=False` replaces ASPP by a 1x1 conv to `aspp_channels`.
    """

    encoder: str = "resnet34"
    output_stride: int = 16
    aspp_rates: Sequence[int] = (6, 12, 18)
    aspp_channels: int = 256
    aspp_dropout: float = 0.1
    use_aspp: bool = True
    skip_channels: int = 48
    decoder_channels: int = 256
    tasks: Sequence[tuple[str, int]] = (("semseg", 19), ("depth", 1))
    norm: str = "batch"
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        check_tasks(self.tasks)
        check_norm(self.norm)
        aspp_rates_at(self.aspp_rates, self.output_stride)
        if self.encoder not in ENCODERS:
            raise ValueError(f"model.encoder '{self.encoder}' is unsupported; choose one of {', '.join(ENCODERS)}")
        super().__post_init__()

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> dict:
        x = normalize_imagenet(images).astype(self.dtype)
        feats = create(self.encoder, num_classes=None, output_stride=self.output_stride, norm=self.norm,
                       dtype=self.dtype, name="encoder")(x, train, features=True)
        y = ContextDecoder(aspp_rates=aspp_rates_at(self.aspp_rates, self.output_stride),
                           aspp_channels=self.aspp_channels, aspp_dropout=self.aspp_dropout, use_aspp=self.use_aspp,
                           skip_channels=self.skip_channels, decoder_channels=self.decoder_channels, norm=self.norm,
                           dtype=self.dtype, name="context_decoder")(feats[32], feats[4], train)
        return TaskHeads(tuple(self.tasks), self.dtype, name="heads")(y, images.shape[1:3])
