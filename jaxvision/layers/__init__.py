"""Reusable Flax modules."""

from jaxvision.layers.aspp import ASPP, ImagePooling
from jaxvision.layers.attention import MultiHeadSelfAttention, dot_product_attention
from jaxvision.layers.conv import ConvNormAct, conv_padding, kaiming_normal_fan_out, make_divisible, make_norm
from jaxvision.layers.decoder import DeepLabV3PlusDecoder, resize_bilinear
from jaxvision.layers.se import SqueezeExcite
from jaxvision.layers.stochastic_depth import StochasticDepth

__all__ = ["ASPP", "ConvNormAct", "DeepLabV3PlusDecoder", "ImagePooling", "MultiHeadSelfAttention", "SqueezeExcite",
           "StochasticDepth", "conv_padding", "dot_product_attention", "kaiming_normal_fan_out", "make_divisible", "make_norm", "resize_bilinear"]
