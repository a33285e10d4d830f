"""CERBERUS rn34_simple (Table 3.2: resnet34 backbone, Simple neck) on BDD100K with the thesis recipe of mbv2_bifpn.py.

    jaxvision train --config configs/adas/rn34_simple.py --workdir runs/cerberus_rn34_simple --config.data.root=/data/bdd100k
"""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "mbv2_bifpn.py"))
    config.model.update(backbone="resnet34", neck="simple", neck_channels=256, head_channels=256)  # = cerberus_rn34_simple
    return config
