"""CERBERUS MobileNetV2-BiFPN on the built-in synthetic driving scenes, at the thesis' 640 x 320 and recipe.

Synthetic scenes have 3 object classes (person, car, truck), 2 lane classes (solid, dashed) and the tags weather
(4), scene type (3, from the number of lanes) and time of day (3); see jaxvision/data/synthetic.py.

    jaxvision train --config configs/adas/synthetic.py --workdir runs/cerberus_synthetic
"""

import os

from jaxvision.config import load_config_file
from jaxvision.data import synthetic


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "mbv2_bifpn.py"))
    tags = (("weather", len(synthetic.WEATHERS)), ("scene", len(synthetic.SCENE_TYPES)),
            ("time_of_day", len(synthetic.TIMES_OF_DAY)))
    config.model.update(num_classes=len(synthetic.DETECTION_CLASSES), num_lane_classes=len(synthetic.LANE_CLASSES),
                        tags=tags)
    config.data.name = "synthetic_scenes"
    config.data.adas.update(num_classes=len(synthetic.DETECTION_CLASSES), class_names=synthetic.DETECTION_CLASSES,
                            num_lane_classes=len(synthetic.LANE_CLASSES), tags=tuple(n for n, _ in tags),
                            tag_names=(synthetic.WEATHERS, synthetic.SCENE_TYPES, synthetic.TIMES_OF_DAY),
                            max_objects=64, max_lane_points=512,
                            max_boxes=64, max_lanes=8, lane_points=16)
    # Eq. 3.7 sums the offsets of a lane's ~40 keypoints: at weight 1 it outweighs every other term 10x here.
    config.loss.weights.lane_offsets = 0.1
    config.eval.lane_top_k = 256
    return config
