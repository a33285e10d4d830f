"""CPU quickstart: DeepLabv3+ (ResNet-18, output stride 16) on small synthetic driving scenes.

The same model family and losses as configs/segdepth/deeplabv3plus.py, sized to train to a useful
accuracy in about ten minutes on a 2-core CPU (`bash launch/quickstart.sh`).
"""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "segdepth", "deeplabv3plus.py"))
    config.model.encoder = "resnet18"
    config.data.height, config.data.width = 96, 192
    config.data.num_train, config.data.num_val = 20000, 200
    config.optimizer.lr = 1e-3
    config.schedule.name = "poly"
    config.schedule.warmup_steps = 100
    config.train.batch_size = 8
    config.train.num_steps = 1500
    config.train.log_every = 25
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.eval.batch_size = 16
    return config
