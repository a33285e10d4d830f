"""CERBERUS rn101_bifpn (Table 3.2: resnet101 backbone, BiFPN neck) on BDD100K with the thesis recipe of mbv2_bifpn.py.

    jaxvision train --config configs/adas/rn101_bifpn.py --workdir runs/cerberus_rn101_bifpn --config.data.root=/data/bdd100k
"""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "mbv2_bifpn.py"))
    config.model.update(backbone="resnet101", neck="bifpn", neck_channels=64, head_channels=64)  # = cerberus_rn101_bifpn
    return config
