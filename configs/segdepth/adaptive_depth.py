"""DeepLabv3+ with report 003's adaptive depth (Problem 4): depth from 256 learnable per-image bins.

Report 003's best setting: ResNet-18 with the last stage dilated (output stride 16), bins from the lowest
encoder features projected 512 -> 256 by a linear layer, 3 transformer blocks with 4 heads and MLP
expansion 4, no positional embedding; Adam 1e-4. The report's comparison is one override each:
  --config.model.depth_latents=decoder | aspp        (aspp: 8 heads, 6 layers in the report)
  --config.model.bin_dim=512 --config.model.bin_heads=8
  --config.model.bin_expansion=8   --config.model.bin_layers=6   --config.model.bin_mode=adabins
and the efficient attention of issue 5 in the bins' transformer: --config.model.attention=dct-0.25
"""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "deeplabv3plus.py"))
    config.model.name = "deeplabv3plus_adaptive"
    config.model.encoder = "resnet18"
    config.model.depth_latents = "encoder"   # encoder | decoder | aspp
    config.model.bin_count = 256             # bins = latents (a square number: 16 x 16)
    config.model.bin_dim = 256
    config.model.bin_heads = 4
    config.model.bin_layers = 3
    config.model.bin_expansion = 4.0
    config.model.bin_mode = "linear"         # linear (report 003) | adabins
    config.model.attention = "vanilla"       # self-attention spec: vanilla | dct-0.25 | nystrom-0.125 | ...
    return config
