"""CPU quickstart: DeepLabv3+ (ResNet-18, output stride 16) on small synthetic driving scenes.

The model family, losses and metrics of configs/segdepth/deeplabv3plus.py, sized to train in about
ten minutes on a 2-core CPU (`bash launch/quickstart.sh`): 96x192 scenes, a slimmer ASPP (128
channels) and decoder (64 channels, 32-channel skip), Adam 2e-3 with warm-up and poly decay. The
synthetic scenes are unlimited, so only flips are used as augmentation. Semseg / depth loss
weights 0.6 / 0.4 (the reports found the best `total` near 0.55 / 0.45).
"""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "segdepth", "deeplabv3plus.py"))
    config.model.encoder = "resnet18"
    config.model.aspp_channels = 128
    config.model.decoder_channels = 64
    config.model.skip_channels = 32
    config.data.height, config.data.width = 96, 192
    config.data.num_train, config.data.num_val = 20000, 200
    config.data.augment.scale_range = (1.0, 1.0)
    config.data.augment.color_jitter = 0.0
    config.data.num_threads = 1
    config.loss.semseg_weight, config.loss.depth_weight = 0.6, 0.4
    config.optimizer.lr = 2e-3
    config.schedule.name = "poly"
    config.schedule.warmup_steps = 50
    config.train.batch_size = 8
    config.train.num_steps = 800
    config.train.log_every = 25
    config.train.eval_every = 800
    config.train.checkpoint_every = 250
    config.eval.batch_size = 8
    return config
