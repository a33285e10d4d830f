"""DeepLabv3+ semseg + depth on miniscapes, the reports' Cityscapes-derived set (seeds 002/003).

The reports give only its location (`--dataset_root ${TMPDIR}/miniscapes`, seed 003 line 82) and the
256x256 training crop (seed 002 line 362), not its files, so it is read with the Cityscapes layout
(jaxvision/data/cityscapes.py) and resized to 256x512. Set the dataset folder:
    jaxvision train --config configs/segdepth/miniscapes.py --config.data.root=$TMPDIR/miniscapes ...
"""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "cityscapes.py"))
    config.data.name = "miniscapes"
    return config
