"""Driver-monitoring face model, large size (Table 2.6 / 2.8); everything else as configs/dms/small.py."""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "small.py"))
    config.model.size = "large"
    return config
