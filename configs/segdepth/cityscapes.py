"""DeepLabv3+ semseg + depth on Cityscapes (19 train ids, disparity -> metric depth), 256x512 inputs.

The model, losses and optimiser of configs/segdepth/deeplabv3plus.py; images are read from the
official layout (see jaxvision/data/cityscapes.py) and resized from 1024x2048 to 256x512 (depth
values are kept: a whole-image resize does not move the scene). Set the dataset folder:
    jaxvision train --config configs/segdepth/cityscapes.py --config.data.root=/data/cityscapes ...
"""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "deeplabv3plus.py"))
    config.data.name = "cityscapes"
    config.data.height, config.data.width = 256, 512
    return config
