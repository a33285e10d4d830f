"""DeepLabv3+ semseg + depth on NYU-Depth-v2 (labeled set, official 795 train / 654 test split), 240x320.

Reads {root}/nyu_depth_v2_labeled.mat and {root}/splits.mat (see jaxvision/data/nyu.py); 'val' is
the 654-image test split. Semantic labels need a raw-label -> class map (a .npy of 895 entries, e.g.
the common 40-class mapping, 255 = ignore) in data.label_map; without one only depth is supervised.
    jaxvision train --config configs/segdepth/nyu_depth_v2.py --config.data.root=/data/nyu \
        --config.data.label_map=/data/nyu/map40.npy
"""

import os

from jaxvision.config import load_config_file

NUM_CLASSES = 40


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "deeplabv3plus.py"))
    config.data.name = "nyu_depth_v2"
    config.data.label_map = ""
    config.data.height, config.data.width = 240, 320
    config.data.num_classes = NUM_CLASSES
    config.model.tasks = (("semseg", NUM_CLASSES), ("depth", 1))
    return config
