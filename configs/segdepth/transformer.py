"""Report 003's multi-task transformer (Problem 5): attention in both task branches after a shared encoder.

Depth: adaptive bins from the depth branch's own ASPP features (the report's choice for this model) with
report 003's bin head (256 bins, 4 heads, 3 blocks); semseg: ASPP features -> 256 latents -> 3 self-attention
blocks -> the DeepLabv3+ decoder with the skip. ResNet-18, last stage dilated, Adam 1e-4 as Problem 4.
The report's cross-attention variant (learnable class tokens as queries on the decoder features):
  --config.model.seg_attention=cross
and its 512-wide try: --config.model.seg_attention=cross --config.model.seg_dim=512 --config.model.seg_layers=2
"""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "adaptive_depth.py"))
    config.model.name = "deeplabv3plus_transformer"
    config.model.depth_latents = "aspp"      # encoder | decoder | aspp
    config.model.seg_attention = "self"      # self | cross
    config.model.seg_latents = 256           # a square number: 16 x 16
    config.model.seg_dim = 256
    config.model.seg_heads = 4
    config.model.seg_layers = 3
    config.model.seg_expansion = 4.0
    config.model.seg_dropout = 0.0
    return config
