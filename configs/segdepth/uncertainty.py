"""DeepLabv3+ semseg + depth with learnt uncertainty task weighting (Kendall, Gal & Cipolla, CVPR 2018).

configs/segdepth/deeplabv3plus.py with `loss.weighting = 'uncertainty'`: instead of the reports' fixed
w / 1 - w (seed 002 Tables 5-6, seed 003 l. 393) the total loss is
sum_t c_t exp(-s_t) L_t + s_t / 2 with learnable log-variances s_t (c_semseg = 1, c_depth = 1/2; see
jaxvision/losses.py). The s_t are trained by the optimizer with the model (TrainState.params['loss'],
initialised at 0) and saved in the checkpoints; `train/precision_semseg` and `train/precision_depth`
(exp(-s_t)) are logged. semseg_weight / depth_weight are not used.
"""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "deeplabv3plus.py"))
    config.loss.weighting = "uncertainty"
    return config
