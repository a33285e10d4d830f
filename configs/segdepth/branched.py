"""Branched DeepLabv3+ for semseg + depth: shared encoder, one ASPP + skip decoder + head per task.

Reproduces report 002 Table 10 / Table 11 row P2_115c1 (branched, 32.14 M parameters; ours 32,142,356)
and the model of report 003 Problem 3 (Table 2, 22,034,612 parameters with ResNet-18; ours 22,034,196,
see tests/test_multitask_models.py for the 416-parameter difference). Defaults are report 002's P2
settings: ResNet-34 with the last stage dilated (output stride 16), ASPP rates (3, 6, 9), 48-channel
skip, 256-channel ASPP / decoder, Adam 1e-4, batch 8, semseg / depth loss weights 0.55 / 0.45 (P1.1c).
The reports start from ImageNet weights: convert torchvision's resnet34 with
`jaxvision convert-weights --from torchvision --model resnet34 --in resnet34.pth --out DIR` and pass
--config.model.encoder_weights=DIR. For report 003's variant: --config.model.encoder=resnet18
--config.loss.semseg_weight=0.5 --config.loss.depth_weight=0.5.
"""

import os

from jaxvision.config import load_config_file


def get_config():
    config = load_config_file(os.path.join(os.path.dirname(__file__), "deeplabv3plus.py"))
    config.model.name = "deeplabv3plus_branched"
    config.model.encoder = "resnet34"
    config.model.aspp_rates = (3, 6, 9)
    config.loss.semseg_weight, config.loss.depth_weight = 0.55, 0.45
    return config
